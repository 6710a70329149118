"""Pseudo-spots, deconvolution metrics and NMFDeconv: exact truth, recovery, simplex, errors."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from _torch_elbo import assert_torch_elbo_is_pyros
from scipy import sparse

import deltavae as dv
from deltavae.metrics import deconvolution_scores, matched_profile_correlation

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def cells():
    """600 labelled cells of 4 types with strong markers: a reference with known types."""
    return dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=1, seed=1
    )


@pytest.fixture(scope="module")
def split(cells):
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=150, cells_per_spot=(2, 8), seed=3)


@pytest.fixture(scope="module")
def fitted(split):
    spots, ref = split
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=150, **TRAIN)
    return model, spots


# ----------------------------------------------------------------------------- pseudo-spots
def test_pseudo_spot_truth_is_exact_and_cells_disjoint(cells, split):
    spots, ref = split
    info = spots.uns["pseudo_spots"]
    pool = cells[info["pool_cells"]]
    membership = info["membership"]
    # The counts are exactly the sum of the member cells, and the truth their type fractions.
    np.testing.assert_array_equal((membership @ pool.X).toarray(), spots.X.toarray())
    labels = pd.get_dummies(pool.obs["cluster"]).to_numpy(dtype=float)
    type_counts = membership @ labels
    np.testing.assert_array_equal(type_counts, spots.obsm["cell_counts"].to_numpy())
    truth = spots.obsm["proportions_true"].to_numpy()
    np.testing.assert_allclose(truth, type_counts / type_counts.sum(1, keepdims=True))
    np.testing.assert_allclose(truth.sum(1), 1.0)
    n_cells = np.asarray(membership.sum(1)).ravel()
    assert n_cells.min() >= 2 and n_cells.max() <= 8
    assert (membership.toarray() <= 1).all()  # no cell twice in a spot
    assert set(ref.obs_names).isdisjoint(info["pool_cells"])
    assert ref.n_obs + len(info["pool_cells"]) == cells.n_obs


def test_pseudo_spots_seeded_grid_and_depth(cells):
    a, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=49, seed=5, grid=True, depth=300)
    b, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=49, seed=5, grid=True, depth=300)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert a.obsm["spatial"].shape == (49, 2)
    assert np.asarray(a.X.sum(1)).max() <= 300
    c, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=49, seed=6, grid=True)
    assert not np.array_equal(a.obsm["cell_counts"].to_numpy(), c.obsm["cell_counts"].to_numpy())


def test_pseudo_spots_of_integer_labels_name_types_as_the_models_do(cells, tmp_path):
    """Integer cluster ids as labels: the truth's columns are the names NMFDeconv gives the
    types (strings), and the spots can be written (h5ad refuses integer column names)."""
    numbered = cells.copy()
    numbered.obs["code"] = numbered.obs["cluster"].cat.codes.astype(int)
    spots, ref = dv.datasets.pseudo_spots(numbered, "code", n_spots=40, seed=0)
    assert list(spots.obsm["proportions_true"].columns) == ["0", "1", "2", "3"]
    assert list(spots.obsm["cell_counts"].columns) == ["0", "1", "2", "3"]
    spots.write_h5ad(tmp_path / "spots.h5ad")
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="code")
    model.train(max_epochs=2, **TRAIN)
    truth = spots.obsm["proportions_true"][model.get_proportions().columns]
    assert truth.shape == (40, 4)


def test_pseudo_spots_bad_labels(cells):
    with pytest.raises(KeyError, match="labels_key='nope'"):
        dv.datasets.pseudo_spots(cells, "nope")
    single = cells.copy()
    single.obs["one"] = "T"
    with pytest.raises(ValueError, match="at least 2"):
        dv.datasets.pseudo_spots(single, "one")


def test_convex_mixtures_truth():
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=40, n_archetypes=3, n_markers=5, seed=2)
    np.testing.assert_allclose(mix.obsm["weights_true"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(mix.varm["profiles_true"].sum(0), 1.0, rtol=1e-5)
    assert (mix.X.data == np.round(mix.X.data)).all()


# ----------------------------------------------------------------------------- metrics
def test_deconvolution_metrics_known_values():
    true = pd.DataFrame([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], columns=["a", "b"])
    scores = deconvolution_scores(true, true[["b", "a"]])  # columns aligned by name
    np.testing.assert_allclose(scores["pcc"], 1.0)
    np.testing.assert_allclose(scores["ssim"], 1.0)
    np.testing.assert_allclose(scores["rmse"], 0.0)
    np.testing.assert_allclose(scores["jsd"], 0.0, atol=1e-7)
    np.testing.assert_allclose(scores["aupr"], 1.0)
    # A constant prediction has no correlation: NaN, which .median() skips, so it is warned.
    with pytest.warns(UserWarning, match=r"constant across spots in 2 of the 2 cell types"):
        worse = deconvolution_scores(true, np.full((3, 2), 0.5))
    np.testing.assert_allclose(worse["rmse"], np.sqrt(1 / 6))
    assert np.isnan(worse["pcc"]).all()
    assert dv.metrics.presence_aupr(true, [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]) < 1.0
    # per_type="False" returned a Series of one AUPR per type, as True would.
    assert dv.metrics.presence_aupr(true, true, per_type=np.bool_(False)) == 1.0
    with pytest.raises(ValueError, match=r"^per_type must be True or False, got 'False'\.$"):
        dv.metrics.presence_aupr(true, true, per_type="False")
    with pytest.raises(KeyError, match="lacks the cell types"):
        deconvolution_scores(true, pd.DataFrame(np.ones((3, 2)), columns=["a", "c"]))


def test_matched_profile_correlation_hungarian():
    rng = np.random.default_rng(0)
    true = rng.random((3, 30))
    found = true[[2, 0, 1]] + 0.01 * rng.random((3, 30))
    table = matched_profile_correlation(true, found)
    assert table["matched"].tolist() == [1, 2, 0]
    assert table["correlation"].min() > 0.99
    short = matched_profile_correlation(true, found[:2])
    assert (short["matched"] == -1).sum() == 1 and short["correlation"].mean() < 0.7


# ----------------------------------------------------------------------------- NMFDeconv
def test_nmfdeconv_recovers_proportions_on_simplex(fitted, split):
    model, spots = fitted
    props = model.get_proportions()
    assert list(props.columns) == list(spots.obsm["proportions_true"].columns)
    assert (props.to_numpy() >= 0).all()
    np.testing.assert_allclose(props.sum(1), 1.0, atol=1e-6)
    scores = deconvolution_scores(spots.obsm["proportions_true"], props)
    assert scores["pcc"].min() > 0.9, scores
    # Seeds of this fit give a worst type's RMSE of 0.08-0.14; guessing equal shares, 0.28-0.30.
    assert scores["rmse"].max() < 0.15, scores
    assert scores["rmse"].mean() < 0.12, scores
    # Abundance counts cells: it tracks the true number of cells per spot.
    assert np.corrcoef(model.get_abundance(), spots.obs["n_cells"])[0, 1] > 0.8
    assert model.write_to_adata(spots) == ["obsm/proportions", "obs/cell_abundance"]
    assert spots.obsm["proportions"].equals(props)
    # The logged terms add up to the ELBO, as in the other models (kl_local was logged as 0,
    # leaving the prior's share out of every term).
    h = model.history
    terms = h["reconstruction_loss_train"].iloc[:, 0] + h["kl_local_train"].iloc[:, 0]
    np.testing.assert_allclose(terms.to_numpy(), h["elbo_train"].iloc[:, 0].to_numpy(), rtol=1e-3)


def test_new_spots_need_only_the_genes_the_model_reads(split):
    """A new slide's panel may lack genes the model never reads (it was refused)."""
    spots, ref = split
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", n_markers=5
    )
    model.train(max_epochs=5, **TRAIN)
    used = model.used_genes()
    assert len(used) < spots.n_vars
    expected = model.get_proportions(spots)
    panel = spots[:, used[::-1]].copy()  # the used genes only, in another order
    panel.var_names = panel.var_names.astype(str)
    pd.testing.assert_frame_equal(model.get_proportions(panel), expected)
    with pytest.raises(ValueError, match=r"lacks 1 of the \d+ genes the model reads .*used_genes"):
        model.get_proportions(spots[:, spots.var_names != used[0]].copy())
    # Every gene in another order: read by name, with no note that results follow the
    # training gene order (proportions have no genes; the note was noise).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reordered = model.get_proportions(spots[:, ::-1].copy())
    pd.testing.assert_frame_equal(reordered, expected)


