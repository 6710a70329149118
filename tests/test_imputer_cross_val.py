"""SpatialImputer.cross_validate: k-fold cross-validation of imputation over the shared genes."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.model._imputer_cross_val import cross_validate_genes, gene_folds

pytestmark = pytest.mark.filterwarnings("ignore::deltavae.train.NotConvergedWarning")
TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
COLUMNS = ["pcc", "ssim", "rmse", "jsd", "fold"]


@pytest.fixture(scope="module")
def pair():
    """Cells of 3 clusters split into a reference and single-cell spots; ``marker`` is high in
    the first cluster only (a pattern the reference explains), ``noise`` is unrelated to it."""
    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=24, n_clusters=3, seed=0)
    rng = np.random.default_rng(0)
    x = np.asarray(data.X.toarray(), dtype=np.float32)
    first = (data.obs["cluster"] == data.obs["cluster"].cat.categories[0]).to_numpy()
    x[:, 0] = rng.poisson(np.where(first, 30.0, 0.5))
    x[:, 1] = rng.poisson(5.0, size=len(x))
    genes = ["marker", "noise", *data.var_names[2:]]
    data = ad.AnnData(x, obs=data.obs[["cluster"]].copy(), var=pd.DataFrame(index=genes))
    ref, spots = data[:60].copy(), data[60:].copy()
    spots.obs = pd.DataFrame(index=spots.obs_names)  # spots carry no labels
    return spots, ref


def cross_validate(spots, ref, **kwargs):
    kwargs = {"labels_key": "cluster", "n_folds": 2, "max_epochs": 3, **kwargs}
    return dv.model.SpatialImputer.cross_validate(spots, ref, train_kwargs=TRAIN, **kwargs)


@pytest.fixture(scope="module")
def scores(pair):
    return cross_validate(*pair)


def test_every_shared_gene_scored_once_with_its_fold(pair, scores):
    spots, ref = pair
    shared = [g for g in spots.var_names if g in ref.var_names]
    assert list(scores.columns) == COLUMNS
    assert list(scores.index) == shared  # once each, in the spots' order
    assert scores.shape == (24, 5)
    assert sorted(scores["fold"].unique()) == [0, 1]
    assert scores["fold"].value_counts().tolist() == [12, 12]
    assert folds_of(scores) == gene_folds(shared, 2, 0)  # the folds KFold gives the seed
    assert scores[COLUMNS[:4]].notna().all().all()


def folds_of(scores):
    return [list(scores.index[scores["fold"] == f]) for f in sorted(scores["fold"].unique())]


def test_a_pattern_the_reference_explains_scores_above_noise(scores):
    marker, noise = scores.loc["marker"], scores.loc["noise"]
    assert marker["pcc"] > 0.3 > noise["pcc"]
    assert marker["ssim"] > noise["ssim"]
    assert marker["rmse"] < noise["rmse"]


def test_a_seed_repeats_the_table_and_another_changes_the_folds(pair, scores):
    pd.testing.assert_frame_equal(cross_validate(*pair), scores)
    shared = list(scores.index)
    assert gene_folds(shared, 2, 1) != gene_folds(shared, 2, 0)


def test_the_users_seed_and_random_streams_are_left_as_they_were(pair):
    """Each fold sets scvi.settings.seed; that setting, the generators it reseeds and the
    environment it writes were left changed for the rest of the user's session."""
    import os
    import random

    import scvi
    import torch

    scvi.settings.seed = 7
    os.environ.pop("PL_GLOBAL_SEED", None)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002
    cross_validate(*pair, max_epochs=1, genes=["marker", "noise", *pair[0].var_names[2:6]])
    assert scvi.settings.seed == 7 and "PL_GLOBAL_SEED" not in os.environ
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1][1])  # noqa: NPY002
    assert random.getstate() == states[2]


