"""SpatialImputer and the imputation metrics: held-out genes of pseudo-spots with known counts."""

import collections.abc
import functools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from _torch_elbo import assert_torch_elbo_is_pyros
from scipy import sparse

import deltavae as dv
from deltavae.metrics import imputation_scores

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
N_HIDDEN = 20


@pytest.fixture(scope="module")
def pair():
    """Pseudo-spots of 4 cell types (80 genes) and a disjoint reference; the spots keep the
    first 60 genes, and the counts of the last 20 are the truth to impute."""
    cells = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=150, cells_per_spot=(2, 8))
    hidden = list(spots.var_names[-N_HIDDEN:])
    truth = pd.DataFrame(spots[:, hidden].X.toarray(), index=spots.obs_names, columns=hidden)
    spatial = ad.AnnData(
        X=spots[:, :-N_HIDDEN].X.copy(),
        obs=pd.DataFrame(index=spots.obs_names),
        var=pd.DataFrame(index=spots.var_names[:-N_HIDDEN]),
    )
    return spatial, ref, truth


@pytest.fixture(scope="module")
def fitted(pair):
    spatial, ref, _ = pair
    model = dv.model.SpatialImputer.from_reference(spatial, reference=ref, labels_key="cluster")
    model.train(max_epochs=100, **TRAIN)
    return model


def _median_pcc(truth: pd.DataFrame, imputed: pd.DataFrame) -> float:
    return float(imputation_scores(truth, imputed)["pcc"].median())


@pytest.fixture(scope="module")
def substates():
    """Single-cell spots and a reference of 3 labelled types, each made of 2 unlabelled
    substates that differ on 50 visible and on the 10 hidden genes (Poisson counts)."""
    rng = np.random.default_rng(0)
    n_genes, hidden = 60, 10
    types = rng.gamma(2.0, 1.0, size=(3, n_genes))
    # Substates: a type's profile times a gene-wise factor, up or down 3-fold per substate.
    states = np.repeat(types, 2, axis=0) * np.exp(rng.choice([-1.1, 1.1], size=(6, n_genes)))
    states /= states.sum(1, keepdims=True)

    def draw(n_per_state, depth):
        state = np.repeat(np.arange(6), n_per_state)
        return state, rng.poisson(states[state] * depth).astype(np.float32)

    genes = [f"g{i}" for i in range(n_genes)]
    cell_state, cells = draw(40, 60)  # shallow reference cells
    ref = ad.AnnData(cells, var=pd.DataFrame(index=genes))
    ref.obs["cell_type"] = pd.Categorical([f"type{s // 2}" for s in cell_state])
    _, spot_counts = draw(20, 400)  # deeper single-cell spots
    names = [f"spot{i}" for i in range(len(spot_counts))]
    spatial = ad.AnnData(
        spot_counts[:, :-hidden], obs=pd.DataFrame(index=names),
        var=pd.DataFrame(index=genes[:-hidden]),
    )  # fmt: skip
    truth = pd.DataFrame(spot_counts[:, -hidden:], index=names, columns=genes[-hidden:])
    return spatial, ref, truth


# ----------------------------------------------------------------------------- metrics
def test_imputation_scores_known_values_and_names():
    true = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    # Extra genes and another column order are matched by name; scale does not count.
    pred = pd.DataFrame({"b": [5.0, 0.0, 5.0, 0.0], "a": [3.0, 2.0, 1.0, 0.0], "c": 1.0})
    scores = imputation_scores(true, pred)
    assert scores.loc["b"].to_dict() == pytest.approx(
        {"pcc": 1.0, "ssim": 1.0, "rmse": 0.0, "jsd": 0.0}
    )
    assert scores.loc["a", "pcc"] == pytest.approx(-1.0)
    assert scores.loc["a", "rmse"] == pytest.approx(2.0)  # z-scores of opposite sign
    assert 0 < scores.loc["a", "jsd"] <= 1 and scores.loc["a", "ssim"] < 0
    with pytest.raises(KeyError, match="lacks 1 of the true genes"):
        imputation_scores(true, pred[["a"]])
    # One table genes x spots: said so, not only "pred lacks 2 of the true genes".
    with pytest.raises(KeyError, match=r"one of the tables is genes x spots; pass it transp"):
        imputation_scores(true, pred.T)
    with pytest.raises(ValueError, match="NaN or infinite"):
        imputation_scores(true, pred.assign(a=np.nan))
    # A constant prediction has no pattern: NaN, not PCC 1e-16 or an RMSE of 1.0 that beats
    # every real pattern (0.7 repeated has a float std of 1e-16, 0.1 of exactly 0).
    flat = pd.DataFrame({"a": 0.7, "b": 0.1}, index=true.index)
    with pytest.warns(UserWarning, match=r"constant across spots in 2 of the 2 genes.*fillna"):
        flat = imputation_scores(true, flat)
    assert flat[["pcc", "rmse"]].isna().all().all()
    # An array true is read in a DataFrame pred's layout; sparse and AnnData are named.
    ordered = pred[["a", "b"]]
    pd.testing.assert_frame_equal(
        imputation_scores(true.to_numpy(), ordered), imputation_scores(true, ordered)
    )
    with pytest.raises(TypeError, match=r"to_df\(\)"):
        imputation_scores(sparse.csr_matrix(true.to_numpy()), ordered)


# ----------------------------------------------------------------------------- imputation
def test_held_out_genes_follow_the_truth(pair, fitted):
    spatial, _, truth = pair
    imputed = fitted.impute()
    assert list(imputed.columns) == list(truth.columns)  # the genes the spots lack
    assert imputed.index.equals(spatial.obs_names)
    pcc = _median_pcc(truth, imputed)
    shuffled = imputed.sample(frac=1.0, random_state=0).set_axis(imputed.index)
    control = _median_pcc(truth, shuffled)
    assert pcc > 0.7, pcc
    assert abs(control) < 0.2 and pcc - control > 0.6, (pcc, control)
    # Expected counts on the spots' scale: about the measured totals of those genes.
    ratio = imputed.to_numpy().sum() / truth.to_numpy().sum()
    assert 0.5 < ratio < 2, ratio
    elbo = fitted.history["elbo_train"].iloc[:, 0]
    assert elbo.iloc[-1] < 0.95 * elbo.iloc[0] and elbo.iloc[-10:].max() < elbo.iloc[:10].min()


