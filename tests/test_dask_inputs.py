"""AnnData whose matrices are dask arrays (AnnData(X=dask_array), anndata's read_elem_lazy)
and AnnData from anndata.experimental.read_lazy: train/_data.py DeltaDataManager,
model/_validation.py _chunks, model/_backing.py fingerprints, _checks.py refuse_lazy_tables."""

import copy
import os
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

import deltavae as dv

da = pytest.importorskip("dask.array")
TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "batch_size": 64}
# Two epochs end in the KL warm-up's last steps: said by every run alike, not tested here.
pytestmark = pytest.mark.filterwarnings("ignore:.*KL warm-up:UserWarning")


@pytest.fixture(scope="module")
def cells():
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    del adata.layers["counts"]
    return adata


def _trained(adata):
    scvi.settings.seed = 0
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    return model


def _readouts(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said of a zarr store a dask X has none of
        keys = model.write_to_adata()
    return (
        model.get_latent_representation(),
        np.asarray(model.get_normalized_expression(library_size=1e4)),
        model.adata.obsm["X_zinbvae"],
        keys,
    )


@pytest.fixture(scope="module")
def model(cells):
    return _trained(cells.copy())


@pytest.fixture(scope="module")
def in_memory(model):
    return _readouts(model)


@pytest.mark.parametrize("kind", ["dense float64", "sparse chunks", "read_elem_lazy"])
def test_a_dask_matrix_trains_and_reads_out_as_in_memory(cells, in_memory, tmp_path, request, kind):
    """A float64 dask X failed in the encoder's first layer ("mat1 and mat2 must have the same
    dtype"); one of sparse chunks (anndata's lazy reads of a sparse matrix) was refused as
    "must be numeric; got dtype object", then read as a new matrix at every call."""
    if kind == "dense float64":
        X = da.from_array(cells.X.toarray().astype(np.float64), chunks=(64, 30))
    elif kind == "sparse chunks":
        X = da.from_array(cells.X, chunks=(64, 30))
    else:
        cells.write_h5ad(tmp_path / "cells.h5ad")
        handle = h5py.File(tmp_path / "cells.h5ad", "r")
        request.addfinalizer(handle.close)
        X = ad.experimental.read_elem_lazy(handle["X"])
    adata = ad.AnnData(X=X, obs=cells.obs.copy(), var=cells.var.copy())
    z, expression, written, keys = _readouts(_trained(adata))
    assert keys == in_memory[3]
    for got, expected in zip((z, expression, written), in_memory[:3], strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert type(adata.X).__module__.startswith("dask")  # the user's X left as it was


@pytest.mark.parametrize("store", ["cells.h5ad", "cells.zarr"])
def test_anndata_read_lazy_is_refused_with_what_to_do(cells, tmp_path, store):
    """anndata.experimental.read_lazy's obs is an xarray table: setup failed deep in xarray
    ("data type 'category' not understood"), after "must be numeric; got dtype object"."""
    pytest.importorskip("xarray")
    path = tmp_path / store
    cells.write_h5ad(path) if store.endswith(".h5ad") else cells.write_zarr(path)
    lazy = ad.experimental.read_lazy(path)
    fix = r"read_lazy: its obs and var are Dataset2D.*backed='r'.*adata = adata.to_memory\(\)"
    with pytest.raises(TypeError, match=fix):
        dv.model.ZINBVAE.setup_anndata(lazy)
    model = _trained(cells.copy())
    with pytest.raises(TypeError, match=fix):
        model.get_latent_representation(lazy)


def test_cgmdvae_on_a_dask_matrix_of_sparse_chunks_is_as_in_memory(cells):
    """The mixture's refit after training read the cells' rows as a dask array of sparse
    chunks and failed ("zero-dimensional arrays cannot be concatenated")."""
    results, cells = [], cells[:64].copy()
    for X in (cells.X, da.from_array(cells.X, chunks=(64, 30))):
        adata = ad.AnnData(X=X, obs=cells.obs.copy(), var=cells.var.copy())
        scvi.settings.seed = 0
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=3, n_latent_w=2, n_hidden=16)
        model.train(max_epochs=1, refit_mixture=True, **TRAIN)
        results.append((model.get_latent_representation(), model.predict_clusters(soft=True)))
    for got, expected in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("genes", ["reordered", "more"])
def test_a_dask_matrix_of_sparse_chunks_with_other_genes_is_read_by_name(model, cells, genes):
    """Its genes were read as a dense matrix ("array is 0-dimensional, but 2 were indexed")."""
    order = np.random.default_rng(0).permutation(cells.n_vars)
    names = list(cells.var_names[order])
    if genes == "more":  # the model's genes and 3 others: read by name, no warning
        order, names = np.r_[np.arange(cells.n_vars), 0:3], [*cells.var_names, "x", "y", "z"]
    X = da.from_array(sparse.csr_matrix(cells.X[:, order]), chunks=(64, 10))
    lazy = ad.AnnData(X=X, obs=cells.obs.copy(), var=pd.DataFrame(index=names))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "adata has the same genes in another order")
        z = model.get_latent_representation(lazy)
    np.testing.assert_allclose(z, model.get_latent_representation(cells), atol=1e-6)


