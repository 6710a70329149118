"""Every method of predict_perturbation gives a count model's cells on one scale: expected
counts in X, whole counts in layers["counts"], so that anndata.concat with real counts and
scanpy's normalize_total / log1p treat real and predicted cells alike (model/_perturbation.py,
_response_data.py, _latent_shift.py)."""

import warnings

import anndata
import numpy as np
import pytest
import scanpy as sc
import scvi

import deltavae as dv

SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}
METHODS = ("translate", "latent_shift", "nearest_response")


@pytest.fixture(scope="module")
def trained():
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=2, n_conditions=2, seed=0, condition_fold=4.0
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=80, enable_progress_bar=False)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    return model, adata, ctrl


def _library(cells) -> np.ndarray:
    return np.asarray(cells.X.sum(1)).ravel()


def test_nearest_response_gives_counts_in_x_like_the_other_methods(trained):
    """nearest_response put log1p(CP10K) values in X, and no layers["counts"], where
    translate and latent_shift put expected counts and whole counts: concatenated with the
    real cells and normalized, its cells were log-transformed twice, with nothing said."""
    model, _, ctrl = trained
    library = _library(ctrl)
    for method in METHODS:
        pred = model.predict_perturbation(ctrl, "stim", method=method, seed=0)
        counts = pred.layers["counts"]
        assert counts.shape == pred.shape and (counts >= 0).all(), method
        np.testing.assert_array_equal(counts, np.round(counts), err_msg=method)
        assert pred.uns["prediction"]["X"].startswith(("expected counts", "each cell's")), method
        # Where a user looks (pred.uns): which matrix to rank genes on against real cells.
        assert "layers['counts'], the matrix to test genes on" in pred.uns["prediction"]["X"]
        # On the counts' scale: each cell's total near its own library size (a sum of logs
        # over 30 genes is far below it).
        ratio = np.asarray(pred.X.sum(1)).ravel() / library
        assert 0.3 < np.median(ratio) < 3, (method, np.median(ratio))
    nearest = model.predict_perturbation(ctrl, "stim", method="nearest_response", seed=0)
    # The log-normalized prediction, the scale the responses add on, kept in a named layer;
    # X is its inverse at each cell's library size.
    logs = nearest.layers["log_normalized"]
    np.testing.assert_allclose(
        dv.metrics.log_normalize(nearest.X, library_size=library), logs, atol=1e-4
    )
    # The whole counts round X without bias, and follow the seed; X draws nothing.
    assert abs(nearest.layers["counts"].sum() / nearest.X.sum() - 1) < 0.02
    again = model.predict_perturbation(ctrl, "stim", method="nearest_response", seed=0)
    other = model.predict_perturbation(ctrl, "stim", method="nearest_response", seed=1)
    np.testing.assert_array_equal(again.layers["counts"], nearest.layers["counts"])
    np.testing.assert_array_equal(other.X, nearest.X)
    assert not np.array_equal(other.layers["counts"], nearest.layers["counts"])


def test_concatenated_with_real_cells_every_prediction_normalizes_like_them(trained):
    """The user's next step, scGen's: concat real ctrl, real stim and the prediction, then
    sc.pp.normalize_total and log1p. nearest_response's X, already log1p(CP10K), was
    normalized again: the R² of its change from control fell from 0.998 to 0.07, its gene
    means further from the real stimulated cells' than the control cells' are."""
    model, adata, ctrl = trained
    stim = adata[adata.obs["condition"] == "stim"].copy()
    for method in METHODS:
        pred = model.predict_perturbation(ctrl, "stim", method=method, seed=0)
        both = anndata.concat(
            {"ctrl": ctrl, "stim": stim, "pred": pred}, label="kind", index_unique="-"
        )
        sc.pp.normalize_total(both, target_sum=1e4)
        sc.pp.log1p(both)
        means = {
            kind: np.asarray(both[both.obs["kind"] == kind].X.mean(0)).ravel()
            for kind in ("ctrl", "stim", "pred")
        }
        assert 0.5 < means["pred"].max() / means["stim"].max() < 2, method
    # The observed cells plus the observed change: the real change, after two epochs too.
    change, real = means["pred"] - means["ctrl"], means["stim"] - means["ctrl"]
    assert np.corrcoef(change, real)[0, 1] ** 2 > 0.9
    assert np.abs(means["pred"] - means["stim"]).mean() < 0.5 * np.abs(real).mean()