def test_a_missing_spot_layer_is_named_before_the_reference_work(pair, monkeypatch):
    """A misspelled spot layer was found only after the reference's dense copies and clusters
    (minutes on an atlas reference)."""
    from deltavae.model import _imputer

    def reached(*args, **kwargs):
        raise AssertionError("the reference was read before the spots' layer was checked")

    spatial, ref, _ = pair
    monkeypatch.setattr(_imputer, "reference_genes", reached)
    with pytest.raises(KeyError, match=r"layer 'count' is not in spots.layers"):
        dv.model.SpatialImputer.from_reference(spatial, reference=ref, layer="count")


def test_spot_abundances_start_from_the_stored_counts(pair, monkeypatch):
    """Each spot's abundance started from its total count, summed over a dense float64 copy
    of every spot and gene (240 MB for 40,000 spots x 500 genes, to get one number a spot).
    The start is the same from the counts as stored."""
    from deltavae.model import _imputer

    spatial, ref, _ = pair
    build = functools.partial(
        dv.model.SpatialImputer.from_reference, spatial, ref, "cluster", profiles="type"
    )
    expected = build().module.log_abundance.detach().clone()

    def refused(x):
        raise AssertionError(f"a dense copy of {x.shape[0]} x {x.shape[1]} counts")

    monkeypatch.setattr(_imputer, "dense", refused)
    np.testing.assert_array_equal(build().module.log_abundance.detach(), expected)


def test_reference_cells_are_kept_in_float32_as_the_model_reads_them():
    """The reference's single cells (latent design, neighbour profiles) were made a float64
    table, kept in the model's arguments and saved with it, beside the float32 copy the
    model reads: 3.3 times the cells at the peak. The model reads the same values."""
    import tracemalloc

    cells = dv.datasets.synthetic_counts(
        n_cells=3000, n_genes=400, n_conditions=1, seed=0, library_size=60
    )
    cells.X = sparse.csr_matrix(cells.X, dtype=np.float32)  # 1 MB stored, 4.8 MB dense
    spots = dv.datasets.synthetic_counts(n_cells=100, n_genes=400, n_conditions=1)[:, :300].copy()
    tracemalloc.start()
    try:
        model = dv.model.SpatialImputer.from_reference(spots, cells, "cluster", design="latent")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense_cells = cells.X.toarray()
    assert peak < 2 * dense_cells.nbytes
    kept = model.init_params_["non_kwargs"]["reference"]
    assert (kept.dtypes == np.float32).all()
    np.testing.assert_array_equal(kept.to_numpy(), dense_cells)


def test_latent_design_imputes_and_its_loss_falls(pair):
    spatial, ref, truth = pair
    model = dv.model.SpatialImputer.from_reference(
        spatial, reference=ref, labels_key=None, design="latent"
    )
    model.train(max_epochs=25, **TRAIN)
    elbo = model.history["elbo_train"].iloc[:, 0]
    assert elbo.iloc[-1] < 0.8 * elbo.iloc[0]
    assert _median_pcc(truth, model.impute()) > 0.5


def test_neighbour_profiles_find_substates(substates, monkeypatch):
    spatial, ref, truth = substates
    pcc = {}
    for profiles in ("type", "neighbours"):
        scvi.settings.seed = 0
        model = dv.model.SpatialImputer.from_reference(spatial, reference=ref, profiles=profiles)
        model.train(max_epochs=30, **TRAIN)
        imputed = model.impute()
        pcc[profiles] = _median_pcc(truth, imputed)
    # The type means cannot tell the substates apart; the cells most like the spot can.
    assert pcc["neighbours"] > 0.6 and pcc["neighbours"] > pcc["type"] + 0.2, pcc
    # Spots are read in chunks (spots x cells similarities): the chunk size does not matter.
    monkeypatch.setattr("deltavae.model._imputer._CHUNK", 7)
    pd.testing.assert_frame_equal(model.impute(), imputed)


def test_genes_matched_by_name(pair, fitted):
    spatial, ref, _ = pair
    order = np.random.default_rng(0).permutation(spatial.n_vars)
    results = []
    for spots in (spatial, spatial[:, order].copy()):
        scvi.settings.seed = 0
        model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
        model.train(max_epochs=20, **TRAIN)
        results.append(model.impute())
    pd.testing.assert_frame_equal(results[0], results[1])
    # Any reference gene by name, measured ones included; unknown names are refused by name.
    some = [ref.var_names[-1], ref.var_names[0]]
    assert list(fitted.impute(some).columns) == some
    with pytest.raises(KeyError, match="NotAGene"):
        fitted.impute(["NotAGene", ref.var_names[0]])
    # A repeated gene: refused now, not when writing obsm["imputed"] to h5ad.
    with pytest.raises(ValueError, match=r"genes repeats names \(e.g. \['gene_79'\]\)"):
        fitted.write_to_adata(spatial.copy(), genes=["gene_79", "gene_70", "gene_79"])


