"""AnnData read from disk (dv.read_lazy: backed .h5ad, zarr) with other genes, other layouts
and wide dense matrices: _io.py, model/_genes.py, model/_validation.py, model/_matrices.py."""

import re
import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from _stores import read_store, write_store
from scipy import sparse

import deltavae as dv
from deltavae.model import _validation
from deltavae.model._genes import align_query_genes
from deltavae.model._validation import _chunks, check_data

# Missing genes are announced as zeros too: tested in test_transfer.py.
ZEROS = pytest.mark.filterwarnings("ignore:.*filled with zeros:UserWarning")
TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "batch_size": 64}


def _cells(n_cells=200, n_genes=40, seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=n_genes, n_clusters=2, n_conditions=2, seed=seed
    )
    adata.X = sparse.csr_matrix(adata.X)
    del adata.layers["counts"]
    return adata


@pytest.fixture(scope="module")
def cells():
    return _cells()


@pytest.fixture(scope="module")
def zinbvae(cells):
    scvi.settings.seed = 0
    adata = cells.copy()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    return model


# ------------------------------------------------------- 1. a lazy query with other genes
@ZEROS
@pytest.mark.parametrize("store", ["csr.h5ad", "dense.h5ad", "csr.zarr"])
def test_a_lazy_query_with_other_genes_is_aligned_a_chunk_at_a_time(
    cells, tmp_path, monkeypatch, store
):
    query = cells[:, 5:].copy()  # 5 reference genes missing
    if store.startswith("dense"):
        query.X = query.X.toarray()
    lazy = dv.read_lazy(write_store(query, tmp_path / store))
    monkeypatch.setattr(_validation, "_CHUNK", 64)  # several chunks of rows
    monkeypatch.setattr(_validation, "_CHUNK_BYTES", 64 * 35 * 4, raising=False)
    with pytest.warns(UserWarning, match=r"held in memory \(200 cells x 40 genes, sparse\)"):
        aligned = align_query_genes(lazy, cells.var_names)
    assert sparse.isspmatrix_csr(aligned.X)
    expected = cells.X.toarray()
    expected[:, :5] = 0
    np.testing.assert_array_equal(aligned.X.toarray(), expected)
    assert list(aligned.var_names) == list(cells.var_names)


@ZEROS
def test_load_query_data_maps_a_lazy_query_lacking_genes(tmp_path):
    scvi.settings.seed = 0
    ref = _cells(seed=1)
    dv.model.CGMDVAE.setup_anndata(ref, condition_key="condition")
    model = dv.model.CGMDVAE(ref, n_clusters=2, n_latent=3, n_latent_w=2, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    query = _cells(n_cells=80, seed=2)[:, 4:].copy()
    query.obs["condition"] = "c_new"
    lazy = dv.read_lazy(write_store(query, tmp_path / "q.zarr"))
    with pytest.warns(UserWarning, match="held in memory"):
        q = dv.model.CGMDVAE.load_query_data(lazy, model)
    q.train(max_epochs=1, **TRAIN)
    assert q.get_latent_representation().shape == (80, 3)


def test_new_lazy_spots_with_extra_genes_are_deconvolved(tmp_path):
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=50, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, seed=3)
    del spots.uns["pseudo_spots"]
    spots.X = sparse.csr_matrix(spots.X)
    # The reference lacks 3 of the model's genes: the model reads 45 of its 48.
    known = spots[:, :48].copy()
    model = dv.model.NMFDeconv.from_reference(known, ref[:, :45].copy(), labels_key="cluster")
    model.train(max_epochs=2, **TRAIN)
    new = dv.read_lazy(write_store(spots, tmp_path / "spots.h5ad"))  # 2 genes the model lacks
    with pytest.warns(UserWarning, match="held in memory"):
        proportions = model.get_proportions(adata=new)
    expected = model.get_proportions(adata=known)
    np.testing.assert_allclose(proportions.to_numpy(), expected.to_numpy(), atol=1e-5)


# ------------------------------------------------------- 2. chunks bounded in bytes
def test_a_wide_dense_matrix_is_read_in_chunks_of_bounded_bytes():
    wide = np.broadcast_to(np.zeros(1, dtype=np.float64), (3000, 20_000))  # no memory
    blocks = list(_chunks(wide))
    assert max(block.nbytes for block in blocks) <= 2**26
    assert sum(block.shape[0] for block in blocks) == 3000
    narrow = sparse.csr_matrix((30_000, 20_000))
    assert [block.shape[0] for block in _chunks(narrow)] == [10_000] * 3


