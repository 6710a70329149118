"""Memory of inputs read from disk or held in dask arrays: differential expression reads the
cells compared only (model/_de_rows.py), reference signatures are summed a chunk of rows at a
time, row totals of dask arrays of sparse chunks (model/_matrices.py)."""

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd
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


@pytest.fixture(scope="module")
def split():
    cells = dv.datasets.synthetic_counts(
        n_cells=400, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, cells_per_spot=(2, 6))
    return spots, ref


def _small_chunks(monkeypatch, rows):
    """Chunks of ``rows`` rows (64 MiB ones hold these whole matrices at once)."""
    monkeypatch.setattr("deltavae.model._validation.chunk_rows", lambda X: rows)
    monkeypatch.setattr("deltavae.model._matrices.chunk_rows", lambda X: rows)


def _wide(ref, n_extra=2000):
    """``ref`` with ``n_extra`` genes the spots lack, dense, and a second layer."""
    extra = np.random.default_rng(1).poisson(0.5, (ref.n_obs, n_extra)).astype(np.float64)
    X = np.hstack([np.asarray(sparse.csr_matrix(ref.X).toarray(), dtype=np.float64), extra])
    wide = ad.AnnData(X, obs=ref.obs[["cluster"]].copy())
    wide.var_names = list(ref.var_names) + [f"extra{i}" for i in range(n_extra)]
    wide.layers["other"] = X.copy()
    return wide


@pytest.mark.parametrize("store", ["h5ad", "zarr"])
def test_nmf_from_reference_reads_only_the_shared_genes(split, tmp_path, store, monkeypatch):
    """A backed or read_lazy reference was read whole (every gene, every layer) into memory:
    the signatures need the genes shared with the spots, summed a chunk of rows at a time."""
    _small_chunks(monkeypatch, 10 if store == "h5ad" else 20)  # each dask compute: 20 ms
    spots, ref = split
    wide = _wide(ref, n_extra=4000 if store == "h5ad" else 3000)
    size = wide.n_obs * wide.n_vars * 8
    path = tmp_path / f"ref.{store}"
    if store == "zarr":  # stored sparse (read_lazy streams sparse stores)
        wide.X = sparse.csr_matrix(wide.X)
        wide.layers["other"] = wide.X.copy()
        size = wide.X.nnz * 12
    wide.write_h5ad(path) if store == "h5ad" else wide.write_zarr(path)
    lazy = ad.read_h5ad(path, backed="r") if store == "h5ad" else dv.read_lazy(path)
    expected = dv.model.NMFDeconv.signatures_from_reference(wide, "cluster")
    found, peak = _peak(lambda: dv.model.NMFDeconv.signatures_from_reference(lazy, "cluster"))
    # zarr reads a stored chunk whole, and its reads run side by side as the timing allows:
    # the peak was 0.37-0.47 of the stored matrix on a quiet machine and up to 0.56 next to a
    # busy process (one run in eight); reading every gene and layer takes more than all of it.
    assert peak < (0.5 if store == "h5ad" else 0.75) * size
    pd.testing.assert_frame_equal(found, expected)
    if store == "zarr":  # from_reference's reads alike, at 20 ms a dask compute: 2 s
        return
    in_memory = dv.model.NMFDeconv.from_reference(spots.copy(), wide, labels_key="cluster")
    model, peak = _peak(  # (after a first call: its imports are no reading)
        lambda: dv.model.NMFDeconv.from_reference(spots.copy(), lazy, labels_key="cluster")
    )
    assert peak < 0.5 * size
    pd.testing.assert_frame_equal(model.get_signatures(), in_memory.get_signatures())