def test_refusals(pair):
    spatial, ref, _ = pair
    few = spatial[:, :5].copy()
    with pytest.raises(ValueError, match="share 5 genes; at least 10"):
        dv.model.SpatialImputer.from_reference(few, reference=ref, labels_key="cluster")
    few.raw = spatial  # subset after adata.raw = adata, as scanpy users do: not identifiers
    with pytest.raises(ValueError, match="share 5 genes.*spots holds a subset of its genes"):
        dv.model.SpatialImputer.from_reference(few, reference=ref, labels_key="cluster")
    renamed = spatial.copy()
    renamed.var_names = [f"other_{g}" for g in spatial.var_names]
    with pytest.raises(ValueError, match=r"share 0 genes.*same gene identifiers"):
        dv.model.SpatialImputer.from_reference(renamed, reference=ref, labels_key="cluster")
    renamed.var["symbol"] = spatial.var_names  # the reference's names in a var column
    with pytest.raises(ValueError, match=r"share 0 genes.*spots.var\['symbol'\] holds 60 of"):
        dv.model.SpatialImputer.from_reference(renamed, reference=ref, labels_key="cluster")
    shouted = spatial.copy()
    shouted.var_names = spatial.var_names.str.upper()  # 'GENE_0' against the reference's 'gene_0'
    with pytest.raises(ValueError, match=r"Ignoring case, they share 60 genes \(e.g. GENE_0 and"):
        dv.model.SpatialImputer.from_reference(shouted, reference=ref, labels_key="cluster")
    # The names agree, the reference's counts of them are missing: not "use the same gene
    # identifiers".
    uncounted = ref.copy()
    uncounted.X = sparse.csr_matrix(ref.X.multiply(np.arange(ref.n_vars) >= 55))
    with pytest.raises(ValueError, match="share 5 genes.*share 60 gene names, but the ref.*55"):
        dv.model.SpatialImputer.from_reference(spatial, reference=uncounted, labels_key="cluster")
    with pytest.raises(ValueError, match="nothing to impute"):
        dv.model.SpatialImputer.from_reference(ref.copy(), reference=ref, labels_key="cluster")
    for args in ((spatial, ref.to_df()), (spatial.to_df(), ref)):  # 'no attribute var_names'
        with pytest.raises(TypeError, match="must be an AnnData; got DataFrame"):
            dv.model.SpatialImputer.from_reference(*args, labels_key="cluster")
    with pytest.raises(ValueError, match="design must be one of"):
        dv.model.SpatialImputer.from_reference(spatial, reference=ref, design="magic")
    with pytest.raises(ValueError, match="profiles must be one of .'neighbours', 'type'."):
        dv.model.SpatialImputer.from_reference(spatial, reference=ref, profiles="cells")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0; got 0"):
        dv.model.SpatialImputer.from_reference(
            spatial, reference=ref, labels_key="cluster", temperature=0
        )
    thirty = spatial[:, :30].copy()
    thirty.var["highly_variable"] = True
    with pytest.warns(UserWarning, match=r"share only 30 genes.*spots holds a subset of its"):
        dv.model.SpatialImputer.from_reference(thirty, reference=ref, labels_key="cluster")
    # torch's "negative dimension" or "empty(): argument 'size'" named no argument.
    for name, bad in (("n_latent", -1), ("n_latent", 2.5), ("n_hidden", 0), ("n_layers", "2")):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            dv.model.SpatialImputer.from_reference(
                spatial, reference=ref, labels_key=None, design="latent", **{name: bad}
            )
    with pytest.raises(ValueError, match=r"dropout_rate must lie in \[0, 1\)"):
        dv.model.SpatialImputer.from_reference(
            spatial, reference=ref, labels_key="cluster", dropout_rate=1.5
        )
    for bad in (float("nan"), float("inf")):  # built, then "loss became nan: lower the rate"
        with pytest.raises(ValueError, match="technology_sd must be a finite number > 0"):
            dv.model.SpatialImputer.from_reference(
                spatial, reference=ref, labels_key="cluster", technology_sd=bad
            )
    # The advice was "pass train_size < 1", which then failed with "got multiple values for
    # keyword argument 'train_size'".
    model = dv.model.SpatialImputer.from_reference(spatial, reference=ref, labels_key="cluster")
    wrongs = ({"restore_best": True}, {"early_stopping": True}, {"train_size": 0.9})
    for wrong in (*wrongs, {"early_stopping_patience": 5}):  # patience ignored, without a word
        with pytest.raises(ValueError, match=f"holds none out for validation, so {[*wrong][0]}"):
            model.train(max_epochs=1, **wrong)
    with pytest.raises(ValueError, match="holds none out for validation, so validation_size"):
        model.train(max_epochs=1, validation_size=0.1)
    # Replaced by False without a word: "False" (or "True") was taken.
    for name, bad in (("early_stopping", "False"), ("restore_best", "True")):
        with pytest.raises(ValueError, match=rf"^{name} must be True.* got {bad!r}\.$"):
            model.train(max_epochs=1, **{name: bad})
    model.train(max_epochs=1, validation_size=0.0)  # no spot held out: what it does anyway
    assert model.history["elbo_train"].shape[0] == 1


def test_a_reference_read_from_disk_builds_the_same_model(pair, tmp_path):
    """A read_lazy (or backed) reference: "setting an array element with a sequence"."""
    spatial, ref, _ = pair
    path = tmp_path / "ref.h5ad"
    on_disk = ref.copy()
    on_disk.layers.clear()  # counts in X, read from disk
    on_disk.write_h5ad(path)
    lazy = dv.read_lazy(path)
    for cls in (dv.model.SpatialImputer, dv.model.NMFDeconv):
        models = []
        for reference in (lazy, ref):
            scvi.settings.seed = 0
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="spots and reference share only 60")
                models.append(
                    cls.from_reference(spatial.copy(), reference=reference, labels_key="cluster")
                )
        from_disk, in_memory = models
        for key, value in in_memory.module.state_dict().items():
            np.testing.assert_array_equal(from_disk.module.state_dict()[key].numpy(), value.numpy())