def test_zinbvae_nearest_response_gives_counts_in_x_too():
    """ZINBVAE reads the same nearest_response: its X was log-normalized as well."""
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=2, n_conditions=2, seed=1
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=16)
    vae.train(max_epochs=2, batch_size=60, enable_progress_bar=False)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    pred = vae.predict_perturbation(
        ctrl, "stim", "nearest_response", condition_key="condition", balance_key="cell_type"
    )
    library = _library(ctrl)
    np.testing.assert_allclose(
        dv.metrics.log_normalize(pred.X, library_size=library),
        pred.layers["log_normalized"],
        atol=1e-4,
    )
    assert sorted(pred.layers) == ["counts", "log_normalized"]


def test_a_model_reading_counts_from_a_layer_gives_its_counts_there_and_says_x_differs():
    """scanpy's layout, X log-normalized and the counts in a layer the model was set up on:
    the prediction's X held expected counts and its whole counts were in layers["counts"]
    alone, so anndata.concat of real and predicted cells mixed log values and counts in X
    with no word, and dropped both layers (the real cells' "raw", the prediction's "counts")."""
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=2, n_conditions=2, seed=2
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    adata.layers["raw"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    dv.model.CGMDVAE.setup_anndata(
        adata, layer="raw", condition_key="condition", labels_key="cell_type"
    )
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=60, enable_progress_bar=False)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    stim = adata[adata.obs["condition"] == "stim"].copy()
    for method in METHODS:
        with pytest.warns(UserWarning, match=r"adata.X holds values that are not counts .*"):
            pred = model.predict_perturbation(ctrl, "stim", method=method, seed=0)
        np.testing.assert_array_equal(pred.layers["raw"], pred.layers["counts"])
        assert pred.layers["raw"] is not pred.layers["counts"]
        both = anndata.concat([ctrl, stim, pred], index_unique="-")
        assert "raw" in both.layers  # the real cells' counts and the prediction's
    with pytest.warns(UserWarning, match=r"layers\['raw'\]"):
        translated = model.translate(ctrl, "stim", seed=0)
    assert "raw" in translated.layers


def _one_response(outlier: int) -> anndata.AnnData:
    """One cell type under two conditions; gene g0 is off in the control cells but for the
    first (``outlier`` counts) and at about 20 counts in the stimulated ones."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(30.0, size=(80, 10)).astype(np.float32)
    counts[:40, 0] = 0
    counts[0, 0] = outlier
    counts[40:, 0] = rng.poisson(20.0, size=40)
    adata = anndata.AnnData(counts)
    adata.var_names = [f"g{i}" for i in range(10)]
    adata.obs["condition"] = ["ctrl"] * 40 + ["stim"] * 40
    adata.obs["cell_type"] = "T"
    return adata


def test_nearest_response_says_when_it_predicts_far_above_the_data():
    """The change of g0 (about +6 on log-normalized counts, measured on control cells without
    it) multiplied the counts of the control cell that had it already by about e^6: 16,000
    expected counts of g0 where no cell has more than 36, without a word. Predictions more than 20
    times a gene's largest value (per 10,000 counts) are counted in a warning."""
    scvi.settings.seed = 0
    adata = _one_response(outlier=30)
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    vae.train(max_epochs=1, batch_size=80, enable_progress_bar=False)
    keys = {"condition_key": "condition", "balance_key": "cell_type"}
    ctrl = adata[:40].copy()
    with pytest.warns(
        UserWarning, match=r"predicts 1 of 40 cells, in 1 gene, more than 20 "
    ) as said:
        pred = vae.predict_perturbation(ctrl, "stim", "nearest_response", **keys)
    assert pred.X[0, 0] > 20 * adata.X[:, 0].max()  # what is warned of
    assert "(e.g. g0: " in str(said[0].message)
    assert "method='latent_shift'" in str(said[0].message)  # ZINBVAE cannot translate
    # The other control cells go to the stimulated cells' level: nothing said.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = vae.predict_perturbation(ctrl[1:], "stim", "nearest_response", **keys)
    assert pred.X[:, 0].max() < 2 * adata.X[:, 0].max()


