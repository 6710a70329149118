"""Spatial deconvolution on the inputs a new user brings: integer labels, repeated gene or
spot names, empty spots and cells, negative predictions, a reloaded model with a gene panel."""

import warnings

import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.metrics import deconvolution_scores, imputation_scores, jsd

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def split():
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, cells_per_spot=(2, 6), seed=3)


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("n_markers", [5, None])
def test_integer_labels_work_like_names(split, n_markers):
    """Integer cluster ids crashed inside scanpy (IndexError) or signatures ('0' not in list)."""
    spots, ref = split
    ref = ref.copy()
    ref.obs["cluster_id"] = pd.Categorical(ref.obs["cluster"]).codes  # int64
    before = ref.obs["cluster_id"].copy()
    model = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster_id", n_markers=n_markers
    )
    assert list(model.cell_types_) == ["0", "1", "2"]
    pd.testing.assert_series_equal(ref.obs["cluster_id"], before)  # the user's column is kept
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster_id")
    named = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    np.testing.assert_allclose(sig.to_numpy(), named.to_numpy())


@pytest.mark.parametrize("which", ["spots", "reference"])
def test_duplicated_gene_names_are_refused_by_name(split, which):
    spots, ref = (a.copy() for a in split)
    target = spots if which == "spots" else ref
    names = list(target.var_names)
    names[1] = names[0]
    target.var_names = names
    with pytest.raises(ValueError, match=rf"{which} has duplicated gene names.*make_unique"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")


def test_archetypes_refuses_duplicated_gene_names():
    spots = dv.datasets.convex_mixtures(n_spots=40, n_archetypes=3)
    names = list(spots.var_names)
    names[2] = names[0]
    spots.var_names = names
    with pytest.raises(ValueError, match=r"duplicated gene names.*var_names_make_unique"):
        dv.model.Archetypes.setup_anndata(spots)


def test_empty_reference_cells_are_named_once_in_the_package_words(split):
    """scanpy's 'Some cells have zero counts' leaked from inside the call, unexplained."""
    spots, ref = split
    ref = ref.copy()
    X = np.asarray(ref.X.todense()) if hasattr(ref.X, "todense") else ref.X.copy()
    X[:2] = 0
    ref.X = X
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    messages = [str(w.message) for w in caught]
    assert not any("Some cells have zero counts" in m for m in messages)
    assert sum("2 reference cells have no counts in reference.X" in m for m in messages) == 1


# ----------------------------------------------------------------------------- results
def test_empty_spots_are_warned_when_proportions_are_read(split):
    spots, ref = split
    spots = spots.copy()
    X = np.asarray(spots.X.todense()) if hasattr(spots.X, "todense") else spots.X.copy()
    X[:3] = 0
    spots.X = X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
        model.train(max_epochs=3, **TRAIN)
    with pytest.warns(UserWarning, match=r"^3 of 60 spots have no counts in the \d+ genes the"):
        props = model.get_proportions()
    np.testing.assert_allclose(props.iloc[0], props.iloc[1])  # the prior, not an estimate
    with pytest.warns(UserWarning, match="their proportions are the prior's"):
        model.write_to_adata(spots)


def test_load_with_only_the_genes_the_model_reads(split, tmp_path):
    """The live model maps a panel of its used genes; loading it with them was refused."""
    spots, ref = split
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", n_markers=3
    )
    model.train(max_epochs=3, **TRAIN)
    model.save(tmp_path / "m")
    panel = spots[:, model.used_genes()[::-1]].copy()
    assert panel.n_vars < spots.n_vars
    with pytest.warns(UserWarning, match=r"adata lacks \d+ of the model's \d+ genes, none of"):
        loaded = dv.model.NMFDeconv.load(tmp_path / "m", adata=panel)
    assert panel.n_vars == len(model.used_genes())  # the user's AnnData is unchanged
    pd.testing.assert_frame_equal(loaded.get_proportions(), model.get_proportions())
    loaded.write_to_adata(panel)
    assert "proportions" in panel.obsm
    with pytest.raises(ValueError, match="genes differ"):
        dv.model.NMFDeconv.load(tmp_path / "m", adata=panel[:, 1:].copy())


# ----------------------------------------------------------------------------- metrics
def test_jsd_clips_negative_values_with_a_warning():
    true = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    pred = np.array([[-0.1, 1.0], [1.0, 3.0], [2.0, 2.0]])
    with pytest.warns(UserWarning, match=r"pred holds 1 negative values \(min -0.1\)"):
        scores = imputation_scores(true, pred)
    assert np.isfinite(scores["jsd"]).all() and (scores["jsd"].between(0, 1)).all()
    assert scores.loc[0, "pcc"] < 1  # the other scores use the values as given
    with pytest.warns(UserWarning, match="negative proportions"):
        values = jsd(true, pred)
    assert values.between(0, 1).all()
    with pytest.warns(UserWarning, match="negative proportions") as record:
        table = deconvolution_scores(true, pred)
    assert len(record) == 1 and table["jsd"].between(0, 1).all()


def test_repeated_spot_names_in_another_order_are_refused():
    idx = ["AAAC-1", "AAAG-1", "AAAC-1", "AAAG-1"]
    true = pd.DataFrame([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.7, 0.3]], index=idx)
    true.columns = ["A", "B"]
    shuffled = true.iloc[[1, 0, 2, 3]]
    for scores in (deconvolution_scores, imputation_scores):
        with pytest.raises(ValueError, match="repeats spot names .* cannot be matched by name"):
            scores(true, shuffled)
    with pytest.warns(UserWarning, match="matched by position") as record:
        table = deconvolution_scores(true, true)
    assert len(record) == 1 and (table["rmse"] == 0).all()