def test_results_in_adata_and_user_data_unchanged(pair, fitted, tmp_path):
    spatial, _, truth = pair
    user = spatial.copy()
    dv.model.SpatialImputer.from_reference(user, reference=pair[1], labels_key="cluster")
    assert list(user.obs.columns) == [] and user.n_vars == spatial.n_vars  # left as it was
    keys = fitted.write_to_adata(user)
    # What NMFDeconv writes too (it wrote the imputed genes alone), the imputed genes first.
    assert keys == ["obsm/imputed", "obsm/proportions", "obs/cell_abundance"]
    pd.testing.assert_frame_equal(user.obsm["proportions"], fitted.get_proportions(user))
    np.testing.assert_array_equal(user.obs["cell_abundance"], fitted.get_abundance(user))
    stored = user.obsm["imputed"]
    assert list(stored.columns) == list(truth.columns) and stored.index.equals(user.obs_names)
    user.write_h5ad(tmp_path / "spots.h5ad")
    back = ad.read_h5ad(tmp_path / "spots.h5ad").obsm["imputed"]
    np.testing.assert_allclose(back.to_numpy(), stored.to_numpy())
    # The same spots in another order get each spot's own values, by name.
    backwards = user[::-1].copy()
    fitted.write_to_adata(backwards)
    pd.testing.assert_frame_equal(backwards.obsm["imputed"], stored.iloc[::-1])
    # Some of the spots (a region): each gets its own values.
    region = user[::3].copy()
    fitted.write_to_adata(region)
    pd.testing.assert_frame_equal(region.obsm["imputed"], stored.iloc[::3])
    other = user[:5].copy()
    other.obs_names = ["elsewhere", *other.obs_names[1:]]
    # A spot it was not fitted on (one filtered out before training) gets missing values.
    with pytest.warns(UserWarning, match=r"1 of the 5 spots .* \(e.g. \['elsewhere'\]\)"):
        fitted.write_to_adata(other)
    assert other.obsm["imputed"].iloc[0].isna().all()
    pd.testing.assert_frame_equal(other.obsm["imputed"].iloc[1:], stored.iloc[1:5])


@pytest.mark.parametrize(
    ("design", "profiles"), [("deconvolution", "neighbours"), ("deconvolution", "type"),
                             ("latent", None)],
)  # fmt: skip
def test_save_load_round_trip(pair, fitted, design, profiles, tmp_path):
    spatial, ref, _ = pair
    if profiles == "neighbours":
        model = fitted
    else:
        model = dv.model.SpatialImputer.from_reference(
            spatial, reference=ref, labels_key="cluster", design=design,
            profiles=profiles or "neighbours",
        )  # fmt: skip
        model.train(max_epochs=3, **TRAIN)
    model.save(tmp_path / "imputer")
    # The spots as the user has them (another gene order) are matched to the model's genes.
    reordered = spatial[:, ::-1].copy()
    loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", reordered)
    assert loaded.design_ == design and loaded.profiles_ == profiles
    assert loaded.train_args_ == model.train_args_ and model.train_args_["max_epochs"] > 0
    pd.testing.assert_frame_equal(loaded.impute(), model.impute())
    assert list(reordered.obs.columns) == []
    with pytest.raises(ValueError, match="lacks 1 of the model's"):
        dv.model.SpatialImputer.load(tmp_path / "imputer", spatial[:, 1:].copy())
    # Gene names the model does not read may repeat (a file read afresh, symbols repeated):
    # pandas' "Reindexing only valid with uniquely valued Index objects" before.
    extra = ad.AnnData(sparse.hstack([spatial.X, spatial.X[:, :2]]).tocsr(), obs=spatial.obs)
    extra.var_names = [*spatial.var_names, "Dup", "Dup"]
    loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", extra)
    pd.testing.assert_frame_equal(loaded.impute(), model.impute())
    extra.var_names = [*spatial.var_names, spatial.var_names[0], "Dup"]
    with pytest.raises(ValueError, match=r"repeats 1 of the model's spot genes \(e.g. \['gene_0"):
        dv.model.SpatialImputer.load(tmp_path / "imputer", extra)
    # Shuffled spots: a per-spot fit is put back in its order by name (it had read each row's
    # parameters for whichever spot sat there); the latent design maps any spots as they are.
    shuffled = spatial[np.random.default_rng(0).permutation(spatial.n_obs)].copy()
    if design == "deconvolution":
        with pytest.warns(UserWarning, match="150 spots in another order"):
            loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", shuffled)
        # rows in the order of the spots given, as the latent design's (the fitted order was
        # returned, misaligned with shuffled's rows)
        pd.testing.assert_frame_equal(loaded.impute(), model.impute().loc[shuffled.obs_names])
        proportions = loaded.get_proportions()
        assert proportions.index.equals(shuffled.obs_names)
        pd.testing.assert_frame_equal(proportions, model.get_proportions().loc[shuffled.obs_names])
        loaded.write_to_adata()  # into the spots given to load, not the model's sorted copy
        pd.testing.assert_frame_equal(
            shuffled.obsm["imputed"].loc[spatial.obs_names], model.impute()
        )
        with pytest.raises(ValueError, match=r"each of its 150 spots.*got 100 spots"):
            dv.model.SpatialImputer.load(tmp_path / "imputer", spatial[:100].copy())
    else:
        loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", shuffled)
        pd.testing.assert_frame_equal(loaded.impute(), model.impute().loc[shuffled.obs_names])
        # Spots it was not fitted on: its encoder maps them (impute raised the per-spot
        # NMFDeconv error "inference='per_spot' fits proportions for the training spots").
        other = spatial[:40].copy()
        other.obs_names = [f"new_{i}" for i in range(40)]
        loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", other)
        np.testing.assert_allclose(loaded.impute().to_numpy(), model.impute()[:40].to_numpy())
        # ... which the model in memory sends there, not to "fitted per spot".
        with pytest.raises(ValueError, match=r"other spots, save the model and load it onto"):
            model.write_to_adata(other)