def test_genes_chooses_the_genes_hidden_and_unscorable_ones_are_warned(pair):
    spots, ref = pair
    ref = ref.copy()
    ref.X[:, ref.var_names.get_loc("gene_5")] = 0  # no reference counts: nothing to impute
    with pytest.warns(UserWarning, match=r"1 of the 3 genes .*'gene_5'.* never counts"):
        table = cross_validate(spots, ref, genes=["noise", "marker", "gene_5"])
    assert list(table.index) == ["noise", "marker"]
    assert list(table.columns) == COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_folds": 1}, ValueError, "n_folds must be a whole number of 2 or more; got 1"),
        ({"n_folds": 2.5}, ValueError, "n_folds must be a whole number"),
        ({"n_folds": 24}, ValueError, "n_folds=24 is more than the 23 genes"),
        ({"genes": ["marker", "noise"], "n_folds": 3}, ValueError, "more than the 2 genes"),
        ({"genes": ["Marker"]}, KeyError, "'Marker' is not among the spots' .*'marker'"),
        ({"genes": ["gene_2"]}, KeyError, "'gene_2' is not among the reference's genes"),
        ({"genes": ["marker", "marker"]}, ValueError, r"\['marker'\] more than once"),
        ({"genes": []}, ValueError, "genes is empty"),
        # One gene was told "pass n_folds=1 or fewer", which n_folds refuses (2 or more).
        ({"genes": ["gene_3"]}, ValueError, r"the 1 genes .*; name 2 or more shared genes in"),
        # Positions and masks were read as names: "gene np.True_ is not among the spots' genes".
        ({"genes": [0, 1]}, TypeError, "genes takes gene names; got int values such as 0"),
        ({"genes": np.arange(24) < 3}, TypeError, "got bool values such as .*var_names\\["),
        ({"genes": 5}, TypeError, "genes takes the names of shared genes .*got 5"),
        # Each fold's from_reference refused its 8 visible genes as "spots (8 genes ...)".
        ({"genes": "subset"}, ValueError, "a fold of 3 hidden genes leaves 8 of the 11 shared"),
        (
            {"spots": "spots.h5ad"},
            TypeError,
            "spots must be an AnnData .*got the path .spots.h5ad.. Read it first",
        ),
        ({"duplicate": True}, ValueError, "gene_3"),
    ],
)
def test_bad_folds_and_genes_are_refused_before_training(pair, kwargs, error, match):
    spots, ref = pair
    ref = ref[:, ref.var_names != "gene_2"]  # gene_2 in the spots only: not shared
    spots = kwargs.pop("spots", spots)
    if isinstance(kwargs.get("genes"), str) and kwargs["genes"] == "subset":  # 11 shared, 5 folds
        spots, kwargs = spots[:, :12].copy(), {"n_folds": 5}
    if kwargs.pop("duplicate", False):
        spots = spots.copy()
        spots.var_names = [*spots.var_names[:-1], "gene_3"]
    with pytest.raises(error, match=match):
        cross_validate(spots, ref, max_epochs=-1, **kwargs)  # -1 would fail in training


def test_spot_genes_the_reference_lacks_are_neither_hidden_nor_scored(pair, scores):
    spots, ref = pair
    extra = ad.AnnData(
        np.random.default_rng(1).poisson(3.0, (spots.n_obs, 1)).astype(np.float32),
        obs=pd.DataFrame(index=spots.obs_names),
        var=pd.DataFrame(index=["only_in_spots"]),
    )
    spots = ad.concat([spots, extra], axis=1)
    # Said once of the data given (each fold's model said it of its genes: 'only_in_spots').
    with pytest.warns(UserWarning, match="share only 24 genes.* holds only these 24 genes"):
        table = cross_validate(spots, ref)
    # The same folds of the same shared genes as without the extra gene.
    assert list(table.index) == list(scores.index)
    assert folds_of(table) == folds_of(scores)


