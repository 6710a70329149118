"""Registered matrices that may live on disk (backed .h5ad, zarr): read in chunks of rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._backing import _zarr_folder, check_contents, check_openable
from ._validation import _chunks, chunk_rows, computed, is_sparse


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
    return _stacked(parts) if parts else np.zeros(x.shape, dtype=x.dtype)


def _stacked(parts: list):
    """Chunks of rows read from disk, as one matrix in memory (CSR if they are sparse)."""
    if sparse.issparse(parts[0]):
        return sparse.vstack(parts, format="csr")
    return np.concatenate([np.asarray(part) for part in parts])


def take_rows(x, rows: np.ndarray):
    """Rows ``rows`` (increasing) of a matrix in memory or on disk (backed .h5ad, zarr), in
    memory; one on disk is read a chunk of rows at a time.

    Examples
    --------
    >>> take_rows(np.array([[1, 2], [3, 4], [5, 6]]), np.array([0, 2])).tolist()
    [[1, 2], [5, 6]]
    """
    if isinstance(x, np.ndarray) or sparse.issparse(x):
        return x[rows]
    step = chunk_rows(x)
    parts = [computed(x[rows[start : start + step]]) for start in range(0, len(rows), step)]
    return _stacked(parts) if parts else computed(x[:0])


def take_columns(x, source: np.ndarray, dense: bool = False):
    """Columns ``source`` of ``x`` in that order (``-1``: a column of zeros), in memory: a CSR
    matrix of ``x``'s dtype, or with ``dense`` (and no ``-1``) an array. A matrix on disk
    (backed .h5ad, zarr) is read a chunk of rows at a time, so that memory holds the result
    and one chunk, never the whole matrix read at once.

    Examples
    --------
    >>> take_columns(np.array([[1, 2], [3, 4]]), np.array([1, -1])).toarray().tolist()
    [[2, 0], [4, 0]]
    """
    source = np.asarray(source)
    kept = np.flatnonzero(source >= 0)
    blocks = [x] if isinstance(x, np.ndarray) or sparse.issparse(x) else _chunks(x)
    if dense and len(kept) == len(source) and not is_sparse(x):
        result, row = np.empty((x.shape[0], len(source)), dtype=x.dtype), 0
        for block in blocks:  # filled in place: memory holds the result and one chunk
            result[row : row + block.shape[0]] = np.asarray(block)[:, source]
            row += block.shape[0]
        return result
    parts = []
    for block in blocks:
        block = sparse.csr_matrix(block)
        out = block[:, source[kept]].tocsr()
        # Column j of out is column kept[j] of the result: kept increases, so rows stay sorted.
        parts.append(
            sparse.csr_matrix(
                (out.data, kept[out.indices], out.indptr),
                shape=(block.shape[0], len(source)),
                dtype=block.dtype,
            )
        )
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return sparse.csr_matrix((0, len(source)), dtype=x.dtype)
    return sparse.vstack(parts, format="csr")


def has_negatives(x) -> bool:
    """Whether a matrix in memory or on disk (read in chunks of rows) holds a value below 0.

    Examples
    --------
    >>> has_negatives(np.array([[0.0, 2.0]])), has_negatives(sparse.csr_matrix([[0.0, -1.0]]))
    (False, True)
    """
    blocks = [x] if isinstance(x, np.ndarray) or sparse.issparse(x) else _chunks(x)
    for block in blocks:
        values = block.data if sparse.issparse(block) else np.asarray(block)
        if values.size and values.min() < 0:
            return True
    return False


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


def cells_counting(matrix) -> np.ndarray:
    """The number of rows (cells) with a count above 0 in each column (gene) of ``matrix``
    (in memory, dense or sparse).

    Examples
    --------
    >>> cells_counting(np.array([[0, 2, 1], [0, 0, 3]])).tolist()
    [0, 1, 2]
    """
    if sparse.issparse(matrix):
        return np.asarray((matrix > 0).sum(axis=0)).ravel().astype(np.int64)
    return np.count_nonzero(np.asarray(matrix) > 0, axis=0).astype(np.int64)


def column_sums(x, counting: np.ndarray | None = None) -> np.ndarray:
    """Per-column totals of a matrix in memory or on disk (read in chunks of rows), float64.
    ``counting``: an array (columns) each column's number of rows with a count above 0 is
    added to, from the same read.

    Examples
    --------
    >>> counting = np.zeros(2, dtype=np.int64)
    >>> column_sums(np.array([[1, 0], [3, 0]]), counting).tolist(), counting.tolist()
    ([4.0, 0.0], [2, 0])
    """
    blocks = [x] if isinstance(x, np.ndarray) or sparse.issparse(x) else _chunks(x)
    total = np.zeros(x.shape[1])
    for block in blocks:
        total += np.asarray(block.sum(0, dtype=np.float64)).ravel()
        if counting is not None:
            counting += cells_counting(block)
    return total


def on_disk(adata: AnnData) -> bool:
    """Whether ``adata``'s X or a layer is read from disk (backed .h5ad, :func:`read_lazy`)."""
    matrices = [adata.X, *adata.layers.values()] if not adata.isbacked else []
    return adata.isbacked or any(
        m is not None and not (isinstance(m, np.ndarray) or sparse.issparse(m)) for m in matrices
    )