def test_the_latent_design_saves_its_reference_once(pair, tmp_path):
    """The latent design's reference cells were saved twice, in init_params_ (load rebuilds
    the model from them) and as the module's reference_counts: a model file twice the
    reference's size. A file saved so still loads."""
    import torch

    from deltavae.model._saved import weights_digest

    spatial, ref, _ = pair
    model = dv.model.SpatialImputer.from_reference(
        spatial[:40].copy(), reference=ref[:60].copy(), design="latent", n_hidden=8
    )
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "m")
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=False)
    assert "reference_counts" not in saved["model_state_dict"]
    # As saved before: the reference in the state dict (and in its checksums) too.
    saved["model_state_dict"]["reference_counts"] = model.module.reference_counts.clone()
    state = {k: v for k, v in saved["model_state_dict"].items() if k != "pyro_param_store"}
    saved["attr_dict"]["weights_digest_"] = weights_digest(state)
    torch.save(saved, tmp_path / "m" / "model.pt")
    loaded = dv.model.SpatialImputer.load(tmp_path / "m", spatial[:40].copy())
    pd.testing.assert_frame_equal(loaded.impute(), model.impute())


@pytest.mark.parametrize("design", ["deconvolution", "neighbours", "latent", "latent_uncounted"])
def test_torch_elbo_is_pyros_trace_elbo(design):
    """negative_elbo, which training uses, gives Pyro's Trace_ELBO of model and guide from the
    same draws (the reference minibatch of the latent design included): value and gradients;
    at full KL weight its logged terms add up to the objective."""
    import torch

    from deltavae.module import ImputerDeconvolutionModule, ImputerLatentModule

    torch.manual_seed(0)
    visible = torch.tensor([0, 2, 5, 7, 9])
    cells = torch.poisson(torch.rand(30, 12) * 5)
    if design.startswith("latent"):
        module = ImputerLatentModule(20, cells, visible, n_hidden=16)
        module.counted[1] = design == "latent"  # a panel gene no spot counts: not observed
    else:
        extra = {}
        if design == "neighbours":
            extra = {"cells": cells, "cell_states": torch.arange(30) % 3}
        module = ImputerDeconvolutionModule(20, torch.rand(3, 12) + 0.1, visible, **extra)
    with torch.no_grad():  # away from the start, where some gradients are zero
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    module.n_obs = 20
    x = torch.poisson(torch.rand(8, 5) * 8)
    per_spot, terms, _ = assert_torch_elbo_is_pyros(module, (x, torch.arange(4, 12)), 0.3)
    assert set(terms) == {"reconstruction_loss", "kl_local"}
    # At full KL weight the objective is the negative ELBO, the sum of the logged terms (the
    # helper drew from seed 1).
    torch.manual_seed(1)
    full, _ = module.negative_elbo(x, torch.arange(4, 12), kl_weight=1.0)
    torch.testing.assert_close(full, terms["reconstruction_loss"] + terms["kl_local"])


def test_neighbour_cells_need_their_states():
    from deltavae.model._imputer_reference import neighbour_cells

    genes = pd.Index(["a", "b"])
    cells = pd.DataFrame(np.ones((3, 2)), columns=genes)
    with pytest.raises(ValueError, match="cells need cell_states"):  # Index(None) TypeError
        neighbour_cells(cells, None, genes, pd.Index(["s0"]))


def test_measured_genes_without_reference_counts_are_left_out(pair):
    """Spot genes the reference shares but never counts: no state explains them, and they
    skewed the proportions (TV 0.92 from 3 such genes on hippocampus Visium)."""
    spatial, ref, _ = pair
    silent = list(spatial.var_names[:3])
    counts = sparse.lil_matrix(ref.X)
    counts[:, ref.var_names.get_indexer(silent)] = 0
    ref = ad.AnnData(sparse.csr_matrix(counts), obs=ref.obs, var=ref.var)
    model = dv.model.SpatialImputer.from_reference(
        spatial, reference=ref, labels_key="cluster", profiles="type"
    )
    assert not model.adata.var_names.isin(silent).any()
    assert model.adata.n_vars == spatial.n_vars - 3
    # Nor are they imputed: the spots measured them (they came out ~1e-7 in obsm["imputed"]).
    assert list(model.reference_genes_) == [g for g in ref.var_names if g not in silent]
    # A panel the reference holds but partly never counts (hypothalamus MERFISH): nothing left.
    panel = ad.AnnData(ref.X, obs=pd.DataFrame(index=ref.obs_names), var=ref.var)
    with pytest.raises(ValueError, match="already measure every gene the reference counts"):
        dv.model.SpatialImputer.from_reference(panel, reference=ref, labels_key="cluster")


def test_spots_normalized_in_place_after_training_are_refused(pair):
    """sc.pp.normalize_total / log1p on the model's spots after training (its own AnnData in
    scvi-tools' way, setup_anndata on the user's spots): impute read the changed values as
    counts (the latent design's imputations 200 times off), as training refused them."""
    import scanpy as sc

    spatial, ref, _ = pair
    model = dv.model.SpatialImputer.from_reference(
        spatial, reference=ref, labels_key="cluster", design="latent"
    )
    model.train(max_epochs=2, **TRAIN)
    # A switch given as text: reference="False" read the reference cells' latents.
    for name in ("give_mean", "return_dist", "reference"):
        with pytest.raises(ValueError, match=rf"^{name} must be True or False, got 'False'\.$"):
            model.get_latent_representation(**{name: "False"})
    sc.pp.normalize_total(model.adata, target_sum=1e4)
    sc.pp.log1p(model.adata)
    for call in (model.impute, model.write_to_adata):
        with pytest.raises(ValueError, match="no longer holds raw counts"):
            call()