def test_the_reference_layer_tells_which_genes_it_counts(pair, scores):
    """cross_validate passed reference_layer= on to the models, yet judged which hidden
    genes the reference counts from reference.X: with the counts in a layer and X scaled
    (sc.pp.scale, column sums about 0), genes the reference counts were left unscored as
    genes it 'never counts' (7 of 20 on the MERFISH hypothalamus pair)."""
    spots, ref = pair
    ref = ref.copy()
    ref.layers["counts"] = ref.X.copy()
    ref.X = ref.X - ref.X.mean(axis=0)  # centred, as sc.pp.scale leaves X: sums about 0
    table = cross_validate(spots, ref, reference_layer="counts")
    pd.testing.assert_frame_equal(table, scores)  # the layer's counts, as in X before


def test_spots_sharing_no_gene_are_told_why_not_n_folds(pair):
    """Spots naming their genes in another case shared none with the reference, and were told
    "n_folds=2 is more than the 0 genes to cross-validate ... pass n_folds=0 or fewer"."""
    spots, ref = pair
    spots = spots.copy()
    spots.var_names = spots.var_names.str.upper()
    said = r"share 0 genes; cross-validation hides shared genes, at least 2\. Ignoring case"
    with pytest.raises(ValueError, match=said):
        cross_validate(spots, ref, max_epochs=-1)  # -1 would fail in training


def test_the_cells_passed_as_spots_are_told_in_cross_validate_s_words(pair):
    """The labelled cells passed first were told the call the right way round as
    SpatialImputer.from_reference(...), a call the user had not made."""
    spots, ref = pair
    said = r"were the single cells passed as spots\? .*SpatialImputer\.cross_validate\(spots, "
    with pytest.raises(KeyError, match=said):
        cross_validate(ref, spots, max_epochs=-1)  # -1 would fail in training