def in_dask(adata: AnnData) -> bool:
    """Whether ``adata`` is not backed and its X or a layer is a dask array (in memory, or
    reading a file through its graph): not "on disk" as a backed file or a zarr store is,
    and what keeps it lazy differs (it is reordered lazily: ``adata[:, genes].copy()``)."""
    matrices = [adata.X, *adata.layers.values()] if not adata.isbacked else []
    return any(type(m).__module__.startswith("dask") for m in matrices)


def holds_handles(adata: AnnData) -> bool:
    """Whether ``adata`` reads a matrix through an open file handle (backed .h5ad, read_lazy's
    zarr store), which pickle cannot carry; a dask array pickles (its graph names the file)."""
    matrices = [adata.X, *adata.layers.values()] if not adata.isbacked else []
    return adata.isbacked or any(
        m is not None
        and not (isinstance(m, np.ndarray) or sparse.issparse(m))
        and not type(m).__module__.startswith("dask")
        for m in matrices
    )


def check_still_on_disk(adata: AnnData | None) -> None:
    """The .h5ad file or zarr store ``adata`` reads its matrices from is still where it was
    opened: a closed backed file that was moved failed deep in h5py, and a zarr store moved
    or deleted was read as zeros (zarr's value for a missing chunk), so models trained and
    read out on nothing without a word.

    Examples
    --------
    >>> check_still_on_disk(AnnData(np.ones((2, 2))))
    """
    adata = adata._adata_ref if adata is not None and adata.is_view else adata
    if adata is None:
        return
    advice = (
        "Open it where it is now ({how}) and pass that AnnData to the read-out, or load the "
        "saved model onto it (Model.load(saved_dir, adata=adata)) to train on it."
    )
    if adata.isbacked:
        if not adata.file.is_open and not Path(adata.filename).exists():
            raise FileNotFoundError(
                f"adata's backing file {str(adata.filename)!r} no longer exists (moved or "
                "deleted since it was opened). "
                + advice.format(how="anndata.read_h5ad(new_path, backed='r')")
            )
        check_openable(adata)  # locked by a writer elsewhere
        check_contents(adata)  # replaced at the same path
        return
    for key, matrix in [("X", adata.X), *adata.layers.items()]:
        folder = _zarr_folder(matrix)
        if folder is not None and not folder.exists():
            where = "adata.X" if key == "X" else f"adata.layers[{key!r}]"
            raise FileNotFoundError(
                f"{where} is read from {str(folder)!r}, which no longer exists: the zarr store "
                "was moved or deleted since it was opened (zarr would read it as zeros). "
                + advice.format(how="dv.read_lazy(new_path)")
            )
    check_contents(adata)


def to_memory(adata: AnnData) -> AnnData:
    """``adata.to_memory()`` that leaves a backed AnnData's file as it found it.

    anndata's closes the file of a backed AnnData, or of the AnnData a view of one views: the
    user's ``adata.file["X"]``, writes into it and training on it failed afterwards. Here the
    file keeps its state, and its h5py handle (datasets taken from it stay usable).
    """
    if not adata.isbacked:
        return adata.to_memory()
    manager = adata.file
    was_open = manager.is_open
    manager.close = lambda: None  # anndata's last step, for this call only
    try:
        copy = adata.to_memory()
        # Of a backed view, anndata keeps obsm, varm, ... as views into the file's AnnData:
        # the copy held the file (it could not be pickled). Their own copies instead.
        for mapping in (copy.obsm, copy.varm, copy.obsp, copy.varp, copy.layers):
            for key, value in list(mapping.items()):
                if getattr(value, "_view_args", None) is not None:
                    mapping[key] = value.copy()
        return copy
    finally:
        del manager.close
        if not was_open:  # reading X opened it
            manager.close()


def memory_copy(adata: AnnData) -> AnnData:
    """A copy of ``adata`` (a view: a subset of cells or genes) with its matrices in memory:
    anndata copies a backed AnnData only to a file, so its rows are read with
    :func:`to_memory`, which leaves the file as it was."""
    return to_memory(adata) if adata.isbacked else adata.copy()


def adata_in_memory(adata: AnnData) -> AnnData:
    """``adata`` itself when its matrices are in memory, else an in-memory AnnData of it (X and
    layers read in chunks of rows; obs, var, obsm and uns shared)."""
    if not on_disk(adata):
        return adata
    if adata.isbacked:
        return to_memory(adata)
    return AnnData(
        X=in_memory(adata.X),
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        layers={name: in_memory(m) for name, m in adata.layers.items()},
    )


def with_column(adata: AnnData, key: str, values) -> AnnData:
    """An AnnData sharing ``adata``'s matrices (nothing copied) with ``obs[key] = values`` in
    an obs of its own, so that the caller's obs stays as it is."""
    obs = adata.obs.copy()
    obs[key] = values
    return AnnData(
        X=adata.X, obs=obs, var=adata.var, layers=dict(adata.layers), obsm=dict(adata.obsm)
    )
