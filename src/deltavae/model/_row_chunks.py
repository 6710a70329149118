"""The rows a matrix is read in at a time (model/_validation.py _chunks)."""

from __future__ import annotations


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