def test_the_genes_shared_are_said_once_of_the_data_given_not_of_each_fold():
    """Each fold's model was built on the spots less the hidden genes, and warned of those:
    the hippocampus Visium pair (124 shared genes, 5 folds) was told "share only 99 genes
    ... Use the same gene identifiers" of every fold."""
    data = dv.datasets.synthetic_counts(n_cells=100, n_genes=130, n_clusters=3, seed=0)
    ref, spots = data[:50, :110].copy(), data[50:].copy()  # 110 shared, 20 spot genes besides
    spots.obs = pd.DataFrame(index=spots.obs_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 88 shared genes in each fold: said before
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        cross_validate(spots, ref, n_folds=5, max_epochs=2)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        cross_validate(spots[:, 40:].copy(), ref, n_folds=5, max_epochs=2)  # 70 shared
    shared = [str(w.message) for w in said if "share only" in str(w.message)]
    assert len(shared) == 1 and shared[0].startswith("spots and reference share only 70 genes")


def test_a_genes_score_does_not_depend_on_the_other_genes_chosen(pair):
    """With genes= a few genes, each spot was divided by its counts of the other genes chosen
    alone, not of every visible shared gene: on hippocampus Visium, Mbp's PCC was 0.57
    cross-validated beside 4 genes, 0.89 divided by the other 123 shared genes. The fold
    hiding 'marker' alone trains the same model whichever genes are chosen beside it."""
    spots, ref = pair
    one = cross_validate(spots, ref, genes=["marker", "noise", "gene_3"], n_folds=3)
    other = cross_validate(spots, ref, genes=["marker", "gene_7", "gene_9"], n_folds=3)
    columns = ["pcc", "ssim", "rmse", "jsd"]
    pd.testing.assert_series_equal(one.loc["marker", columns], other.loc["marker", columns])


def test_spot_genes_no_spot_counts_are_said_once_as_unscored_not_per_fold(pair):
    """Each fold's model said of the spot genes no spot counts "k of the spots' n genes are 0
    in every spot ... impute() gives them only when named" (the cerebellum Slide-seq pair: 5
    notes, of 6 to 9 of 302 genes), beside cross_validate's own note that they are unscored."""
    spots, ref = pair
    spots = spots.copy()
    spots.X[:, spots.var_names.get_loc("gene_5")] = 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        table = cross_validate(spots, ref, n_folds=3)
    said = [str(w.message) for w in said]
    assert not [m for m in said if "are 0 in every spot" in m], said
    assert [m for m in said if "1 of the 24 genes cross-validated (e.g. ['gene_5'])" in m]
    assert "gene_5" not in table.index


def test_spot_genes_the_reference_never_counts_are_in_neither_total(pair):
    """The measured values were divided by each spot's counts over the visible shared genes
    including those the reference never counts, the prediction by its total without them
    (no method predicts them: 0). A perfect prediction of the genes the reference counts
    scored PCC 0.989 to 0.998 here, not 1 (the hypothalamus MERFISH pair: up to 2.3% of a
    spot)."""
    spots, ref = pair
    spots, ref = spots.copy(), ref.copy()
    silent = spots.var_names.get_loc("gene_5")
    spots.X[:, silent] = (
        np.random.default_rng(2).poisson(60.0, spots.n_obs) * np.arange(spots.n_obs) % 97
    )  # many counts, varying from spot to spot
    ref.X[:, silent] = 0  # never counted by the reference

    def perfect(visible, reference, hidden):  # the counts, 0 where the reference has none
        truth = pd.DataFrame(spots.X, index=spots.obs_names, columns=spots.var_names)
        return truth.assign(gene_5=0.0)

    genes = ["marker", "noise", "gene_3", "gene_7"]
    table = cross_validate_genes(spots, ref, perfect, genes, n_folds=2, shared=spots.var_names)
    assert list(table.index) == genes
    np.testing.assert_allclose(table["pcc"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(table["rmse"], 0.0, atol=1e-4)


def test_a_score_is_the_same_with_or_without_spot_genes_the_reference_never_counts(pair):
    """SpatialImputer leaves such a gene out of its fit (from_reference), so it trains the
    same model whether the spots hold it or not; the scores differed only by its counts in
    the measured spots' totals."""
    spots, ref = pair
    spots, ref = spots.copy(), ref.copy()
    silent = spots.var_names.get_loc("gene_5")
    spots.X[:, silent] = np.arange(spots.n_obs) % 7 * 20.0  # counted by the spots alone
    ref.X[:, silent] = 0
    genes = ["marker", "noise", "gene_3"]
    with_it = cross_validate(spots, ref, genes=genes, n_folds=3)
    without = cross_validate(
        spots[:, spots.var_names != "gene_5"].copy(), ref, genes=genes, n_folds=3
    )
    pd.testing.assert_frame_equal(with_it, without)


def test_folds_leaving_fewer_genes_train_with_min_shared_genes_lowered(pair):
    """The refusal of folds leaving 9 of 12 genes visible names the fix: min_shared_genes=9."""
    spots, ref = pair
    table = cross_validate(spots[:, :12].copy(), ref, n_folds=5, min_shared_genes=9)
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]


def test_a_set_of_genes_is_cross_validated_in_the_spots_order(pair):
    """A set's own order (its strings' hashes, new each session) made the folds: the same
    seed gave other folds, and another table, from one session to the next."""
    spots, ref = pair
    genes = ["marker", "noise", "gene_3", "gene_4", "gene_6", "gene_7", "gene_9", "gene_11"]
    table = cross_validate(spots, ref, genes=set(genes))
    assert list(table.index) == genes
    assert folds_of(table) == gene_folds(genes, 2, 0)


def test_spots_without_counts_in_a_folds_visible_genes_are_left_out_of_its_scores(pair):
    """Such a spot's hidden counts were divided by 1, not by a total, and scored: an outlier
    (counts against fractions) that decided the PCC of a method guessing there (kNN, Tangram)."""
    spots, ref = pair
    spots = spots.copy()
    spots.X[:2] = 0
    spots.X[:2, spots.var_names.get_loc("marker")] = 7  # counts in one gene only
    relative = spots.X / np.maximum(spots.X.sum(axis=1, keepdims=True), 1)

    def guessing(visible, reference, hidden):  # right, but a mean guess where no evidence
        pred = pd.DataFrame(relative.copy(), index=spots.obs_names, columns=spots.var_names)
        pred[np.asarray(visible.X.sum(axis=1)).ravel() == 0] = relative[2:].mean(axis=0)
        return pred

    genes = ["marker", "noise", "gene_3", "gene_7"]
    table = cross_validate_genes(spots, ref, guessing, genes, n_folds=2)
    np.testing.assert_allclose(table["pcc"], 1.0, rtol=1e-5)
    left_out = set()
    cross_validate_genes(spots, ref, guessing, genes, n_folds=2, left_out=left_out)
    assert left_out == set(spots.obs_names[:2])  # in the fold hiding 'marker'


def test_spots_without_counts_are_said_once_not_in_every_fold(pair):
    """Each fold's model said "3 spots in spots.X are all zeros" and "3 of 60 spots have no
    counts in the 12 genes the model reads ... model.adata.var_names", and the scores "3 of the
    60 spots have no prediction": 6 notes in 2 folds, of the folds' models."""
    spots, ref = pair
    spots = spots.copy()
    spots.X[:3] = 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        table = cross_validate(spots, ref)
    said = [str(w.message) for w in said]
    assert [m for m in said if "spots" in m] == [m for m in said if "3 of the 60 spots" in m]
    assert len([m for m in said if "3 of the 60 spots" in m]) == 1, said
    assert len(table) == 24


def test_genes_the_reference_counts_in_few_cells_are_said_with_their_scores(pair, tmp_path):
    """cross_validate scored genes its reference counts in a handful of cells without a word
    (impute's note on them is silenced in the folds), so their low scores read as the model's:
    gene_5 counted in 3 of the 60 reference cells, gene_7 in 4, were two rows among 24. Now one
    note per call names them, their median PCC against the others' and what to do."""
    spots, ref = pair
    ref = ref.copy()
    for gene, n in (("gene_5", 3), ("gene_7", 4)):
        column = ref.var_names.get_loc(gene)
        counted = np.flatnonzero(ref.X[:, column] > 0)
        ref.X[counted[n:], column] = 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        table = cross_validate(spots, ref, max_epochs=1)
    notes = [str(w.message) for w in said if "genes scored are counted" in str(w.message)]
    assert len(notes) == 1, notes  # once per call, not per fold
    few = table.loc[["gene_5", "gene_7"], "pcc"].median()
    others = table.drop(index=["gene_5", "gene_7"])["pcc"].median()
    assert notes[0].startswith(
        "2 of the 24 genes scored are counted in fewer than 5 of the reference's 60 cells "
        f"(['gene_5', 'gene_7']; 'gene_5' in 3): their median PCC is {few:.2f}, against "
        f"{others:.2f} for the 22 others."
    ), notes[0]
    assert "sc.pp.filter_genes(reference, min_cells=5)" in notes[0]
    assert list(table.columns) == COLUMNS and len(table) == 24  # the table as before
    ref.write_h5ad(tmp_path / "r.h5ad")  # read from disk in chunks: counted alike
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        on_disk = dv.read_lazy(tmp_path / "r.h5ad")
        cross_validate(spots, on_disk, max_epochs=1, genes=["gene_5", "gene_7", "gene_9"])
    notes = [str(w.message) for w in said if "genes scored are counted" in str(w.message)]
    assert len(notes) == 1 and notes[0].startswith("2 of the 3 genes scored"), notes
    with warnings.catch_warnings(record=True) as said:  # a reference counting each gene
        warnings.simplefilter("always")
        cross_validate(spots, pair[1], max_epochs=1, genes=["marker", "gene_5", "gene_7"])
    assert not [w for w in said if "genes scored are counted" in str(w.message)]