def _named_as_the_model(adata, model):
    """The renaming the refusals of genes in another case advise, as they write it."""
    names = {g.upper(): g for g in model.adata.var_names}
    adata.var_names = [names.get(g.upper(), g) for g in adata.var_names]
    return adata


def test_spot_genes_lost_to_their_case_are_warned_though_many_are_shared():
    """Spots whose genes are half upper-cased ('GENE_7' against the reference's 'gene_7'),
    with 120 still matching exactly, lost the other 120 silently: from_reference warned only
    below 100 shared genes. It says how many are lost and the line that names them as the
    reference does, which gets them all back; NMFDeconv given signatures says it too, and
    spots whose genes all match exactly are not warned."""
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=240, n_clusters=3, seed=0)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    whole = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    odd = spots.copy()
    odd.var_names = [g.upper() if i % 2 else g for i, g in enumerate(spots.var_names)]
    lost = r"120 of the spots' 240 genes are reference genes only ignoring case \(e\.g\. 'GENE_1'"
    with pytest.warns(UserWarning, match=lost) as said:
        model = dv.model.NMFDeconv.from_reference(odd, reference=ref, labels_key="cluster")
    assert set(model.used_genes()) <= set(spots.var_names[::2])  # the upper-cased: gone
    line = str(said[0].message).split("as the reference does first: ")[1].split(" (or")[0]
    exec(line, {"reference": ref, "spots": odd})  # noqa: S102
    model = dv.model.NMFDeconv.from_reference(odd, reference=ref, labels_key="cluster")
    assert list(model.used_genes()) == list(whole.used_genes())
    signatures = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    odd.var_names = [g.upper() if i % 2 else g for i, g in enumerate(spots.var_names)]
    dv.model.NMFDeconv.setup_anndata(odd)
    with pytest.warns(UserWarning, match=r"120 of the spots' 240 genes are signatures genes"):
        dv.model.NMFDeconv(odd, signatures=signatures)