def test_a_model_on_a_dask_matrix_is_copied(model, cells):
    """It was refused as one reading "its AnnData from a file", whose handle cannot be pickled:
    a dask array pickles (its graph names the file it reads, if any)."""
    adata = ad.AnnData(X=da.from_array(cells.X, chunks=(64, 30)), obs=cells.obs, var=cells.var)
    copied = copy.deepcopy(model)
    copied.adata = adata
    np.testing.assert_array_equal(
        copy.deepcopy(copied).get_latent_representation(), model.get_latent_representation()
    )


def test_a_lazily_read_csc_matrix_is_told_to_be_rewritten_csr(cells, tmp_path, request):
    """anndata's lazy read of a CSC matrix is chunked by genes, every chunk holding all cells:
    each minibatch read the whole matrix, without the word said of a backed CSC file."""
    adata = cells.copy()
    adata.X = sparse.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "csc.h5ad")
    handle = h5py.File(tmp_path / "csc.h5ad", "r")
    request.addfinalizer(handle.close)
    lazy = ad.AnnData(X=ad.experimental.read_elem_lazy(handle["X"]), obs=cells.obs, var=cells.var)
    with pytest.warns(UserWarning, match=r"adata.X is stored CSC .* reads the whole matrix"):
        dv.model.ZINBVAE.setup_anndata(lazy)


def test_a_file_a_dask_matrix_reads_replaced_since_is_named_as_dask(model, cells, tmp_path):
    """read_elem_lazy's dask array reads its file by path: one replaced since was refused as
    "the zarr store adata reads its matrices from" and told to dv.read_lazy it."""
    cells.write_h5ad(tmp_path / "cells.h5ad")
    with h5py.File(tmp_path / "cells.h5ad", "r") as handle:
        X = ad.experimental.read_elem_lazy(handle["X"])
        adata = ad.AnnData(X=X, obs=cells.obs, var=cells.var)
        model.get_latent_representation(adata)
        cells[::-1].copy().write_h5ad(tmp_path / "new.h5ad")
        os.replace(tmp_path / "new.h5ad", tmp_path / "cells.h5ad")  # other cells' counts
        with pytest.raises(ValueError, match=r"dask array reads .*read_elem_lazy it again"):
            model.get_latent_representation(adata)


def test_archetypes_on_a_dask_matrix_of_sparse_chunks_is_as_in_memory(cells):
    """Its candidates' rows were read as a dense array ("setting an array element with a
    sequence")."""
    results = []
    for X in (cells.X, da.from_array(cells.X, chunks=(64, 30))):
        adata = ad.AnnData(X=X, obs=cells.obs.copy(), var=cells.var.copy())
        scvi.settings.seed = 0
        dv.model.Archetypes.setup_anndata(adata)
        model = dv.model.Archetypes(adata, n_archetypes=3)
        model.train(max_epochs=2, **TRAIN)
        results.append((model.get_archetype_weights(), model.get_archetype_profiles()))
    for got, expected in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-6)
