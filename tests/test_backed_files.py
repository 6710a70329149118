"""A backed AnnData's file through a model's life: closed by the user, replaced on disk
(model/_backing.py)."""

import os
import warnings

import anndata as ad
import numpy as np
import pytest
from _stores import read_store, write_store
from scipy import sparse

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _cells(seed=0, n_cells=120):
    data = dv.datasets.synthetic_counts(n_cells=n_cells, n_genes=30, n_clusters=2, seed=seed)
    data.X = sparse.csr_matrix(data.X)
    del data.layers["counts"]
    data.obs = data.obs[[]]  # quicker to write as zarr
    return data


def test_a_file_the_user_closed_is_closed_again_after_every_call(tmp_path):
    """anndata reopens a closed backed file on reading X and leaves it open: every read-out
    reopened the file the user had closed (to release it) and kept it open, and
    setup_anndata on it said "adata.X is empty (None)"."""
    path = write_store(_cells(), tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r+")
    cells.file.close()
    dv.model.ZINBVAE.setup_anndata(cells)
    assert not cells.file.is_open
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    with pytest.raises(ValueError, match="opened backed='r\\+' .writable.; training needs"):
        model.train(max_epochs=1, **TRAIN)  # opened in the user's mode for the call
    assert not cells.file.is_open
    cells.file.open(filemode="r")
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    cells.file.close()
    np.testing.assert_array_equal(model.get_latent_representation(), z)
    assert not cells.file.is_open
    model.get_normalized_expression(cells[:10])
    model.save(tmp_path / "model", save_anndata=True)
    assert not cells.file.is_open
    loaded = dv.model.ZINBVAE.load(tmp_path / "model", adata=cells)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    assert not cells.file.is_open
    cells.file.open(filemode="r+")
    cells.file.close()  # r+ remembered: write_to_adata writes into the file
    assert model.write_to_adata(cells) == ["obsm/X_zinbvae"]
    assert not cells.file.is_open
    dv.model.CGMDVAE.setup_anndata(cells)
    dv.model.CGMDVAE(cells, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)  # reads X
    assert not cells.file.is_open
    os.remove(path)  # released
    assert "X_zinbvae" in cells.obsm


@pytest.mark.filterwarnings("ignore:.*KL warm-up:UserWarning")
@pytest.mark.parametrize("how", ["rewritten.h5ad", "replaced.h5ad", "other_cells.h5ad", "s.zarr"])
def test_a_file_replaced_since_setup_is_refused(tmp_path, how):
    """anndata reopens a closed backed file by name, and zarr reads chunks by path: a file or
    store written over at the same path after setup was read under the old obs and var,
    and read-outs and training gave results for other data without a word."""
    path = write_store(_cells(), tmp_path / how)
    cells = read_store(path)
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    if cells.isbacked:
        cells.file.close()
    other = _cells(seed=1, n_cells=100 if how.startswith("other") else 120)
    if how.startswith("replaced"):
        os.replace(write_store(other, tmp_path / "new.h5ad"), path)
    elif how.endswith(".zarr"):
        import shutil

        shutil.rmtree(path)
        write_store(other, path)
    else:
        write_store(other, path)
    refused = r"replaced or rewritten since it was set up.*Open the file as it is now"
    with pytest.raises(ValueError, match=refused):
        model.get_latent_representation()
    with pytest.raises(ValueError, match=refused):
        model.train(max_epochs=1, **TRAIN)
    with pytest.raises(ValueError, match=refused):
        model.write_to_adata()
    if cells.isbacked:  # the file set up, back: read as before
        write_store(_cells(), path)
        np.testing.assert_allclose(model.get_latent_representation(), z, atol=1e-6)


def test_a_file_replaced_while_open_is_still_read_from_the_handle(tmp_path):
    """A file replaced (renamed over) while open is read from its open handle, the file set
    up: nothing to refuse."""
    path = write_store(_cells(), tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    os.replace(write_store(_cells(seed=1), tmp_path / "new.h5ad"), path)
    np.testing.assert_array_equal(model.get_latent_representation(), z)


def test_a_file_another_process_writes_is_named_with_what_to_do(tmp_path, monkeypatch):
    """A closed file another process holds open for writing (HDF5 locks it): read-outs failed
    with h5py's bare "unable to lock file", and train said the file was closed and to reopen
    it, which failed the same way."""
    import h5py

    path = write_store(_cells(), tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, **TRAIN)
    cells.file.close()
    opened = h5py.File

    def locked(name, *args, **kwargs):
        if os.fspath(name) == os.fspath(path):
            raise BlockingIOError(11, "Unable to synchronously open file (unable to lock file)")
        return opened(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", locked)
    held = r"cannot be opened for reading .*unable to lock.* another process has it open"
    with pytest.raises(OSError, match=held):
        model.get_latent_representation()
    with pytest.raises(OSError, match=held):
        model.train(max_epochs=1, **TRAIN)
    monkeypatch.setattr(h5py, "File", opened)
    assert model.get_latent_representation().shape == (120, 2) and not cells.file.is_open


def test_training_says_when_compressed_chunks_are_decompressed_over_and_over(tmp_path, monkeypatch):
    """A gzip .h5ad whose chunks hold many cells (h5py's chunks for an atlas: 1 MiB) trained
    7 times slower than in memory (12,261 cells: 35 s an epoch against 5 s; 14 s with
    shuffle_block_size=32) without a word: each cell shuffled alone decompresses its chunk."""
    import h5py
    from anndata.io import write_elem

    from deltavae.model import _backing

    data = _cells()
    path = write_store(data, tmp_path / "cells.h5ad")
    with h5py.File(path, "r+") as f:
        del f["X"]
        write_elem(f, "X", data.X, dataset_kwargs={"compression": "gzip", "chunks": (4096,)})
    cells = ad.read_h5ad(path, backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    monkeypatch.setattr(_backing, "_AMPLIFIED_BYTES", 0)  # a test file is small
    with pytest.warns(
        UserWarning,
        match=r"compressed in chunks of about 120 cells.*"
        r"decompresses chunks of about 120 cells, 15 times the values it uses.*"
        r"shuffle_block_size=2 ",
    ):
        model.train(max_epochs=1, batch_size=8, **TRAIN)
    model.train(max_epochs=1, batch_size=8, shuffle_block_size=4, **TRAIN)  # no warning


def test_results_go_into_the_closed_file_of_their_anndata(tmp_path):
    """write_results_to_store into the file of a backed AnnData the user had closed failed
    with h5py's "Unable to synchronously open object (invalid identifier type)"."""
    path = write_store(_cells(), tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, **TRAIN)
    with pytest.warns(UserWarning, match="open read-only"):
        keys = model.write_to_adata(cells)
    cells.file.close()
    dv.write_results_to_store(cells, keys, path)
    assert not cells.file.is_open
    np.testing.assert_array_equal(ad.read_h5ad(path).obsm["X_zinbvae"], cells.obsm["X_zinbvae"])


def test_a_file_rewritten_with_other_counts_in_its_middle_cells_is_refused(tmp_path):
    """Same cells, same genes, same number of stored values: only a count in the middle
    differs (the check samples the ends and the middle of the stored values)."""
    data = _cells()
    path = write_store(data, tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    cells.file.close()
    data.X.data[data.X.nnz // 2] += 1
    write_store(data, path)
    with pytest.raises(ValueError, match="replaced or rewritten since it was set up"):
        model.train(max_epochs=1, **TRAIN)


def test_the_matrix_get_from_registry_returns_stays_readable(tmp_path):
    """scvi-tools' get_from_registry returns a backed file's matrix itself: its file is left
    open (as anndata leaves it), not closed under the caller."""
    cells = ad.read_h5ad(write_store(_cells(), tmp_path / "cells.h5ad"), backed="r")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    cells.file.close()
    assert model.get_from_registry(cells, "X")[:2].shape == (2, 30)


@pytest.mark.filterwarnings("ignore:.*KL warm-up:UserWarning")
def test_a_call_reads_the_file_check_once_and_the_next_call_again(tmp_path, monkeypatch):
    """The check of the file on disk reads it once per public call (train and translate read
    it twice: an inner public call checked it again), and each call checks it anew."""
    from deltavae.model import _backing

    path = write_store(_cells(), tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(path, backed="r")
    cells.obs["condition"] = np.repeat(["a", "b"], 60)
    dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition")
    model = dv.model.CGMDVAE(cells, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
    reads = []
    fingerprint_of = _backing._fingerprint_of
    monkeypatch.setattr(_backing, "_fingerprint_of", lambda m: reads.append(1) or fingerprint_of(m))
    model.train(max_epochs=1, **TRAIN)
    assert len(reads) == 1
    reads.clear()
    model.translate(cells[:10], target_condition="b", response_weight=0)
    assert len(reads) == 1
    cells.file.close()
    write_store(_cells(seed=1), path)
    with pytest.raises(ValueError, match="replaced or rewritten since it was set up"):
        model.translate(cells[:10], target_condition="b", response_weight=0)


def test_a_write_that_failed_is_not_recorded_as_the_writer_of_its_keys(tmp_path):
    """A write_to_adata that failed after its results were in (here the read-only file's
    warning made an error) is undone, but its model stayed recorded as the writer of the
    keys: the next model writing them was told it had 'replaced obsm['X_zinbvae'], written
    before by another ZINBVAE', results that were never there."""
    data = _cells()
    data.obs["batch"] = np.tile(["a", "b"], data.n_obs // 2)
    cells = ad.read_h5ad(write_store(data, tmp_path / "cells.h5ad"), backed="r")
    dv.model.ZINBVAE.setup_anndata(cells, batch_key="batch")
    failed = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    dv.model.ZINBVAE.setup_anndata(cells)
    other = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    for model in (failed, other):
        model.train(max_epochs=1, **TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="open read-only"):
            failed.write_to_adata(cells)
    assert "X_zinbvae" not in cells.obsm  # put back
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        other.write_to_adata(cells)
    messages = [str(w.message) for w in said]
    assert any("open read-only" in m for m in messages)
    assert not any("written before by" in m for m in messages), messages