def test_the_imputer_s_case_warning_gives_the_line_that_renames_the_genes():
    """SpatialImputer.from_reference said of spot genes lost to their case "e.g.
    spots.var_names = ... spelt as reference.var_names", a placeholder where NMFDeconv's
    same warning gives the line; the imputer's line, run, gets them all back."""
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=60, n_clusters=3, seed=0)
    ref, spots = cells[:100].copy(), cells[100:, :40].copy()
    odd = spots.copy()
    odd.var_names = [g.upper() if i % 2 else g for i, g in enumerate(spots.var_names)]
    build = dv.model.SpatialImputer.from_reference
    lost = r"20 of the spots' genes are reference genes only ignoring case"
    with pytest.warns(UserWarning, match=lost) as said:
        build(odd, reference=ref, labels_key="cluster")
    line = str(said[0].message).split("before from_reference: ")[1].removesuffix(".")
    exec(line, {"reference": ref, "spots": odd})  # noqa: S102
    assert list(odd.var_names) == list(spots.var_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost to case any more
        model = build(odd, reference=ref, labels_key="cluster")
    assert list(model.adata.var_names) == list(spots.var_names)


def test_new_spots_with_the_genes_in_another_case_are_told_so(split, tmp_path):
    """A slide whose genes are named in another case ('GAPDH' against the model's 'Gapdh')
    lacked every gene the model reads, and the refusal said only that; it now says that they
    are there ignoring case and gives the line that names them as the model does, for
    NMFDeconv (genes it reads) and Archetypes (every model's gene check)."""
    spots, ref = split
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=2, **TRAIN)
    upper = spots.copy()
    upper.var_names = upper.var_names.str.upper()
    with pytest.raises(ValueError, match=r"Ignoring case, adata holds \d+ of them \(e\.g\. GENE_"):
        model.get_proportions(upper)
    pd.testing.assert_frame_equal(
        model.get_proportions(_named_as_the_model(upper, model)), model.get_proportions()
    )
    # Loading onto them: the line names the saved genes (no model.adata yet), and runs.
    model.save(tmp_path / "nmf")
    upper = spots.copy()
    upper.var_names = upper.var_names.str.upper()
    with pytest.raises(ValueError, match=r"Ignoring case, adata holds .*torch\.load\(") as err:
        dv.model.NMFDeconv.load(tmp_path / "nmf", upper)
    line = str(err.value).split("name them as the model does, ")[1].removesuffix(".")
    exec(line, {"torch": __import__("torch"), "adata": upper})  # noqa: S102
    loaded = dv.model.NMFDeconv.load(tmp_path / "nmf", upper)
    pd.testing.assert_frame_equal(loaded.get_proportions(), model.get_proportions())
    # A gene missing outright gets no such hint.
    with pytest.raises(ValueError, match=r"lacks 1 of") as missing:
        model.get_proportions(spots[:, spots.var_names != model.used_genes()[0]].copy())
    assert "Ignoring case" not in str(missing.value)

    mixtures = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mixtures)
    archetypes = dv.model.Archetypes(mixtures, n_archetypes=3, min_spots=1)
    archetypes.train(max_epochs=40, **TRAIN)  # each archetype some spot's largest weight
    upper = mixtures.copy()
    upper.var_names = upper.var_names.str.upper()
    with pytest.raises(ValueError, match=r"genes differ .* Ignoring case, adata holds 60 of"):
        archetypes.get_archetype_weights(upper)
    pd.testing.assert_frame_equal(
        archetypes.get_archetype_weights(_named_as_the_model(upper, archetypes)),
        archetypes.get_archetype_weights(),
    )


@pytest.mark.parametrize("inference", ["amortized", "per_spot"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "max_epochs must be a positive integer, got 0"),
        ({"lr": 0}, "lr must be a positive, finite number; got 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ],
)
def test_nmfdeconv_refuses_zero_for_a_training_argument(split, inference, kwargs, match):
    """0 is a value, not 'the default': it used to train 1,000 epochs (or at lr 0.02)."""
    spots, ref = split
    model = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", inference=inference
    )
    with pytest.raises(ValueError, match=match):
        model.train(**kwargs, **TRAIN)
    assert not model.is_trained_


def test_nmfdeconv_repeats_a_run_from_its_train_args(split):
    """train_args_ records n_epochs_kl_warmup (the shared loop's): passing the record back
    raised "got multiple values for keyword argument 'n_epochs_kl_warmup'"."""
    spots, ref = split

    def fit(**kwargs):
        scvi.settings.seed = 0
        model = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
        model.train(**kwargs)
        return model

    first = fit(max_epochs=2, **TRAIN)
    args = {key: value for key, value in first.train_args_.items() if key != "seed"}
    again = fit(**args)
    assert again.train_args_ == first.train_args_
    pd.testing.assert_frame_equal(again.get_proportions(), first.get_proportions())


def test_nmfdeconv_save_load_and_h5ad(fitted, tmp_path):
    model, spots = fitted
    model.save(tmp_path / "m", save_anndata=False)
    loaded = dv.model.NMFDeconv.load(tmp_path / "m", spots)
    pd.testing.assert_frame_equal(loaded.get_proportions(), model.get_proportions())
    assert loaded.train_args_ == model.train_args_ and model.train_args_["max_epochs"] > 0
    assert model.train_args_["lr"] > 0 and model.train_args_["batch_size"] > 0  # resolved
    before = loaded.module.encoder.head.weight.detach().clone()
    loaded.train(max_epochs=2, **TRAIN)  # a reloaded model keeps training
    assert not np.allclose(before.numpy(), loaded.module.encoder.head.weight.detach().numpy())
    model.write_to_adata(spots)  # this test does not rely on the one above having run
    spots.write_h5ad(tmp_path / "spots.h5ad")
    back = ad.read_h5ad(tmp_path / "spots.h5ad")
    pd.testing.assert_frame_equal(back.obsm["proportions"], spots.obsm["proportions"])