def test_write_to_adata_by_default_writes_into_the_spots_given_to_from_reference(pair):
    # from_reference reads a copy of the spots (genes reduced to the shared ones); results
    # must still go to the user's AnnData, as after load, not only into the model's copy.
    spatial, ref, truth = pair
    user = spatial.copy()
    model = dv.model.SpatialImputer.from_reference(user, reference=ref, labels_key="cluster")
    model.train(max_epochs=2, **TRAIN)
    assert model.write_to_adata() == ["obsm/imputed", "obsm/proportions", "obs/cell_abundance"]
    assert list(user.obsm["imputed"].columns) == list(truth.columns)
    assert "proportions" in user.obsm and "cell_abundance" in user.obs
    assert user.obsm["imputed"].index.equals(user.obs_names)


def _imputer_of_backed_spots(pair, tmp_path, epochs):
    """A SpatialImputer built from the pair's spots read back from an .h5ad file in backed
    mode and trained ``epochs``; returns it and the backed spots."""
    spatial, ref, _ = pair
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    backed = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    model = dv.model.SpatialImputer.from_reference(backed, reference=ref, labels_key="cluster")
    model.train(max_epochs=epochs, **TRAIN)
    return model, backed


def test_a_model_built_from_backed_spots_pickles(pair, tmp_path):
    # Its results go into the backed spots given, whose open file handle cannot be pickled:
    # the pickle leaves that write target out, as it held before (the model reads a copy).
    import pickle

    _, _, truth = pair
    model, _ = _imputer_of_backed_spots(pair, tmp_path, epochs=2)
    copy = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(copy.impute(), model.impute())
    assert copy.write_to_adata() == ["obsm/imputed", "obsm/proportions", "obs/cell_abundance"]
    assert list(copy.adata.obsm["imputed"].columns) == list(truth.columns)


def test_write_to_adata_names_backed_spots_deleted_since_from_reference(pair, tmp_path):
    # from_reference keeps the backed spots given as write_to_adata's target (c089256): once
    # their file was deleted, write_to_adata() failed in h5py ("Unable to synchronously open
    # file"), naming neither the spots nor a fix.
    import os

    spatial, _, _ = pair
    model, backed = _imputer_of_backed_spots(pair, tmp_path, epochs=1)
    backed.file.close()
    os.remove(tmp_path / "spots.h5ad")
    with pytest.raises(FileNotFoundError, match=r"spots\.h5ad' no longer exists .* pass that"):
        model.write_to_adata()
    sub = spatial[:5].copy()  # results still go into an AnnData passed
    assert model.write_to_adata(sub)[0] == "obsm/imputed" and sub.obsm["imputed"].shape[0] == 5


def test_a_model_built_from_backed_spots_with_obsm_pickles(pair, tmp_path):
    # anndata's to_memory of a backed view keeps obsm as views into the file's AnnData, so the
    # model's in-memory copy of the spots held the file handle and could not be pickled.
    import pickle

    spatial, ref, _ = pair
    spots = spatial.copy()
    spots.obsm["spatial"] = np.arange(2 * spots.n_obs, dtype=float).reshape(-1, 2)
    spots.write_h5ad(tmp_path / "spots.h5ad")
    backed = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    model = dv.model.SpatialImputer.from_reference(backed, reference=ref, labels_key="cluster")
    model.train(max_epochs=2, **TRAIN)
    assert type(model.adata.obsm["spatial"]) is np.ndarray
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.adata.obsm["spatial"], spots.obsm["spatial"])


def test_latent_design_writes_its_spots_latent(pair, monkeypatch):
    """write_to_adata of the latent design wrote the imputed genes only, no latent (ZINBVAE
    writes obsm['X_zinbvae']); the keys returned are what it writes, in the spots' order."""
    spatial, ref, _ = pair
    model = dv.model.SpatialImputer.from_reference(
        spatial, reference=ref, labels_key=None, design="latent"
    )
    model.train(max_epochs=2, **TRAIN)
    target = spatial[::-1].copy()
    reads = []  # the imputed genes and the latents from one read of the spots (was two)
    counts = type(model)._counts
    monkeypatch.setattr(type(model), "_counts", lambda self: reads.append(1) or counts(self))
    keys = model.write_to_adata(target)
    assert keys == ["obsm/imputed", "obsm/X_spatialimputer"] and len(reads) == 1
    z = model.get_latent_representation(target)
    np.testing.assert_array_equal(target.obsm["X_spatialimputer"], z)
    assert z.shape == (spatial.n_obs, model.module.n_latent)
    keys = model.write_to_adata(target, key_added="ref2")
    assert keys == ["obsm/ref2_imputed", "obsm/X_ref2_spatialimputer"]
    assert all(k.split("/")[1] in target.obsm for k in keys)


def test_genes_argument_names_what_it_takes(pair, fitted):
    """genes=5 failed with "'int' object is not iterable", a mask or positions were read as the
    genes 'True' and '70' ("not reference genes: ['True', 'True', ...]"), genes=[] wrote an
    empty obsm["imputed"], and 'GENE_70' asked of a reference holding 'gene_70' gave no hint,
    nor did the typo 'gene_70x'."""
    spatial, ref, _ = pair
    with pytest.raises(TypeError, match="genes takes reference gene names .*; got 5"):
        fitted.impute(genes=5)
    with pytest.raises(TypeError, match="got bool values such as True.*reference_genes_"):
        fitted.impute(genes=np.ones(ref.n_vars, bool))
    with pytest.raises(TypeError, match="got int values such as 70"):
        fitted.impute(genes=[70, 71])
    with pytest.raises(ValueError, match="genes is empty; pass the reference genes"):
        fitted.write_to_adata(spatial.copy(), genes=[])
    with pytest.raises(KeyError, match=r"Ignoring case, 1 of them .*'GENE_70' is 'gene_70'"):
        fitted.impute(genes=["GENE_70", "gene_71"])
    with pytest.raises(KeyError, match="Check their spelling;"):
        fitted.impute(genes=["Nope"])
    # a typo is given the closest reference genes (no hint before)
    with pytest.raises(
        KeyError, match=r"Check their spelling \('gene_70x': did you mean 'gene_70'"
    ):
        fitted.impute(genes=["gene_70x"])
    assert list(fitted.impute(genes=np.array(["gene_71", "gene_70"])).columns) == [
        "gene_71",
        "gene_70",
    ]


