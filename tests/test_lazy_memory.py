"""Memory of inputs read from disk or held in dask arrays: differential expression reads the
cells compared only (model/_de_rows.py), reference signatures are summed a chunk of rows at a
time, row totals of dask arrays of sparse chunks (model/_matrices.py)."""

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pytest
import scvi
from scipy import sparse

import deltavae as dv

da = pytest.importorskip("dask.array")
TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "batch_size": 64}
N_BIG = 20_000


@pytest.fixture(scope="module")
def model():
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=2, n_conditions=2, seed=0
    )
    del adata.layers["counts"]
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    return model


def _big(model, dense=True):
    X = np.random.default_rng(0).poisson(1.0, (N_BIG, 40)).astype(np.float64)
    group = np.where(np.arange(N_BIG) < 30, "a", np.where(np.arange(N_BIG) < 60, "b", "c"))
    adata = ad.AnnData(
        X if dense else sparse.csr_matrix(X), obs={"g": group}, var=model.adata.var[[]]
    )
    adata.obs_names = [f"c{i}" for i in range(N_BIG)]
    return adata


def _de(model, data, **kwargs):
    scvi.settings.seed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.differential_expression(data, n_samples_overall=200, silent=True, **kwargs)


def _peak(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["dense.h5ad", "csr.zarr", "dask"])
def test_differential_expression_reads_only_the_cells_compared(model, tmp_path, kind):
    """A backed .h5ad, read_lazy zarr or dask X was read whole into memory (a dense backed X
    dense): 3-5 times the matrix at peak for 60 cells of 20,000 compared."""
    big = _big(model, dense=kind != "csr.zarr")
    expected = _de(model, big, groupby="g", group1="a", group2="b")
    by_idx = _de(model, big, idx1=np.arange(10), idx2=big.obs_names[20:40])
    if kind == "dask":
        data = ad.AnnData(da.from_array(big.X, chunks=(500, 40)), obs=big.obs, var=big.var)
    elif kind == "dense.h5ad":
        big.write_h5ad(tmp_path / kind)
        data = ad.read_h5ad(tmp_path / kind, backed="r")
    else:
        big.write_zarr(tmp_path / kind)
        data = dv.read_lazy(tmp_path / kind)
    size = N_BIG * 40 * 8
    found, peak = _peak(lambda: _de(model, data, groupby="g", group1="a", group2="b"))
    assert peak < 0.25 * size
    np.testing.assert_allclose(found["bayes_factor"], expected["bayes_factor"])
    np.testing.assert_allclose(found["raw_mean1"], expected["raw_mean1"])
    found = _de(model, data, idx1=np.arange(10), idx2=big.obs_names[20:40])
    np.testing.assert_allclose(found["raw_mean2"], by_idx["raw_mean2"])
    np.testing.assert_allclose(found["scale1"], by_idx["scale1"])
    assert "g" in data.obs and "_scvi_temp_de" not in data.obs


def test_differential_expression_against_the_rest_warns_of_the_size(model, tmp_path, monkeypatch):
    """Against the rest every cell is read: above WARN_BYTES a warning gives the size."""
    _big(model).write_h5ad(tmp_path / "big.h5ad")
    data = ad.read_h5ad(tmp_path / "big.h5ad", backed="r")
    monkeypatch.setattr("deltavae.model._de_rows.WARN_BYTES", 1000)
    scvi.settings.seed = 0
    with pytest.warns(UserWarning, match=r"every cell's counts .* about 0\.0 GB"):
        model.differential_expression(
            data, groupby="g", group1="a", n_samples_overall=200, silent=True
        )
    with pytest.warns(UserWarning, match="the 60 of 20000 cells compared"):
        model.differential_expression(
            data, groupby="g", group1="a", group2="b", n_samples_overall=200, silent=True
        )