def test_marker_genes_are_the_planted_blocks(cells, split):
    # synthetic_counts gives cluster k the up-regulated genes 10k .. 10k + 9.
    genes = dv.model.NMFDeconv.marker_genes(cells, "cluster", n_markers=10)
    assert list(genes) == list(cells.var_names[:40])
    spots, ref = split
    before = spots.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", n_markers=10
    )
    chosen = list(dv.model.NMFDeconv.marker_genes(ref, "cluster", n_markers=10))
    assert len(chosen) == 40 and len(set(chosen) & set(genes)) >= 36  # half the cells
    # The spots are registered whole; the model reads the markers from each minibatch.
    assert list(model.used_genes()) == chosen and model.adata is spots
    assert list(model.get_signatures().columns) == chosen
    assert spots.n_vars == 80 and spots.obs.equals(before.obs)  # no column added
    everything = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", n_markers=None
    )
    assert len(everything.used_genes()) == 80
    with pytest.raises(ValueError, match="n_markers must be a positive integer"):
        dv.model.NMFDeconv.marker_genes(cells, "cluster", n_markers=0)


def test_static_reference_methods_refuse_a_countless_reference():
    """signatures_from_reference and marker_genes returned zero signatures and arbitrary
    markers for an all-zero reference, which from_reference refuses."""
    obs = pd.DataFrame({"t": list("aaabbb")}, index=[f"c{i}" for i in range(6)])
    ref = ad.AnnData(np.zeros((6, 4), dtype=np.float32), obs=obs)
    ref.layers["counts"] = ref.X.copy()
    for call in (
        lambda **kw: dv.model.NMFDeconv.signatures_from_reference(ref, "t", **kw),
        lambda **kw: dv.model.NMFDeconv.marker_genes(ref, "t", **kw),
    ):
        with pytest.raises(ValueError, match=r"reference.X holds no counts"):
            call()
        with pytest.raises(ValueError, match=r"layers\['counts'\] holds no counts.*layer=\.\.\."):
            call(layer="counts", genes=["0", "1"])


def test_marker_genes_refuses_a_reference_without_raw_counts(cells):
    """marker_genes log-normalised a log-normalised (or scaled) reference again and ranked
    its genes without a word, where signatures_from_reference and from_reference refuse it."""
    log = cells[:60].copy()
    log.X = np.log1p(log.X.toarray() / 3.0)
    with pytest.raises(ValueError, match=r"reference.X must hold raw counts.*layer='counts'"):
        dv.model.NMFDeconv.marker_genes(log, "cluster", n_markers=3)
    scaled = log.copy()
    scaled.X = (log.X - log.X.mean(0)) / (log.X.std(0) + 1)  # sc.pp.scale's, roughly
    with pytest.raises(ValueError, match=r"must hold raw counts: found negative values"):
        dv.model.NMFDeconv.marker_genes(scaled, "cluster", 3, genes=list(log.var_names[:5]))
    assert len(dv.model.NMFDeconv.marker_genes(log, "cluster", 3, layer="counts")) >= 4


def test_reference_methods_read_genes_by_name(cells):
    """genes='gene_1' was read as its letters, a gene the reference lacks failed with
    anndata's KeyError of np.str_ values, a gene named twice came back twice, and
    n_markers=True was read as 1."""
    ref = cells[:60]
    NM = dv.model.NMFDeconv
    assert list(NM.signatures_from_reference(ref, "cluster", genes="gene_1").columns) == ["gene_1"]
    assert list(NM.marker_genes(ref, "cluster", 3, genes="gene_1")) == ["gene_1"]
    for call in (NM.signatures_from_reference, lambda *a, genes: NM.marker_genes(*a, genes=genes)):
        with pytest.raises(ValueError, match=r"genes names 1 gene\(s\) the reference lacks.*'zz'"):
            call(ref, "cluster", genes=["gene_1", "zz"])
        with pytest.raises(ValueError, match=r"genes names 'gene_1' more than once"):
            call(ref, "cluster", genes=["gene_1", "gene_2", "gene_1"])
    with pytest.raises(ValueError, match="n_markers must be a positive integer; got True"):
        NM.marker_genes(ref, "cluster", n_markers=True)


def test_nmfdeconv_reference_free_finds_types():
    cells = dv.datasets.synthetic_counts(
        n_cells=400, n_genes=60, n_clusters=3, n_conditions=1, seed=4
    )
    spots, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=120, cells_per_spot=(1, 4))
    dv.model.NMFDeconv.setup_anndata(spots)
    model = dv.model.NMFDeconv(spots, n_components=3)
    model.train(max_epochs=100, **TRAIN)
    props = model.get_proportions()
    np.testing.assert_allclose(props.sum(1), 1.0, atol=1e-6)
    truth = spots.obsm["proportions_true"].to_numpy()
    matched = matched_profile_correlation(truth.T, props.to_numpy().T)
    assert matched["correlation"].min() > 0.8, matched


def test_too_many_factors_are_refused_saying_what_bounds_them():
    """NMFDeconv(n_components=100) of 60 spots x 40 genes ended its refusal with
    '... x 40 genes: 40', not saying that 40 is the most factors it can fit, nor what to
    pass. It now names the bound, why, and the arguments that fit (start_spots where the
    spots it reads are what bound it)."""
    cells = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=1, seed=0
    )
    spots, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, seed=0)
    dv.model.NMFDeconv.setup_anndata(spots)
    with pytest.raises(
        ValueError,
        match=r"in 60 spots x 40 genes: at most 40, the smaller of the spots and the genes it "
        r"reads\. Pass n_components=40 or fewer\.$",
    ):
        dv.model.NMFDeconv(spots, n_components=100)
    with pytest.raises(
        ValueError,
        match=r"in 20 spots \(start_spots=20 of the 60\) x 40 genes: at most 20, .* Pass "
        r"n_components=20 or fewer, or start_spots=30 or more\.$",
    ):
        dv.model.NMFDeconv(spots, n_components=30, start_spots=20)
    assert dv.model.NMFDeconv(spots, n_components=30, start_spots=30).module.n_types == 30


