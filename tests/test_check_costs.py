"""What the data checks and a fit's records cost on a large AnnData: each reads the values it
checks without copying them (no slice of an in-memory CSR matrix, no boolean matrix for the
empty cells, no empty-cell search where none is warned of, no copy of every obs column), and
finds the same as before."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import deltavae as dv
from deltavae._checks import not_counts
from deltavae.model._labels import record_trained_categories
from deltavae.model._validation import check_data


@pytest.fixture
def sparse_calls(monkeypatch):
    """Counts of the slices and ``!= 0`` comparisons made of any scipy CSR or CSC matrix."""
    calls = {"slice": 0, "compare": 0}
    for cls in (sp.csr_matrix, sp.csc_matrix):
        getitem, ne = cls.__getitem__, cls.__ne__

        def counted_getitem(self, key, _getitem=getitem):
            calls["slice"] += 1
            return _getitem(self, key)

        def counted_ne(self, other, _ne=ne):
            calls["compare"] += 1
            return _ne(self, other)

        monkeypatch.setattr(cls, "__getitem__", counted_getitem)
        monkeypatch.setattr(cls, "__ne__", counted_ne)
    return calls


def _csr_with_stored_zeros():
    """Counts with cell 3 empty, cell 7 holding only stored zeros, gene 5 silent except for a
    stored 0 in cell 7."""
    rng = np.random.default_rng(0)
    dense = np.ceil(rng.random((30, 8)) * 5).astype(np.float32) * (rng.random((30, 8)) < 0.5)
    dense[:, 0] = 1.0
    dense[3] = dense[7] = 0
    dense[:, 5] = 0
    X = sp.csr_matrix(dense)
    indptr = X.indptr.copy()
    indptr[8:] += 2  # cell 7 stores (7, 2) = 0 and (7, 5) = 0
    data = np.insert(X.data, X.indptr[7], [0.0, 0.0])
    indices = np.insert(X.indices, X.indptr[7], [2, 5])
    X = sp.csr_matrix((data, indices, indptr), shape=X.shape)
    assert X.has_canonical_format and X.nnz == sp.csr_matrix(dense).nnz + 2
    return X


def test_a_csr_matrix_is_checked_without_slices_or_a_boolean_copy(sparse_calls):
    adata = ad.AnnData(_csr_with_stored_zeros())
    with pytest.warns(UserWarning) as said:
        check_data(adata)
    messages = [str(w.message) for w in said]
    assert any(m.startswith("2 cells in adata.X are all zeros (e.g. 3, 7)") for m in messages)
    assert any(m.startswith("1 genes in adata.X are zero in every cell") for m in messages)
    assert sparse_calls == {"slice": 0, "compare": 0}  # was 1 slice and 1 comparison per chunk


def test_a_bad_value_in_a_csr_matrix_is_still_named_with_its_rows(sparse_calls):
    X = _csr_with_stored_zeros()
    X.data[X.indptr[20]] = 2.5
    with pytest.raises(ValueError, match=r"non-integer values such as 2\.5 \(1 in cells 1-30\)"):
        check_data(ad.AnnData(X))


def test_a_csr_matrix_on_disk_is_checked_without_a_boolean_copy(sparse_calls, tmp_path):
    ad.AnnData(_csr_with_stored_zeros()).write_h5ad(tmp_path / "cells.h5ad")
    adata = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    with pytest.warns(UserWarning) as said:
        check_data(adata)
    messages = [str(w.message) for w in said]
    assert any(m.startswith("2 cells in adata.X are all zeros (e.g. 3, 7)") for m in messages)
    assert any(m.startswith("1 genes in adata.X are zero in every cell") for m in messages)
    assert sparse_calls["compare"] == 0  # was one `!= 0` of each chunk read
    adata.file.close()


@pytest.mark.parametrize("fmt", ["csc", "dense"])
def test_no_empty_cells_are_looked_for_where_none_are_warned_of(sparse_calls, fmt):
    X = _csr_with_stored_zeros()
    X = X.tocsc() if fmt == "csc" else X.toarray()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_data(ad.AnnData(X), warn_empty=False)
    assert sparse_calls["compare"] == 0  # was one `!= 0` a chunk
    with pytest.warns(UserWarning, match=r"2 cells in adata.X are all zeros \(e.g. 3, 7\)"):
        check_data(ad.AnnData(X))  # the other formats still find them


def test_not_counts_finds_the_same_values_without_np_fmod(monkeypatch):
    values = np.array([0.0, 2.0, 1.5, -1.0, np.nan, np.inf, -np.inf, -0.0, 1e30, 2.5e-8, -2.0])
    expected = values[[2, 3, 4, 5, 6, 9, 10]]  # what np.fmod(values, 1) != 0 | values < 0 found

    def no_fmod(*args, **kwargs):
        raise AssertionError("np.fmod took 8x as long as np.trunc over 20 million counts")

    monkeypatch.setattr(np, "fmod", no_fmod)
    for dtype in (np.float32, np.float64):
        found = not_counts(values.astype(dtype))
        np.testing.assert_array_equal(found, expected.astype(dtype))
    np.testing.assert_array_equal(not_counts(np.array([3, -2, 0])), [-2])


def test_the_trained_categories_read_only_the_condition_columns_and_each_value_once(monkeypatch):
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=10, n_clusters=2, seed=0)
    adata.obs["batch"] = pd.Categorical(["rare"] * 3 + ["a", "b"] * 27 + ["c"] * 3)
    adata.obs["notes"] = [f"cell {i}" for i in range(60)]  # read by nothing here
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="batch")
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    widths, converted = [], []
    take, astype = pd.DataFrame.take, pd.Series.astype

    def recorded_take(frame, indices, axis=0, **kwargs):
        if axis in (0, "index"):  # rows selected from a DataFrame: its columns copied
            widths.append(frame.shape[1])
        return take(frame, indices, axis=axis, **kwargs)

    def counted_astype(series, *args, **kwargs):
        converted.append(len(series))
        return astype(series, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "take", recorded_take)
    monkeypatch.setattr(pd.Series, "astype", counted_astype)

    def no_setdiff(*args):
        raise AssertionError("np.setdiff1d hashed every cell's position: 3 s for 1M cells")

    monkeypatch.setattr(np, "setdiff1d", no_setdiff)
    record_trained_categories(model, held_out=np.array([0, 1, 2, 57, 58, 59]))
    assert model.trained_categories_ == {"batch": ["a", "b"]}
    assert widths == [1]  # was the whole obs (every column) for the training cells
    assert sum(converted) <= 2  # was one string per training cell (54)
