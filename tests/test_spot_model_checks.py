"""Spot models: warnings about what the data support, platform level, results of spots left out."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.model._nmf_results import warn_idle_factors
from deltavae.model._one_state import noise_spectrum

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def four_types():
    cells = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=150, cells_per_spot=(2, 8), seed=3)


def test_reference_free_nmf_warns_about_factors_the_spots_do_not_support(four_types):
    spots = four_types[0].copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    model = dv.model.NMFDeconv(spots, n_components=8)
    with pytest.warns(UserWarning, match=r"4 of the 8 factors .* Fit fewer, e.g. n_components=4"):
        model.train(max_epochs=30, **TRAIN)
    right = dv.model.NMFDeconv(spots, n_components=4)
    right.train(max_epochs=30, **TRAIN)  # no warning at the right number of factors


def test_idle_factors_are_named_with_their_share():
    props = np.array([[0.7, 0.25, 0.05]] * 30 + [[0.2, 0.75, 0.05]] * 30)
    with pytest.warns(UserWarning, match=r"1 of the 3 factors .* F2 \(5.0%, 0 spots\)"):
        warn_idle_factors(props, ["F0", "F1", "F2"])
    warn_idle_factors(props[:, :2] / props[:, :2].sum(1, keepdims=True), ["F0", "F1"])


def _imputer_spots(four_types, n_zero: int, n_hidden: int = 20):
    spots = four_types[0]
    hidden = list(spots.var_names[-n_hidden:])
    X = spots[:, :-n_hidden].X.toarray()
    X[:, :n_zero] = 0  # panel genes the platform never counts
    spatial = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=spots.obs_names),
        var=pd.DataFrame(index=spots.var_names[:-n_hidden]),
    )
    return spatial, hidden, spots[:, hidden].X.toarray()


def test_imputer_level_ignores_panel_genes_without_counts(four_types):
    """10 of 60 panel genes without counts in any spot fitted platform factors near 0 and
    pulled every unmeasured gene's factor (their geometric mean) down: imputed totals were
    0.49 of the truth (0.98 without them)."""
    spatial, hidden, truth = _imputer_spots(four_types, n_zero=10)
    with pytest.warns(UserWarning, match=r"10 of the spots' 60 genes are 0 in every spot .* leave"):
        model = dv.model.SpatialImputer.from_reference(
            spatial, reference=four_types[1], labels_key="cluster", profiles="type"
        )
    model.train(max_epochs=60, **TRAIN)
    ratio = model.impute(genes=hidden).to_numpy().sum() / truth.sum()
    assert 0.85 < ratio < 1.15, ratio
    # A model saved before the mask existed loads with the mean over every visible gene.
    state = {k: v for k, v in model.module.state_dict().items() if k != "counted"}
    model.module.load_state_dict(state)
    assert bool(model.module.counted.all())


def _left_out_models(which, kept, ref):
    if which == "nmf_per_spot":
        return dv.model.NMFDeconv.from_reference(
            kept, reference=ref, labels_key="cluster", inference="per_spot"
        )
    if which == "imputer":
        return dv.model.SpatialImputer.from_reference(
            kept[:, :60].copy(), reference=ref, labels_key="cluster", profiles="type"
        )
    if which == "imputer_latent":
        return dv.model.SpatialImputer.from_reference(
            kept[:, :60].copy(), reference=ref, design="latent", n_hidden=8, n_latent=2
        )
    dv.model.Archetypes.setup_anndata(kept)
    return dv.model.Archetypes(kept, n_archetypes=3, n_hidden=8)


@pytest.mark.filterwarnings("ignore:archetype A. has no anchors")  # a short run: said each write
@pytest.mark.parametrize("which", ["nmf_per_spot", "imputer", "imputer_latent", "archetypes"])
def test_write_to_adata_of_spots_left_out_of_a_per_spot_fit_gives_missing_rows(four_types, which):
    """Empty spots filtered before training, as advised: write_to_adata into all the spots
    was refused ("not among the model's spots"); the fitted spots get their results and the
    others missing values, with a warning naming them."""
    spots, ref = four_types
    full = ad.AnnData(spots.X.toarray(), obs=pd.DataFrame(index=spots.obs_names), var=spots.var[[]])
    full.X[:4] = 0
    kept = full[4:].copy()
    model = _left_out_models(which, kept, ref)
    model.train(max_epochs=2, **TRAIN)
    if which.startswith("imputer"):
        full = full[:, :60].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs, few archetypes' spots: not tested here
        alone = kept[:, : full.n_vars].copy()
        keys = model.write_to_adata(alone)
    with pytest.warns(UserWarning, match=r"4 of the 150 spots of adata are not among the 146"):
        assert model.write_to_adata(full) == keys
    for key in keys:
        slot, name = key.split("/", 1)
        value, expected = getattr(full, slot)[name], getattr(alone, slot)[name]
        if slot == "obsm":
            value = pd.DataFrame(np.asarray(value), index=full.obs_names)
            assert value.iloc[:4].isna().all().all()
            np.testing.assert_allclose(value.iloc[4:], np.asarray(expected), rtol=1e-5)
        elif slot == "obs":
            assert value.iloc[:4].isna().all() and value.dtype == expected.dtype
            assert (value.iloc[4:].astype(str) == expected.astype(str)).all()


@pytest.mark.parametrize("design", ["deconvolution", "latent"])
def test_imputer_warns_about_reference_cells_without_counts_as_nmfdeconv(four_types, design):
    spots, ref = four_types
    ref = ref.copy()
    ref.X = ref.X.toarray()
    ref.X[:3] = 0
    names = ", ".join(ref.obs_names[:3])
    with pytest.warns(UserWarning, match=rf"3 reference cells have no counts .*\(e.g. {names}\)"):
        dv.model.SpatialImputer.from_reference(
            spots[:, :60].copy(), reference=ref, labels_key="cluster", design=design
        )


def test_archetypes_of_spots_of_one_state_say_they_split_noise():
    """Spots of one state (Poisson counts of one profile at varied depth): 2 archetypes split
    them (31 and 169 spots) with no warning but convergence; now the merge says the spots
    show no structure beyond counting noise. Spots of 3 states do not."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 1.0, 40) * rng.uniform(5, 15, (150, 1)))
    one = ad.AnnData(counts.astype(np.float32))
    dv.model.Archetypes.setup_anndata(one)
    model = dv.model.Archetypes(one, n_archetypes=2, n_hidden=8)
    model.train(max_epochs=2, **TRAIN)
    model.min_spots = 1  # a 2-epoch run: an archetype may lead 1 spot (warned otherwise)
    with pytest.warns(UserWarning, match=r"no structure beyond counting noise .* 2 archetypes"):
        model.get_archetype_weights()
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    top, edge = noise_spectrum(np.asarray(mix.X.todense(), dtype=float))
    assert top > 4 * edge


