"""Differential expression of an AnnData read from disk (backed .h5ad, :func:`deltavae.read_lazy`)
or held in a dask array: scvi-tools reads the counts with numpy operations such a matrix lacks,
so they are read into memory, but only those of the cells compared: scvi-tools draws the
expression of the cells of ``idx1``/``idx2`` (``group1``/``group2``) and counts theirs, no
other. Reading the whole matrix (an atlas: tens of GB) ran out of memory without a word."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from ._matrices import on_disk, take_rows
from ._validation import is_sparse, warn_user

#: Bytes read into memory above which differential expression says so (with how to read fewer).
WARN_BYTES = 2**30


def idx_rows(adata: AnnData, idx) -> np.ndarray:
    """Row positions of an ``idx1``/``idx2`` as scvi-tools takes it: a query string on
    ``obs``, a boolean mask or positions."""
    if isinstance(idx, str):
        return adata.obs.index.get_indexer(adata.obs.query(idx).index)
    idx = np.asarray(idx)
    return np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)


def compared_rows(adata: AnnData, given: dict) -> np.ndarray | None:
    """Increasing positions of the cells a differential expression call reads, ``None`` where
    it reads them all (against the rest: every other cell)."""
    if given.get("kwargs", {}).get("subset_idx") is not None:
        return None
    idx1, idx2 = given.get("idx1"), given.get("idx2")
    if idx1 is not None:
        if idx2 is None:
            return None
        mask = np.zeros(adata.n_obs, dtype=bool)
        mask[idx_rows(adata, idx1)] = True
        mask[idx_rows(adata, idx2)] = True
        return np.flatnonzero(mask)
    groupby = given.get("groupby")
    if groupby is None or groupby not in adata.obs:
        return None
    column = adata.obs[groupby]
    group1, group2 = given.get("group1"), given.get("group2")
    if group1 is None or group2 is None:  # each against the rest: every cell of a group
        keep = column.notna().to_numpy()
    else:
        names = [group1] if np.ndim(group1) == 0 else list(group1)
        names += [group2] if np.ndim(group2) == 0 else list(group2)
        keep = column.isin(names).to_numpy()
    rows = np.flatnonzero(keep)
    return None if len(rows) == adata.n_obs else rows


def _registered_matrix(model, adata: AnnData):
    """The name (``None``: X) and matrix of ``adata`` the model reads its counts from."""
    field = model.adata_manager.data_registry[scvi.REGISTRY_KEYS.X_KEY]
    layer = None if field.attr_name == "X" else field.attr_key
    return layer, adata.X if layer is None else adata.layers[layer]


def warn_read_size(size: float, what: str, advice: str) -> None:
    """A warning that ``what`` (a sentence's start: "X reads ...") reads ``size`` bytes into
    memory, with ``advice``, where that is :data:`WARN_BYTES` or more."""
    if size >= WARN_BYTES:
        warn_user(f"{what} into memory: about {size / 1e9:.1f} GB. {advice}")


def matrix_bytes(x, n_rows: int) -> float:
    """Bytes ``n_rows`` rows of ``x`` take in memory: a sparse one's stored values with their
    column indices (a dask array of sparse chunks, whose are unknown: as if dense)."""
    itemsize = np.dtype(getattr(x, "dtype", np.float64)).itemsize
    group = getattr(x, "group", None)
    if is_sparse(x) and group is not None and "data" in group:
        return group["data"].shape[0] / max(1, x.shape[0]) * n_rows * (itemsize + 4)
    if is_sparse(x) and hasattr(x, "nnz"):
        return x.nnz / max(1, x.shape[0]) * n_rows * (itemsize + 4)
    return float(n_rows) * x.shape[1] * itemsize


def _base_rows(adata: AnnData) -> tuple[AnnData, np.ndarray]:
    """The AnnData a view (of cells) views and the positions of its cells there."""
    if not adata.is_view:
        return adata, np.arange(adata.n_obs)
    base = adata._adata_ref
    vidx = adata._vidx
    if not (isinstance(vidx, slice) and vidx == slice(None)):
        return adata, np.arange(adata.n_obs)  # genes subset too: read through the view
    return base, np.arange(base.n_obs)[adata._oidx]


def rows_in_memory(adata: AnnData, rows: np.ndarray, layer: str | None) -> AnnData:
    """An in-memory AnnData of ``adata``'s cells ``rows`` (in their order) with the counts
    matrix (``layer``, ``None``: X) read a chunk of rows at a time; obs, obsm of those cells,
    var and uns kept. Nothing else of the matrices on disk is read."""
    base, positions = _base_rows(adata)
    positions = positions[rows]
    order = np.argsort(positions, kind="stable")
    source = base.X if layer is None else base.layers[layer]
    matrix = take_rows(source, positions[order])
    if not np.array_equal(order, np.arange(len(order))):
        matrix = matrix[np.argsort(order)]
    if hasattr(matrix, "tocsr"):
        matrix = matrix.tocsr()
    obsm = {
        k: v.iloc[rows] if isinstance(v, pd.DataFrame) else np.asarray(v)[rows]
        for k, v in adata.obsm.items()
    }
    return AnnData(
        X=matrix if layer is None else None,
        obs=adata.obs.iloc[rows].copy(),
        var=adata.var.copy(),
        uns=adata.uns,
        obsm=obsm,
        layers={} if layer is None else {layer: matrix},
    )


def de_in_memory(model, method, args: tuple, kwargs: dict, set_argument) -> tuple[tuple, dict]:
    """The call's ``args`` and ``kwargs`` with an AnnData on disk or in a dask array replaced
    by an in-memory one of the cells compared (``idx1``/``idx2`` as masks of those), read a
    chunk of rows at a time; a warning gives the size where it is large."""
    given = inspect.signature(method).bind_partial(model, *args, **kwargs).arguments
    target = model.adata if given.get("adata") is None else given["adata"]
    if not on_disk(target):
        return args, kwargs
    layer, matrix = _registered_matrix(model, target)
    rows = compared_rows(target, given)
    n_rows = target.n_obs if rows is None else len(rows)
    size = matrix_bytes(matrix, n_rows)
    what = (
        "every cell's counts (against the rest: every other cell)"
        if rows is None
        else f"the counts of the {n_rows} of {target.n_obs} cells compared"
    )
    warn_read_size(
        size,
        f"differential_expression reads {what}",
        "To read fewer, compare with one group (group2=..., or idx2=...) rather than the "
        "rest, or pass fewer cells.",
    )
    memory = rows_in_memory(target, np.arange(target.n_obs) if rows is None else rows, layer)
    args, kwargs = set_argument(method, args, kwargs, "adata", memory)
    if rows is None:
        return args, kwargs
    for arg in ("idx1", "idx2"):
        value = given.get(arg)
        if value is None or isinstance(value, str):  # a query reads the copy's obs alike
            continue
        mask = np.zeros(target.n_obs, dtype=bool)
        mask[idx_rows(target, value)] = True
        args, kwargs = set_argument(method, args, kwargs, arg, mask[rows])
    return args, kwargs