def test_nmfdeconv_bad_input(split):
    spots, ref = split
    other = ref.copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="share no genes"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=other, labels_key="cluster")
    # Ensembl IDs as the spots' names, the symbols in a var column (scanpy's 10x readers
    # keep the other identifier there): the column named, not 'use the same identifiers'.
    ensembl = spots.copy()
    ensembl.var["gene_symbols"] = ensembl.var_names
    ensembl.var_names = [f"ENSG{i:011d}" for i in range(ensembl.n_vars)]
    renaming = (
        r"spots.var\['gene_symbols'\] holds \d+ of the gene names of reference: .*spots.var_n"
    )
    with pytest.raises(ValueError, match="share no genes. " + renaming):
        dv.model.NMFDeconv.from_reference(ensembl, reference=ref, labels_key="cluster")
    other.var["symbol"] = ref.var_names  # the reference's, rather than the spots'
    with pytest.raises(ValueError, match=r"reference.var\['symbol'\] holds .*reference.var_n"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=other, labels_key="cluster")
    few = ref[:, :20].copy()
    with pytest.warns(UserWarning, match="share only 20 genes"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=few, labels_key="cluster")
    # Highly variable genes chosen on each apart (scanpy's subset keeps var["highly_variable"]
    # all True): "use the same gene identifiers" was no advice, the identifiers agreed.
    few.var["highly_variable"] = True
    with pytest.warns(UserWarning, match=r"share only 20 genes.*reference holds a subset of its"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=few, labels_key="cluster")
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="celltype")
    one = ref.copy()
    one.obs["single"] = "T"
    with pytest.raises(ValueError, match="at least 2"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=one, labels_key="single")
    rare = ref.copy()
    rare.obs["lab"] = rare.obs["cluster"].astype(str)
    rare.obs.iloc[:3, rare.obs.columns.get_loc("lab")] = "rare"
    with pytest.warns(UserWarning, match=r"fewer than 5 reference cells: \['rare'\]"):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=rare, labels_key="lab")
    # A type of one cell has no variance for the marker t-test; it still gets marker genes.
    lone = rare.copy()
    lone.obs.iloc[1:3, lone.obs.columns.get_loc("lab")] = lone.obs["cluster"].iloc[1:3].astype(str)
    with pytest.warns(UserWarning, match=r"fewer than 5 reference cells: \['rare'\]"):
        single = dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=lone, labels_key="lab", n_markers=5
        )
    assert "rare" in single.get_signatures().index
    # signatures= too: Python's "got multiple values for keyword argument 'signatures'".
    table = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    with pytest.raises(TypeError, match=r"makes the signatures from the reference.*NMFDeconv\("):
        dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, signatures=table)
    dv.model.NMFDeconv.setup_anndata(spots)
    with pytest.raises(ValueError, match="n_components >= 2"):
        dv.model.NMFDeconv(spots)


def test_spatial_proportions_plot(tmp_path):
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    spots, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=36, grid=True, seed=0)
    axes = dv.pl.spatial_proportions(spots, "proportions_true", show=False)
    assert len(axes) == 3 and axes[0].get_title() == "0"
    dv.pl.spatial_proportions(spots, "proportions_true", save=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    with pytest.raises(KeyError, match="'proportions' is not in adata.obsm"):
        dv.pl.spatial_proportions(spots, show=False)
    # One column on the caller's Axes, as scanpy's multi-panel plots take ax.
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    drawn = dv.pl.spatial_proportions(
        spots, "proportions_true", columns=["1"], ax=right, show=False
    )
    assert drawn == [right] and right.get_title() == "1" and not left.collections
    with pytest.raises(ValueError, match="ax draws one panel, and this plot has 3"):
        dv.pl.spatial_proportions(spots, "proportions_true", ax=left, show=False)
    with pytest.raises(ValueError, match="vmax must be a number, 'p99' or None; got 'q99'"):
        dv.pl.spatial_proportions(spots, "proportions_true", vmax="q99", show=False)
    plt.close(fig)


@pytest.mark.parametrize("inference", ["amortized", "per_spot"])
def test_nmfdeconv_likelihood_is_the_negative_binomial(inference):
    """The obs site (the fused count log-density) gives Pyro's NB log-likelihood of the same
    mean and inverse dispersion, and the same gradients for every parameter."""
    import torch
    from pyro import poutine

    from deltavae.distributions import negative_binomial
    from deltavae.module import NMFDeconvModule

    gen = torch.Generator().manual_seed(0)
    signatures = torch.rand(3, 12, generator=gen) + 0.1
    start = (torch.full((16, 3), 1 / 3), torch.ones(16)) if inference == "per_spot" else (None,) * 2
    module = NMFDeconvModule(16, 12, signatures, *start, inference=inference)
    x = torch.poisson(torch.full((16, 12), 3.0), generator=gen)
    idx = torch.arange(16)
    site = poutine.trace(module.model).get_trace(x, idx).nodes["obs"]
    fused = site["fn"].log_prob(x).sum()
    dist = site["fn"].base_dist
    pyro_nb = negative_binomial(dist.mu, dist.theta).log_prob(x).sum()
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [
        torch.autograd.grad(v, params, allow_unused=True, retain_graph=True)
        for v in (fused, pyro_nb)
    ]
    torch.testing.assert_close(fused, pyro_nb, rtol=1e-5, atol=1e-3)
    for ours, theirs in zip(*grads, strict=True):
        if theirs is not None:
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    theta_at = next(i for i, p in enumerate(params) if p is module.log_theta)
    assert grads[1][theta_at] is not None


# 3.5 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_per_spot_map_under_a_sparse_prior_stays_bounded(split):
    """Per spot's default Dirichlet(0.5) prior has an unbounded density at the simplex's
    faces: the logits of absent types ran off, the softmax gave an exact 0 and the loss -inf
    (TrainingDivergedError at epoch 229 of this run; on 100 hypothalamus pseudo-spots at the
    default lr after about 3,400 epochs). With proportions floored the objective is bounded."""
    import torch

    from deltavae.module import NMFDeconvModule
    from deltavae.module._nmfdeconv import PROPORTION_FLOOR

    module = NMFDeconvModule(
        2,
        3,
        torch.ones(3, 3),
        torch.full((2, 3), 1 / 3),
        torch.ones(2),
        prior_concentration=0.5,
        inference="per_spot",
    )
    with torch.no_grad():
        module.proportion_logits[0] = torch.tensor([0.0, -200.0, 5.0])
    loss, _ = module.negative_elbo(torch.tensor([[3.0, 0.0, 4.0], [1.0, 2.0, 3.0]]), None)
    assert torch.isfinite(loss).all()
    spots, ref = split
    model = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", inference="per_spot"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", dv.train.NotConvergedWarning)
        model.train(max_epochs=300, lr=0.5, **TRAIN)
    logits = model.module.proportion_logits.detach()
    assert (logits.max(1).values - logits.min(1).values).max() < 60  # 95 when it diverged
    pred = model.get_proportions()
    assert pred.to_numpy().min() == pytest.approx(PROPORTION_FLOOR, rel=1e-3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)
    scores = deconvolution_scores(spots.obsm["proportions_true"], pred)
    assert scores["pcc"].median() > 0.9


