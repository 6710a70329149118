"""Registered matrices that may live on disk (backed .h5ad, zarr): read in chunks of rows."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._validation import _chunks


def in_memory(x):
    """A registered matrix in memory: ``x`` itself when it is a numpy array or a scipy sparse
    matrix, else (a backed sparse dataset, an h5py or zarr array) read in chunks of rows.

    Examples
    --------
    >>> in_memory(np.eye(2)).shape
    (2, 2)
    """
    if isinstance(x, np.ndarray) or sparse.issparse(x):
        return x
    parts = list(_chunks(x))
    if not parts:
        return np.zeros(x.shape, dtype=x.dtype)
    if sparse.issparse(parts[0]):
        return sparse.vstack(parts, format="csr")
    return np.concatenate([np.asarray(part) for part in parts])


def row_sums(x) -> np.ndarray:
    """Per-row totals of a matrix in memory or on disk (read in chunks of rows), float64.

    Examples
    --------
    >>> row_sums(np.array([[1, 2], [3, 4]])).tolist()
    [3.0, 7.0]
    """
    if isinstance(x, np.ndarray) or sparse.issparse(x):
        return np.asarray(x.sum(1, dtype=np.float64)).ravel()
    totals = [np.asarray(block.sum(1, dtype=np.float64)).ravel() for block in _chunks(x)]
    return np.concatenate(totals) if totals else np.zeros(0)


def on_disk(adata: AnnData) -> bool:
    """Whether ``adata``'s X or a layer is read from disk (backed .h5ad, :func:`read_lazy`)."""
    matrices = [adata.X, *adata.layers.values()] if not adata.isbacked else []
    return adata.isbacked or any(
        m is not None and not (isinstance(m, np.ndarray) or sparse.issparse(m)) for m in matrices
    )


def adata_in_memory(adata: AnnData) -> AnnData:
    """``adata`` itself when its matrices are in memory, else an in-memory AnnData of it (X and
    layers read in chunks of rows; obs, var, obsm and uns shared)."""
    if not on_disk(adata):
        return adata
    if adata.isbacked:
        return adata.to_memory()
    return AnnData(
        X=in_memory(adata.X),
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        layers={name: in_memory(m) for name, m in adata.layers.items()},
    )
