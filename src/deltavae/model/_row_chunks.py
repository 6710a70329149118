"""The rows a matrix is read in at a time (model/_validation.py _chunks), and an in-memory CSR
matrix's rows read without a copy (model/_validation.py check_data)."""

from __future__ import annotations

import numpy as np


def row_bounds(X, chunk: int) -> list[tuple[int, int]]:
    """Rows read at a time, ``chunk`` of them; of a dask array, whole chunks of its own, as
    many as fit in ``chunk`` rows (one larger than that alone): a read across its chunks
    computed each of them for every read it met (from disk: read two or three times)."""
    sizes = getattr(X, "chunks", None) if type(X).__module__.startswith("dask") else None
    if not sizes:
        return [(start, min(start + chunk, X.shape[0])) for start in range(0, X.shape[0], chunk)]
    bounds, start, end = [], 0, 0
    for size in sizes[0]:
        if end > start and end + size - start > chunk:
            bounds.append((start, end))
            start = end
        end += size
    return [*bounds, (start, end)] if end > start else bounds


def csr_rows(X, start: int, stop: int):
    """The stored values and their column indices of rows ``start:stop`` of an in-memory CSR
    matrix, and the row pointers from 0: views of ``X``'s own arrays, where ``X[start:stop]``
    copied them (a whole pass over ``X``'s stored values for a check that only reads them)."""
    first, last = X.indptr[start], X.indptr[stop]
    return X.data[first:last], X.indices[first:last], X.indptr[start : stop + 1] - first


def nonzero_rows_genes(values, indices, indptr, genes: np.ndarray) -> np.ndarray:
    """Whether each row of a CSR block holds a value other than 0, from its stored ``values``
    (canonical: no column twice in a row), without the boolean copy of the block that
    ``block != 0`` builds; the columns with one are set in ``genes``, unless every column has
    been seen already (the first chunk of rows usually sees them all).

    Examples
    --------
    >>> genes = np.zeros(3, dtype=bool)
    >>> rows = nonzero_rows_genes(
    ...     np.array([1.0, 0.0, 2.0]), np.array([0, 2, 1]), np.array([0, 1, 2, 2, 3]), genes
    ... )
    >>> rows.tolist(), genes.tolist()
    ([True, False, False, True], [True, True, False])
    """
    if values.all():  # no 0 stored (the usual case): a row with a stored value has one
        rows = np.diff(indptr) > 0
    else:
        stored = values != 0
        rows = np.diff(np.concatenate(([0], np.cumsum(stored)))[indptr]) > 0
        indices = indices[stored]
    if not genes.all():
        genes[indices] = True
    return rows