def test_noise_check_leaves_out_spots_without_counts_in_its_genes():
    """The check kept the spots with counts before choosing its 500 most counted genes: a
    spot whose few counts all lay in other genes (2 of the 262 shipped olfactory-bulb spots,
    totals 2 and 4) had 0 expected counts, its residuals NaN, every gene's sd NaN, and
    ``Archetypes(...)`` died in scipy's svds with "`A` must not be empty"."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 1.0, 600) * 0.1 * rng.uniform(5, 15, (80, 1)))
    counts = counts.astype(np.float32)
    order = np.argsort(counts.sum(0))  # genes from the least counted
    counts[0] = 0
    counts[0, order[:2]] = 1  # spot 0: counts only in genes outside the top 500
    counts = counts[:, counts.sum(0) > 0]  # no silent genes (warned at setup)
    assert counts.shape[1] > 500
    top, edge = noise_spectrum(counts.astype(float))
    assert np.isfinite(top) and np.isfinite(edge)
    spots = ad.AnnData(counts)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=2, n_hidden=8)
    assert np.isfinite(model.noise_check_).all()


def test_imputer_latent_design_reads_no_panel_gene_without_counts():
    """The latent design shared a spot's total out over every panel gene, those no spot
    counts too (their platform factors fall slowly from 1): with 10 of 60 such genes the
    imputed totals were 0.44 of the truth after 60 epochs (1.0 without them). They are
    now no evidence: left out of the likelihood, the total's share and the encoder's input
    (reference cells' too), so their values change nothing, and they take the unmeasured
    genes' platform factor."""
    import torch

    from deltavae.module import ImputerLatentModule

    torch.manual_seed(0)
    visible = torch.tensor([0, 2, 5, 7, 9])
    module = ImputerLatentModule(20, torch.poisson(torch.rand(30, 12) * 5), visible, n_hidden=8)
    module.eval()
    module.counted[:2] = False  # genes 0 and 2: no counts in any spot
    x = torch.poisson(torch.rand(6, 5) * 8)
    x[:, :2] = 0
    before = module.expected(x)
    with torch.no_grad():
        module.log_technology[:2] = -4.0  # as a long fit of their zeros drives them
    other = x.clone()
    other[:, :2] = 50.0  # new spots counting them: not read either
    torch.testing.assert_close(module.expected(other), before)
    torch.testing.assert_close(module.expected(x), before)
    tech = module.technology()
    torch.testing.assert_close(tech[[0, 2]], tech[[1, 3]])  # the unmeasured genes' factor

    def reconstruction():
        inferred = module.inference(x, None)
        return module.loss({"X": x}, inferred, module.generative(inferred["visible_mean"])).loss

    nll = reconstruction()
    with torch.no_grad():
        module.log_technology[:2] = 3.0
    torch.testing.assert_close(reconstruction(), nll)


def test_reference_cells_without_counts_in_its_layer_are_dropped_by_that_layer():
    """With reference_layer='counts' and X scaled (every cell nonzero in X), the advice said
    sc.pp.filter_cells(reference, min_counts=1), which reads X: following it kept the cells
    without counts (and, on a log-normalised X with negative values, could drop others). The
    statement now reads the layer the model reads."""
    import scanpy as sc  # noqa: F401 - the advised statement may name it

    from deltavae.model._nmf_reference import warn_empty_reference_cells

    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (12, 8)).astype(np.float32)
    counts[:3] = 0
    reference = ad.AnnData(rng.normal(size=(12, 8)).astype(np.float32))  # scaled X
    reference.layers["counts"] = counts
    with pytest.warns(UserWarning, match="3 reference cells have no counts") as said:
        warn_empty_reference_cells(reference, "counts")
    statement = str(said[0].message).split("Drop them first: ", 1)[1].rstrip(".")
    names = {"reference": reference, "sc": sc, "np": np}
    exec(statement, names)
    assert list(names["reference"].obs_names) == list(reference.obs_names[3:])