def test_models_fitted_per_spot_load_onto_their_spots_by_name(split, tmp_path):
    """Loaded onto the same spots in another order, a per-spot NMFDeconv gave each spot
    another's proportions (by position, differences up to 0.9996), and onto other spots the
    old spots' proportions under new names; Archetypes (its archetypes are mixtures of the
    training spots) did the same, or failed with torch's 'size mismatch for B_logits'. Then
    their read-outs gave rows in the fitted order, not the spots': ``spots.obsm["p"] =
    loaded.get_proportions().to_numpy()`` put each spot's proportions on another spot."""
    spots, ref = split
    model = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", inference="per_spot"
    )
    model.train(max_epochs=20, **TRAIN)
    before = model.get_proportions()
    model.save(tmp_path / "nmf")
    backwards = spots[np.random.default_rng(0).permutation(spots.n_obs)].copy()
    with pytest.warns(UserWarning, match="in another order; they are put back"):
        loaded = dv.model.NMFDeconv.load(tmp_path / "nmf", backwards)
    in_order = before.loc[backwards.obs_names]  # rows in the order of the spots given
    pd.testing.assert_frame_equal(loaded.get_proportions(), in_order, atol=1e-6)
    abundance = loaded.get_abundance()
    assert abundance.index.equals(backwards.obs_names)
    np.testing.assert_allclose(abundance, model.get_abundance()[backwards.obs_names], rtol=1e-6)
    part = loaded.get_proportions(indices=[3, 0, 7])  # positions in the spots given
    pd.testing.assert_frame_equal(part, in_order.iloc[[3, 0, 7]], atol=1e-6)
    # an unsaved model reads any order of its spots by name
    pd.testing.assert_frame_equal(model.get_proportions(backwards), in_order)
    loaded.write_to_adata()  # into the spots given to load (the model's reordered copy before)
    written = backwards.obsm["proportions"]
    pd.testing.assert_frame_equal(written.loc[before.index], before, atol=1e-6, check_dtype=False)
    others = spots[:40].copy()
    others.obs_names = [f"other_{i}" for i in range(40)]
    with pytest.raises(ValueError, match=r"150 spots.*got 40 spots, 40 of them not fitted"):
        dv.model.NMFDeconv.load(tmp_path / "nmf", others)
    mix = dv.datasets.convex_mixtures(n_spots=80, n_genes=80, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    archetypes = dv.model.Archetypes(mix, n_archetypes=3)
    archetypes.train(max_epochs=100, **TRAIN)  # 30: an archetype led by under 5 spots
    weights = archetypes.get_archetype_weights()
    archetypes.save(tmp_path / "arch")
    shuffled = mix[np.random.default_rng(1).permutation(mix.n_obs)].copy()
    with pytest.warns(UserWarning, match="in another order"):
        again = dv.model.Archetypes.load(tmp_path / "arch", shuffled)
    reordered = weights.loc[shuffled.obs_names]
    pd.testing.assert_frame_equal(again.get_archetype_weights(), reordered, atol=1e-6)
    again_part = again.get_archetype_weights(indices=[5, 1])
    pd.testing.assert_frame_equal(again_part, reordered.iloc[[5, 1]], atol=1e-6)
    with pytest.raises(ValueError, match=r"get_archetype_weights\(new_spots\)"):
        dv.model.Archetypes.load(tmp_path / "arch", mix[:30].copy())


@pytest.mark.parametrize(
    ("inference", "learn_signatures", "gene_index"),
    [("amortized", False, None), ("per_spot", True, [4, 0, 2, 5])],
)
def test_nmfdeconv_torch_elbo_is_pyros_trace_elbo(inference, learn_signatures, gene_index):
    """negative_elbo, which training uses, gives Pyro's Trace_ELBO of the MAP program (value
    and gradients), the technology prior shared out over the spots the plate stands for."""
    import torch

    from deltavae.module import NMFDeconvModule

    torch.manual_seed(0)
    n_genes = 4 if gene_index else 6
    module = NMFDeconvModule(
        50,
        n_genes,
        torch.rand(3, n_genes) * 5,
        torch.full((50, 3), 1 / 3),
        torch.full((50,), 2.0),
        learn_signatures=learn_signatures,
        prior_concentration=0.7,
        inference=inference,
        gene_index=gene_index,
    )
    with torch.no_grad():  # away from the start, where some gradients are zero
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    module.n_obs = 50
    x = torch.poisson(torch.rand(8, 6) * 6)
    args = (x, torch.arange(3, 11))
    per_spot, terms, _ = assert_torch_elbo_is_pyros(module, args, kl_weight=0.4)
    assert set(terms) == {"reconstruction_loss", "kl_local"}
    # kl_local is the negative log prior: the objective is reconstruction + weight * it.
    torch.testing.assert_close(per_spot, terms["reconstruction_loss"] + 0.4 * terms["kl_local"])


def test_per_spot_results_after_the_models_spots_are_subset_in_place(split):
    """sc.pp.filter_cells on a per-spot model's own AnnData after training: NMFDeconv and
    SpatialImputer read the fitted rows by position, giving each remaining spot another's
    proportions and imputations (silently); Archetypes' cached weights of all the spots
    failed with pandas' shape error."""
    spots, ref = split
    spots = spots.copy()
    keep = np.arange(spots.n_obs) % 3 != 0
    nmf = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot"
    )
    nmf.train(max_epochs=5, **TRAIN)
    before = nmf.get_proportions()
    spots._inplace_subset_obs(keep)
    pd.testing.assert_frame_equal(nmf.get_proportions(), before.loc[spots.obs_names])
    imputer = dv.model.SpatialImputer.from_reference(
        split[0][:, 10:].copy(), reference=ref, labels_key="cluster", profiles="type"
    )
    imputer.train(max_epochs=5, **TRAIN)
    imputed, shares = imputer.impute(), imputer.get_proportions()
    imputer.adata._inplace_subset_obs(keep)
    names = imputer.adata.obs_names
    pd.testing.assert_frame_equal(imputer.impute(), imputed.loc[names])
    pd.testing.assert_frame_equal(imputer.get_proportions(), shares.loc[names])
    mix = dv.datasets.convex_mixtures(n_spots=80, n_genes=80, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    archetypes = dv.model.Archetypes(mix, n_archetypes=3)
    archetypes.train(max_epochs=100, **TRAIN)  # 30: an archetype led by under 5 spots
    weights = archetypes.get_archetype_weights()
    mix._inplace_subset_obs(np.arange(mix.n_obs) % 2 == 0)
    pd.testing.assert_frame_equal(
        archetypes.get_archetype_weights(), weights.loc[mix.obs_names], atol=1e-6
    )


def test_marker_genes_of_a_reference_on_disk(split, tmp_path):
    """marker_genes of a reference opened backed or with read_lazy failed with numpy's
    'setting an array element with a sequence', signatures_from_reference of all its genes
    with scanpy's 'not supported for aggregation', and both of a backed view's genes with
    anndata's 'cannot make a view of a view'."""
    ref = ad.AnnData(split[1].X, obs=split[1].obs[["cluster"]], var=split[1].var[[]])
    ref.write_h5ad(tmp_path / "ref.h5ad")
    backed = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    lazy = dv.read_lazy(tmp_path / "ref.h5ad")
    genes = ref.var_names[::-2]
    for on_disk in (backed, lazy, backed[::2]):
        for chosen in (None, genes):
            in_memory = ref[on_disk.obs_names]
            found = dv.model.NMFDeconv.marker_genes(on_disk, "cluster", 5, genes=chosen)
            expected = dv.model.NMFDeconv.marker_genes(in_memory, "cluster", 5, genes=chosen)
            assert found.equals(expected)
            pd.testing.assert_frame_equal(
                dv.model.NMFDeconv.signatures_from_reference(on_disk, "cluster", genes=chosen),
                dv.model.NMFDeconv.signatures_from_reference(in_memory, "cluster", genes=chosen),
            )
    backed.file.close()


@pytest.mark.filterwarnings("ignore:spots and signatures share only")
def test_signature_genes_silent_in_every_type_are_left_out(split):
    """Genes at 0 in every signature, but counted in the spots, were read: no type could
    explain their counts, and they skewed the proportions (TV 0.18 against leaving them
    out, on hippocampus Visium); from_reference dropped them, NMFDeconv(signatures=) not."""
    spots, ref = split
    spots = spots.copy()
    signatures = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    silent = signatures.columns[:3]
    signatures[silent] = 0.0
    dv.model.NMFDeconv.setup_anndata(spots)
    with pytest.warns(UserWarning, match=r"3 genes are 0 in every signature"):
        model = dv.model.NMFDeconv(spots, signatures=signatures)
    assert not model.used_genes().isin(silent).any()
    assert len(model.used_genes()) == spots.n_vars - 3
    with pytest.raises(ValueError, match="0 in every gene"):
        dv.model.NMFDeconv(spots, signatures=signatures * 0)


@pytest.mark.filterwarnings("ignore:.*genes in .* are zero in every")
def test_genes_no_spot_counts_are_left_out(split, tmp_path, monkeypatch):
    """Genes that no spot counts (a panel probe the platform never detects) were read as a 0
    in every spot: they drew the proportions towards the types that do not express them
    (mean TV to the truth 0.09 -> 0.22, per spot, with 10 such genes of 60). Left out, with
    a warning, the fit is that without them; a load reads the genes the model read."""
    spots, ref = split
    silent = list(spots.var_names[:3])
    zeros = spots.copy()
    zeros.X = sparse.csr_matrix(zeros.X.toarray() * ~spots.var_names.isin(silent))
    fits = []
    for data, warned in ((spots[:, 3:].copy(), False), (zeros, True)):
        scvi.settings.seed = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = dv.model.NMFDeconv.from_reference(
                data, ref, labels_key="cluster", n_markers=None, inference="per_spot"
            )
        said = [str(w.message) for w in caught if "0 in every spot" in str(w.message)]
        assert bool(said) == warned, said
        model.train(max_epochs=5, **TRAIN)
        fits.append(model)
    assert not fits[1].used_genes().isin(silent).any()
    pd.testing.assert_index_equal(fits[1].used_genes(), fits[0].used_genes())
    pd.testing.assert_frame_equal(fits[1].get_proportions(), fits[0].get_proportions())
    fits[1].save(tmp_path / "m")
    loaded = dv.model.NMFDeconv.load(tmp_path / "m", zeros)
    pd.testing.assert_frame_equal(loaded.get_proportions(), fits[0].get_proportions())
    # Its spots without counts found from their totals as stored, not from a dense copy.
    from deltavae.model import _spots

    def refused(x, *args):
        raise AssertionError(f"a dense copy of {x.shape[0]} x {x.shape[1]} counts")

    monkeypatch.setattr(_spots, "dense", refused)
    pd.testing.assert_frame_equal(loaded.get_proportions(), fits[0].get_proportions())


def _silenced_type_spots():
    """Spots that count none of the genes of type C, its profiles, and SpatialImputer's."""
    genes = [f"g{i}" for i in range(12)]
    profiles = pd.DataFrame(0.0, index=["A", "B", "C"], columns=[*genes, "h0", "h1"])
    for k, at in enumerate((slice(0, 4), slice(4, 8), slice(8, 14))):
        profiles.iloc[k, at] = 5.0
    counts = np.random.default_rng(0).poisson(2.0, (30, 12)).astype(np.float32)
    counts[:, 8:] = 0
    spots = ad.AnnData(sparse.csr_matrix(counts), var=pd.DataFrame(index=genes))
    spots.obs_names = [f"s{i}" for i in range(30)]
    return spots, profiles


@pytest.mark.filterwarnings("ignore:.*genes in .* are zero in every")
@pytest.mark.filterwarnings("ignore:spots and signatures share only")
@pytest.mark.filterwarnings("ignore:spots and reference share only")
def test_genes_no_spot_counts_are_kept_when_a_type_has_no_other():
    """Left out, the zeros of a type's only genes made it 'silent': refused, or its share the
    prior's (SpatialImputer). Its zeros are then the evidence it is absent: kept, warned."""
    spots, profiles = _silenced_type_spots()
    nmf_spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(nmf_spots)
    with pytest.warns(UserWarning, match=r"4 genes are 0 in every spot .* kept, as the cell t"):
        model = dv.model.NMFDeconv(nmf_spots, signatures=profiles)
    assert len(model.used_genes()) == 12
    dv.model.SpatialImputer.setup_anndata(spots)
    with pytest.warns(UserWarning, match=r"kept, as the reference states \['C'\] express"):
        imputer = dv.model.SpatialImputer(spots, profiles, profiles="type")
    assert bool(imputer.module.counted.all())


@pytest.mark.parametrize("kwargs", [{"prior_concentration": -1}, {"inference": "magic"}])
def test_a_failed_from_reference_leaves_the_spots_as_they_were(split, kwargs):
    # from_reference registers the spots themselves; a bad model argument must not leave
    # scvi-tools' setup keys (uns["_scvi_uuid"], ...) behind in them.
    spots, ref = split
    spots = spots.copy()
    before = (list(spots.obs.columns), sorted(spots.uns), list(spots.obsm))
    with pytest.raises(ValueError, match="prior_concentration|inference must be one of"):
        dv.model.NMFDeconv.from_reference(spots, ref, labels_key="cluster", **kwargs)
    assert (list(spots.obs.columns), sorted(spots.uns), list(spots.obsm)) == before


def test_static_reference_methods_name_genes_the_reference_lacks(split):
    """signatures_from_reference/marker_genes(genes=[..., a typo]) gave anndata's KeyError,
    'Values [np.str_('nope')] ... are not valid obs/ var names or indices'."""
    _, ref = split
    genes = [ref.var_names[0], "nope", ref.var_names[1].upper()]
    for method in (dv.model.NMFDeconv.signatures_from_reference, dv.model.NMFDeconv.marker_genes):
        with pytest.raises(
            ValueError, match=r"2 gene\(s\) the reference lacks.*'nope', 'GENE_1'.*Ignoring case"
        ):
            method(ref, "cluster", genes=genes)
    sig = dv.model.NMFDeconv.signatures_from_reference(
        ref, "cluster", genes=np.array(ref.var_names[:2])
    )
    assert sig.columns.tolist() == ref.var_names[:2].tolist()