def test_spot_genes_matching_reference_genes_only_ignoring_case_are_warned(pair):
    """Spot genes spelt 'GENE_0' against the reference's 'gene_0' were silently left out of the
    fit, and the reference's genes imputed as if the spots had not measured them."""
    spatial, ref, _ = pair
    spots = spatial.copy()
    spots.var_names = [g.upper() if i < 5 else g for i, g in enumerate(spatial.var_names)]
    with pytest.warns(UserWarning, match=r"5 of the spots' genes .* \(e.g. 'GENE_0' and the re"):
        model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    assert model.adata.n_vars == spatial.n_vars - 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same names: nothing to say
        dv.model.SpatialImputer.from_reference(spatial, reference=ref, labels_key="cluster")


def test_number_arguments_given_as_strings_are_named(pair):
    """temperature='0.1' failed with "'>' not supported between instances of 'str' and 'int'",
    min_shared_genes='10' with "'<' not supported ...", seed='0' and 1.5 in scikit-learn and
    numpy: none named the argument."""
    spatial, ref, _ = pair
    build = functools.partial(
        dv.model.SpatialImputer.from_reference, spatial, reference=ref, labels_key="cluster"
    )
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0; got '0.1'"):
        build(temperature="0.1")
    with pytest.raises(ValueError, match=r"technology_sd must be a finite number > 0; got True"):
        build(technology_sd=True)
    with pytest.raises(ValueError, match=r"min_shared_genes must be an integer; got '10'"):
        build(min_shared_genes="10")
    # scikit-learn's "The 'random_state' parameter of KMeans must be ..." named neither.
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*32 - 1\] or None"):
        build(labels_key=None, n_states=3, seed="0")
    # 2**32 passed the check, then failed in TruncatedSVD ("random_state ... in the range
    # [0, 4294967295]"); cross_validate's in numpy ("Seed must be between 0 and 2**32 - 1").
    with pytest.raises(ValueError, match=r"^seed must be an integer .* got 4294967296\.$"):
        build(labels_key=None, n_states=3, seed=2**32)
    # numpy's "1.5 cannot be used to seed a numpy.random.RandomState instance".
    for seed in (1.5, 2**32):
        with pytest.raises(ValueError, match=rf"^seed must be an integer .* got {seed}\.$"):
            dv.model.SpatialImputer.cross_validate(spatial, ref, labels_key="cluster", seed=seed)


class _ReversedSet(collections.abc.Set):
    """A set iterating in a fixed order (a built-in set's changes with PYTHONHASHSEED)."""

    def __init__(self, items):
        self._items = list(items)

    def __contains__(self, item):
        return item in self._items

    def __iter__(self):
        return iter(self._items[::-1])

    def __len__(self):
        return len(self._items)


def test_a_set_of_genes_comes_back_in_the_reference_order(fitted):
    """genes={...} gave its columns in the set's iteration order, another each session, so
    obsm["imputed"] of the same call differed from run to run."""
    genes = _ReversedSet(["gene_61", "gene_70", "gene_75"])
    assert list(fitted.impute(genes=genes).columns) == ["gene_61", "gene_70", "gene_75"]
    with pytest.raises(KeyError, match="'Nope'"):
        fitted.impute(genes={"gene_61", "Nope"})


def test_spot_read_outs_read_the_spots_once_and_never_dense(pair, fitted, monkeypatch):
    """get_proportions and get_abundance found the spots without counts from a dense float64
    copy of every spot (most of a call's time: 22 of 26 ms for 30,000 spots x 200 genes),
    and write_to_adata read the spots three times (impute, then each of those again). The
    totals are summed as stored, and write_to_adata reads the spots once."""
    from deltavae.model import _spots

    spatial, _, _ = pair
    expected = fitted.get_proportions(), fitted.get_abundance()
    written = spatial.copy()
    fitted.write_to_adata(written)

    def refused(x, *args):
        raise AssertionError(f"a dense copy of {x.shape[0]} x {x.shape[1]} counts")

    monkeypatch.setattr(_spots, "dense", refused)
    pd.testing.assert_frame_equal(fitted.get_proportions(), expected[0])
    pd.testing.assert_series_equal(fitted.get_abundance(), expected[1])
    monkeypatch.undo()
    reads = []
    counts = type(fitted)._counts
    monkeypatch.setattr(type(fitted), "_counts", lambda self: reads.append(1) or counts(self))
    again = spatial.copy()
    fitted.write_to_adata(again)
    assert len(reads) == 1
    for key in ("imputed", "proportions"):
        pd.testing.assert_frame_equal(again.obsm[key], written.obsm[key])
    np.testing.assert_array_equal(again.obs["cell_abundance"], written.obs["cell_abundance"])


@pytest.mark.filterwarnings("ignore:.*genes in .* are zero in every")
@pytest.mark.filterwarnings("ignore:10 of the spots' .* genes are 0 in every spot")
def test_panel_genes_no_spot_counts_change_nothing(pair):
    """Panel genes that no spot counts (a probe the platform never detects) were read by the
    deconvolution as zeros in every spot: they skewed the proportions towards the states
    that do not express them (mean TV to the truth 0.12 -> 0.16 with 10 such genes of 60),
    and the neighbour correlations and profile scales away from the cells that do. Left out
    of the likelihood, the correlations and the scales, the fit is that without them."""
    spatial, ref, _ = pair
    silent = list(spatial.var_names[-10:])
    zeros = spatial.copy()
    zeros.X = sparse.csr_matrix(zeros.X.toarray() * ~spatial.var_names.isin(silent))
    hidden = list(ref.var_names[-N_HIDDEN:])
    results = []
    for spots in (spatial[:, :-10].copy(), zeros):
        scvi.settings.seed = 0
        model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
        model.train(max_epochs=20, **TRAIN)
        results.append((model.get_proportions(), model.impute(hidden), model.get_abundance()))
    for without, with_zeros in zip(*results, strict=True):
        np.testing.assert_allclose(with_zeros, without, rtol=1e-5, atol=1e-7)
    model.module.double()  # the cells' correlations of the counted genes, remade in double
    np.testing.assert_allclose(model.impute(hidden), results[1][1], rtol=1e-5)