@pytest.mark.parametrize("method", METHODS)
def test_cells_without_counts_are_said_by_each_method(trained, method):
    """Cells of no counts were predicted without a word, each from no data and all alike
    (totals near 0 under every method), where the setup warns of such cells."""
    model, _, ctrl = trained
    ctrl = ctrl.copy()
    ctrl.X = ctrl.X.toarray() if hasattr(ctrl.X, "toarray") else ctrl.X.copy()
    ctrl.X[[1, 4]] = 0
    keys = {} if method == "translate" else {"condition_key": "condition"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = model.predict_perturbation(ctrl, "stim", method, seed=0, **keys)
    said = [str(w.message) for w in caught if "are all zeros" in str(w.message)]
    assert said == [
        f"2 of the {ctrl.n_obs} cells given to {method} (e.g. {ctrl.obs_names[1]}, "
        f"{ctrl.obs_names[4]}) are all zeros in the genes the model reads: each is predicted "
        "from no data, all of them alike. Leave them out before predicting: "
        "sc.pp.filter_cells(adata, min_counts=1)."
    ]
    np.testing.assert_allclose(pred.X[1], pred.X[4], rtol=1e-5)  # all alike


@pytest.mark.parametrize("method", METHODS)
def test_the_advice_on_cells_without_counts_reads_the_models_genes_alone(trained, method):
    """Cells given with a gene the model does not read, empty in the model's genes but not in
    that one: the advice was scanpy's filter_cells(adata, min_counts=1), which counts every
    gene and kept them. It now judges the model's genes, and running it drops those cells."""
    model, _, ctrl = trained
    x = ctrl.X.toarray() if hasattr(ctrl.X, "toarray") else np.asarray(ctrl.X).copy()
    x[[1, 4]] = 0
    extra = np.full((ctrl.n_obs, 1), 3.0, dtype=x.dtype)
    adata = anndata.AnnData(
        np.hstack([extra, x]), obs=ctrl.obs.copy(), var={"n": range(ctrl.n_vars + 1)}
    )
    adata.var_names = ["other", *ctrl.var_names]
    keys = {} if method == "translate" else {"condition_key": "condition"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_perturbation(adata, "stim", method, seed=0, **keys)
    said = [str(w.message) for w in caught if "are all zeros" in str(w.message)]
    assert len(said) == 1 and "filter_cells" not in said[0], said
    advice = said[0].split("Leave them out before predicting: ")[1].removesuffix(".")
    assert advice == (
        "adata = adata[np.asarray(abs(adata[:, model.adata.var_names].X).sum(1)).ravel() > 0]"
        ".copy()"
    )
    kept = {"adata": adata.copy(), "model": model, "np": np}
    exec(advice, kept)  # the statement runs as written and drops exactly those cells
    assert list(kept["adata"].obs_names) == [
        n for i, n in enumerate(ctrl.obs_names) if i not in (1, 4)
    ]
    scanpy_kept = adata.copy()
    sc.pp.filter_cells(scanpy_kept, min_counts=1)
    assert scanpy_kept.n_obs == ctrl.n_obs  # what the old advice kept