@pytest.mark.filterwarnings("ignore:.*share only:UserWarning")
def test_reference_reads_warn_of_their_size(split, tmp_path, monkeypatch):
    """The SpatialImputer reads the reference whole (its cells, dense, for the neighbours):
    its counts layer only, with the size said above WARN_BYTES; so does NMFDeconv."""
    spots, ref = split
    wide = _wide(ref, n_extra=200)
    wide.write_h5ad(tmp_path / "ref.h5ad")
    lazy = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    monkeypatch.setattr("deltavae.model._de_rows.WARN_BYTES", 1000)
    shared = spots[:, :30].copy()
    said = r"SpatialImputer.from_reference reads the reference \(200 cells x 240 genes, also "
    with pytest.warns(UserWarning, match=said + r"dense\) into memory: about 0\.0 GB"):
        model = dv.model.SpatialImputer.from_reference(shared, lazy, labels_key="cluster")
    assert model.adata.n_vars == 30
    with pytest.warns(UserWarning, match=r"reads the reference's counts of the 40 genes"):
        dv.model.NMFDeconv.from_reference(spots.copy(), lazy, labels_key="cluster")


def test_a_dask_query_in_another_gene_order_is_not_said_to_be_on_disk(model):
    """An in-memory dask array was said to hold "data on disk", with advice to write a file."""
    order = np.random.default_rng(0).permutation(model.adata.n_vars)
    X = da.from_array(sparse.csr_matrix(model.adata.X)[:, order], chunks=(64, 40))
    lazy = ad.AnnData(X=X, obs=model.adata.obs.copy(), var=model.adata.var.iloc[order])
    said = r"its matrices are dask arrays: .* computed into memory .* adata\[:, model.adata"
    with pytest.warns(UserWarning, match=said) as record:
        z = model.get_latent_representation(lazy)
    assert not any("on disk" in str(w.message) for w in record)
    np.testing.assert_allclose(z, model.get_latent_representation(), atol=1e-6)
    fixed = lazy[:, model.adata.var_names].copy()  # the advice: still a dask array, no copy
    assert type(fixed.X).__module__.startswith("dask")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(model.get_latent_representation(fixed), z, atol=1e-6)


def test_a_dask_array_of_sparse_chunks_is_read_a_chunk_of_its_own_at_a_time(monkeypatch):
    """Row totals, checks and copies read 256 rows at a time across the dask array's own
    chunks (300 rows here): each was computed (from a file: read) twice. Now once, whole."""
    computed = []
    one = sparse.random(300, 20, density=0.2, format="csr", random_state=0) * 4

    def block(b, block_info=None):
        computed.append(block_info[0]["chunk-location"][0])
        return sparse.csr_matrix(one[: b.shape[0]].ceil())

    X = da.zeros((3000, 20), chunks=(300, 20)).map_blocks(block, meta=sparse.csr_matrix((0, 0)))
    monkeypatch.setattr("deltavae.model._validation.chunk_rows", lambda X: 256)
    totals = dv.model._matrices.row_sums(X)
    assert sorted(computed) == list(range(10))
    np.testing.assert_allclose(totals, np.tile(np.asarray(one.ceil().sum(1)).ravel(), 10))
    computed.clear()
    monkeypatch.setattr("deltavae.model._validation.chunk_rows", lambda X: 1000)
    assert dv.model._matrices.in_memory(X).shape == (3000, 20)
    assert sorted(computed) == list(range(10))  # 900 rows (3 chunks) a read: 4 reads


@pytest.mark.filterwarnings("ignore:.*share only:UserWarning")
def test_type_profiles_of_a_reference_on_disk_are_summed_a_chunk_at_a_time(
    split, tmp_path, monkeypatch
):
    """SpatialImputer(profiles='type') read a backed reference whole for per-type means."""
    spots, ref = split
    wide = _wide(ref, n_extra=4000)
    wide.write_h5ad(tmp_path / "ref.h5ad")
    lazy = ad.read_h5ad(tmp_path / "ref.h5ad", backed="r")
    _small_chunks(monkeypatch, 10)
    shared = spots[:, :30].copy()
    kw = {"labels_key": "cluster", "profiles": "type"}
    expected = dv.model.SpatialImputer.from_reference(shared.copy(), wide, **kw)
    found, peak = _peak(lambda: dv.model.SpatialImputer.from_reference(shared.copy(), lazy, **kw))
    assert peak < 0.5 * wide.n_obs * wide.n_vars * 8
    assert found.reference_genes_.equals(expected.reference_genes_)
    assert list(found.state_names_) == list(expected.state_names_)
    torch = pytest.importorskip("torch")
    assert torch.allclose(found.module.log_profiles, expected.module.log_profiles)