def test_a_cell_type_of_few_reference_cells_is_warned(pair):
    """A type of one reference cell (a profile of one cell) took 19% of every pseudo-spot
    on average, none of which held it, without a word (NMFDeconv warned)."""
    spatial, ref, _ = pair
    ref = ref.copy()
    labels = ref.obs["cluster"].astype(str).to_numpy()
    labels[0] = "rare"
    ref.obs["cluster"] = pd.Categorical(labels)
    for profiles in ("type", "neighbours"):
        with pytest.warns(UserWarning, match=r"fewer than 5 reference cells: \['rare'\]; their pr"):
            dv.model.SpatialImputer.from_reference(
                spatial, reference=ref, labels_key="cluster", profiles=profiles
            )


def test_a_state_whose_cells_count_only_uncounted_panel_genes_keeps_its_mean_profile():
    """Neighbour profiles over the genes some spot counts: a state whose cells express none
    of them has no neighbours to weigh, and keeps its mean profile (it imputed nothing)."""
    from deltavae.module import ImputerDeconvolutionModule

    profiles = torch.tensor([[5.0, 5.0, 0.0, 1.0], [0.0, 0.0, 4.0, 6.0]])
    cells = torch.tensor([[6.0, 4.0, 0.0, 1.0], [4.0, 6.0, 0.0, 1.0], [0.0, 0.0, 4.0, 6.0]])
    module = ImputerDeconvolutionModule(
        2, profiles, torch.tensor([0, 1, 2]), cells=cells, cell_states=torch.tensor([0, 0, 1])
    )
    module.counted.copy_(torch.tensor([True, True, False]))  # no spot counts gene 2
    with torch.no_grad():
        module.log_concentration.copy_(torch.log(torch.tensor([[1.0, 1.0], [1.0, 3.0]])))
        module.log_abundance.zero_()
    x = torch.tensor([[5.0, 5.0, 0.0], [2.0, 3.0, 0.0]])
    expected = module.expected(torch.arange(2), x)
    with torch.no_grad():
        p = module.proportions()
        unmeasured = expected[:, 3] / module.technology()[3]
    # State 0: its cells' share of gene 3 (0.1) times its counted total (10); state 1: its
    # mean profile (6).
    np.testing.assert_allclose(unmeasured, p[:, 0] * 1.0 + p[:, 1] * 6.0, rtol=1e-5)


def test_a_state_silent_in_the_spots_genes_is_refused(pair):
    """A reference state expressing none of the spots' genes took the fitted prior's share of
    every spot (3%), and its genes were imputed from it, without a word (NMFDeconv refuses
    such a type)."""
    spatial, ref, _ = pair
    counts = np.zeros((6, ref.n_vars))
    counts[:, ~ref.var_names.isin(spatial.var_names)] = 5.0
    obs = pd.DataFrame({"cluster": ["blank"] * 6}, index=[f"blank_{i}" for i in range(6)])
    blank = ad.AnnData(sparse.csr_matrix(counts), obs=obs, var=ref.var[[]])
    both = ad.concat([ref, blank])
    both.obs["cluster"] = both.obs["cluster"].astype(str)
    with pytest.raises(ValueError, match=r"states \['blank'\] are \(almost\) silent in the 60"):
        dv.model.SpatialImputer.from_reference(spatial, reference=both, labels_key="cluster")


def test_reference_cells_without_counts_make_no_state_of_their_own():
    """Clustering an unlabelled reference put its cells without counts in a state of their
    own, silent in every gene (its share of each spot the prior's): they join a state."""
    from deltavae.model._imputer_reference import cluster_states

    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=3, seed=0)
    counts = cells.X.toarray()
    counts[:10] = 0
    states = cluster_states(sparse.csr_matrix(counts), 3)
    totals = pd.Series(counts.sum(axis=1)).groupby(np.asarray(states)).sum()
    assert (totals > 0).all() and len(totals) == 3


def test_cross_validate_given_file_names_says_how_to_read_them(pair):
    """cross_validate('spots.h5ad', ...) answered 'spots must be an AnnData; got str.', where
    from_reference says how to read the file; both now do."""
    spatial, ref, _ = pair
    with pytest.raises(TypeError, match=r"got the path 'spots.h5ad'\. Read it first: .*cross_va"):
        dv.model.SpatialImputer.cross_validate("spots.h5ad", ref, labels_key="cluster")
    with pytest.raises(TypeError, match=r"reference must be an AnnData .*got the path 'r.h5ad'"):
        dv.model.SpatialImputer.cross_validate(spatial, "r.h5ad", labels_key="cluster")


@pytest.mark.parametrize("mc_samples", [0, "a"])
def test_latent_reads_refuse_a_count_of_draws_that_is_not_one_or_more(pair, mc_samples):
    """mc_samples is unread (q is Gaussian) and so was taken as "a" or 0 without a word."""
    spatial, ref, _ = pair
    model = dv.model.SpatialImputer.from_reference(
        spatial[:40].copy(), reference=ref[:60].copy(), design="latent", n_hidden=8
    )
    with pytest.raises(ValueError, match=r"mc_samples is a number of draws, an integer from 1"):
        model.get_latent_representation(mc_samples=mc_samples)