def test_a_dense_sparse_matrix_is_read_in_chunks_of_bounded_bytes(tmp_path, monkeypatch):
    """Sparse chunks were 10,000 rows whatever they held: a full-transcriptome atlas (2,000
    stored values a cell) read 160 MB at a time, on disk too (the cap is scaled down here)."""
    monkeypatch.setattr(_validation, "_CHUNK_BYTES", 2**18)
    rows = sparse.random(3000, 2000, density=0.05, format="csr", dtype=np.float32, rng=0)
    stored = [block.data.nbytes + block.indices.nbytes for block in _chunks(rows)]
    assert max(stored) <= 1.1 * 2**18 and len(stored) > 1  # the cap, to the rows' spread
    ad.AnnData(rows).write_h5ad(tmp_path / "rows.h5ad")
    backed = ad.read_h5ad(tmp_path / "rows.h5ad", backed="r")
    assert _validation.chunk_rows(backed.X) == _validation.chunk_rows(rows) < 3000


def test_check_data_on_a_dense_lazy_file_holds_no_matrix_sized_temporaries(tmp_path, monkeypatch):
    adata = _cells(n_cells=3000, n_genes=400)
    adata.X = adata.X.toarray().astype(np.float32)  # 4.8 MB
    lazy = dv.read_lazy(write_store(adata, tmp_path / "dense.h5ad"))
    monkeypatch.setattr(_validation, "_CHUNK_BYTES", 2**18, raising=False)
    tracemalloc.start()
    try:
        check_data(lazy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < adata.X.nbytes / 3
    # What the checks find is unchanged: a non-integer value in the right chunk of cells.
    adata.X[1000, 3] = 0.5
    bad = dv.read_lazy(write_store(adata, tmp_path / "bad.h5ad"))
    with pytest.raises(ValueError, match=r"such as 0.5 \(1 in cells 769-1024\)"):
        check_data(bad)


def test_check_data_finds_empty_cells_and_genes_across_chunks(monkeypatch):
    adata = _cells(n_cells=600)
    X = adata.X.toarray()
    X[[5, 400]] = 0
    X[:, 7] = 0
    adata.X = X
    monkeypatch.setattr(_validation, "_CHUNK", 256)
    with pytest.warns(UserWarning) as record:
        check_data(adata)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("2 cells in adata.X are all zeros") for m in messages)
    assert any(m.startswith("1 genes in adata.X are zero") for m in messages)


# ------------------------------------------------------- 3. reordered genes on disk
def test_reordered_genes_of_a_lazy_file_are_loaded_with_a_warning(zinbvae, cells, tmp_path):
    perm = np.random.default_rng(0).permutation(cells.n_vars)
    shuffled = cells[:, perm].copy()
    shuffled.X = shuffled.X.toarray()
    lazy = dv.read_lazy(write_store(shuffled, tmp_path / "perm.h5ad"))
    with pytest.warns(UserWarning, match=r"loaded into memory.*write the file with the model's"):
        z = zinbvae.get_latent_representation(lazy)
    np.testing.assert_allclose(z, zinbvae.get_latent_representation(cells), atol=1e-6)


# ------------------------------------------------------- 4. layers of a backed .h5ad
def test_read_lazy_says_that_the_layers_of_an_h5ad_are_in_memory(cells, tmp_path):
    adata = cells.copy()
    adata.layers["counts"] = adata.X.copy()
    path = write_store(adata, tmp_path / "layers.h5ad")
    with pytest.warns(
        UserWarning,
        # Counts in X train from disk: the advice to move them there is for counts in a layer.
        match=r"layers \['counts'\] are read into memory.*one set up on X trains from disk\)\. "
        r"If the counts are in a layer, put them in X",
    ):
        lazy = dv.read_lazy(path)
    assert sparse.issparse(lazy.layers["counts"])


# ------------------------------------------------------- 5. a dense layer of a zarr store
def test_a_zarr_store_with_a_dense_layer_opens_and_refuses_only_that_layer(cells, tmp_path):
    adata = cells.copy()
    adata.layers["dense"] = adata.X.toarray()
    lazy = dv.read_lazy(write_store(adata, tmp_path / "dense_layer.zarr"))
    dv.model.ZINBVAE.setup_anndata(lazy)  # X is sparse: fine
    fix = r"adata.layers\['dense'\] = scipy.sparse.csr_matrix\(adata.layers\['dense'\]\)"
    with pytest.raises(ValueError, match=r"layers\['dense'\] is stored dense.*" + fix):
        dv.model.ZINBVAE.setup_anndata(lazy, layer="dense")


def test_a_dense_x_of_a_zarr_store_is_refused_by_name(cells, tmp_path):
    adata = cells.copy()
    adata.X = adata.X.toarray()
    with pytest.raises(ValueError, match=r"adata.X = scipy.sparse.csr_matrix\(adata.X\)"):
        dv.read_lazy(write_store(adata, tmp_path / "dense_x.zarr"))


def test_a_dense_x_beside_sparse_counts_opens_and_the_counts_layer_trains(cells, tmp_path):
    # The usual layout of a processed atlas: log-normalised values in a dense X, the counts in
    # a sparse layer. read_lazy refused the whole store for its X.
    adata = cells.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X.toarray())
    lazy = dv.read_lazy(write_store(adata, tmp_path / "dense_x_counts.zarr"))
    assert not sparse.issparse(lazy.X)  # left on disk, not read into memory
    with pytest.raises(ValueError, match=r"adata.X is stored dense in a zarr store"):
        dv.model.ZINBVAE.setup_anndata(lazy)
    dv.model.ZINBVAE.setup_anndata(lazy, layer="counts")
    scvi.settings.seed = 0
    model = dv.model.ZINBVAE(lazy, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, enable_progress_bar=False, enable_model_summary=False)
    in_memory = cells.copy()
    in_memory.layers["counts"] = in_memory.X
    z = model.get_latent_representation(in_memory)
    np.testing.assert_allclose(model.get_latent_representation(), z, atol=1e-5)


# ------------------------------------------------------- 6. results into a zarr store
def test_results_written_into_a_zarr_store_leave_out_scvi_columns(cells, tmp_path):
    path = write_store(cells, tmp_path / "cells.zarr")
    lazy = dv.read_lazy(path)
    scvi.settings.seed = 0
    dv.model.ZINBVAE.setup_anndata(lazy)
    model = dv.model.ZINBVAE(lazy, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    lazy.obs["zinbvae_note"] = "x"
    # The advice names the store ('<the store>.zarr' it was).
    advice = re.escape(f"write_results_to_store(adata, keys, {str(path)!r})")
    with pytest.warns(UserWarning, match=r"in memory only.*" + advice):
        keys = [*model.write_to_adata(), "obs/zinbvae_note"]  # said: the store is not changed
    dv.write_results_to_store(lazy, keys, path)
    columns = list(ad.read_zarr(path).obs.columns)
    assert "zinbvae_note" in columns
    assert not [c for c in columns if c.startswith("_scvi_")]
    # A column zarr cannot name ("L2/3 IT"): refused before anything is written.
    lazy.obsm["types"] = pd.DataFrame(1.0, index=lazy.obs_names, columns=["L2/3 IT", "B"])
    lazy.obs["later_note"] = "y"
    with pytest.raises(ValueError, match=r"obsm\['types'\] has columns named with '/'"):
        dv.write_results_to_store(lazy, ["obs/later_note", "obsm/types"], path)
    stored = ad.read_zarr(path)
    assert "types" not in stored.obsm and "later_note" not in stored.obs


# ------------------------------------------------------- 7. a view of a backed AnnData
def test_a_view_of_a_backed_file_is_told_to_use_to_memory(cells, tmp_path):
    lazy = dv.read_lazy(write_store(cells, tmp_path / "cells.h5ad"))
    with pytest.raises(ValueError, match=r"adata\[mask\].to_memory\(\).*copy\(filename="):
        dv.model.ZINBVAE.setup_anndata(lazy[:50])


# ------------------------------------------------------- 8. a file or store moved away
@pytest.mark.parametrize("store", ["cells.h5ad", "cells.zarr"])
def test_a_store_moved_after_training_is_named_not_read_as_zeros(cells, tmp_path, store):
    # zarr reads the chunks of a moved or deleted store as zeros: the model's read-outs and
    # training went on, on nothing; a closed .h5ad failed deep in h5py ("unable to open file").
    path = write_store(cells, tmp_path / store)
    lazy = read_store(path)
    dv.model.ZINBVAE.setup_anndata(lazy)
    model = dv.model.ZINBVAE(lazy, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    if lazy.isbacked:
        lazy.file.close()
    path.rename(tmp_path / f"moved_{store}")
    calls = (
        model.get_latent_representation,
        lambda: model.train(max_epochs=1, **TRAIN),
        lambda: model.save(tmp_path / "model", save_anndata=True),  # saved X all zeros
    )
    for call in calls:
        with pytest.raises(FileNotFoundError, match=r"no longer exists.*Open it where it is now"):
            call()
    moved = dv.read_lazy(tmp_path / f"moved_{store}") if store.endswith(".zarr") else None
    if moved is not None:
        np.testing.assert_allclose(model.get_latent_representation(moved), z, atol=1e-6)


# ------------------------------------------------------- 9. counts stored CSC on disk
@pytest.mark.parametrize("store", ["csc.h5ad", "csc.zarr"])
def test_counts_stored_csc_on_disk_are_told_to_be_rewritten_csr(cells, tmp_path, store):
    # Each minibatch of rows of an on-disk CSC matrix reads the whole matrix; scvi-tools warns
    # of CSC in memory only, so an atlas too big for memory was read whole, per minibatch.
    adata = cells.copy()
    adata.X = sparse.csc_matrix(adata.X)
    lazy = dv.read_lazy(write_store(adata, tmp_path / store))
    fix = r"stored CSC .* every minibatch .* reads the whole matrix.*adata.X = adata.X.tocsr\(\)"
    with pytest.warns(UserWarning, match=fix):
        dv.model.ZINBVAE.setup_anndata(lazy)
