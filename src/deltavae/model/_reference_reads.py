"""A single-cell reference read from disk (backed .h5ad, :func:`deltavae.read_lazy`) or held
in a dask array, for ``from_reference``: only what the signatures need is read into memory, a
chunk of rows at a time, and a warning gives the size where it is large. Both models had read
the whole reference (every layer, a dense X dense) into memory without a word."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import layer_matrix
from ._de_rows import matrix_bytes, warn_read_size
from ._matrices import cells_counting, in_memory, on_disk, take_columns, to_memory
from ._validation import _chunks, is_sparse


def _counts_only(reference: AnnData, layer: str | None, matrix, var: pd.DataFrame) -> AnnData:
    return AnnData(
        X=matrix if layer is None else None,
        obs=reference.obs,
        var=var,
        uns=reference.uns,
        obsm=dict(reference.obsm),
        layers={} if layer is None else {layer: matrix},
    )


def genes_in_memory(reference: AnnData, layer: str | None, genes: pd.Index, call: str) -> AnnData:
    """``reference`` in memory with its counts (``layer``; ``None``: X) of ``genes`` only
    (NMFDeconv's signatures and markers read those it shares with the spots): read a chunk of
    rows at a time where it is on disk; ``reference`` itself where it is in memory."""
    if not on_disk(reference):
        return reference
    if reference.isbacked and reference.is_view:  # anndata indexes a backed view no further
        return to_memory(reference)[:, genes]
    matrix = layer_matrix(reference, layer)
    source = reference.var_names.get_indexer(genes)
    size = matrix_bytes(matrix, reference.n_obs) * len(source) / max(1, reference.n_vars)
    warn_read_size(
        size,
        f"{call} reads the reference's counts of the {len(source)} genes it shares with the "
        f"spots ({reference.n_obs} cells)",
        "To read fewer, subset the reference's cells first (e.g. up to a few thousand of each "
        "type) or pass fewer genes.",
    )
    counts = take_columns(matrix, source, dense=not is_sparse(matrix))
    return _counts_only(reference, layer, counts, reference.var.iloc[source])


def counts_in_memory(reference: AnnData, layer: str | None, call: str, dense_cells: bool):
    """``reference`` in memory with its counts (``layer``; ``None``: X) only, read a chunk of
    rows at a time where it is on disk, with a warning of the size where it is large
    (``dense_cells``: the cells are also held dense, float32)."""
    if not on_disk(reference):
        return reference
    if reference.isbacked and reference.is_view:
        return to_memory(reference)
    matrix = layer_matrix(reference, layer)
    size = matrix_bytes(matrix, reference.n_obs)
    size += dense_cells * 4.0 * reference.n_obs * reference.n_vars
    warn_read_size(
        size,
        f"{call} reads the reference ({reference.n_obs} cells x {reference.n_vars} genes"
        + (", also dense" if dense_cells else "")
        + ")",
        "To read less, subset the reference's cells first (e.g. up to a few thousand of each "
        "type)" + (", or pass profiles='type' with labels_key" if dense_cells else "") + ".",
    )
    return _counts_only(reference, layer, in_memory(matrix), reference.var)


def type_sums(matrix, codes: np.ndarray, n_types: int, counting=None) -> np.ndarray:
    """Per-type sums of the rows of ``matrix`` (in memory or on disk: a chunk of rows at a
    time), types x genes, float64; ``codes`` is each row's type (``-1``: none). ``counting``:
    an array (genes) each gene's number of rows with a count is added to, from the same read.

    Examples
    --------
    >>> type_sums(np.array([[1, 2], [3, 4], [5, 6]]), np.array([0, 1, 0]), 2).tolist()
    [[6.0, 8.0], [3.0, 4.0]]
    """
    from scipy import sparse

    totals, start = np.zeros((n_types, matrix.shape[1])), 0
    blocks = [matrix] if isinstance(matrix, np.ndarray) or sparse.issparse(matrix) else None
    for block in blocks or _chunks(matrix):
        rows = codes[start : start + block.shape[0]]
        start += block.shape[0]
        kept = np.flatnonzero(rows >= 0)
        if counting is not None:
            counting += cells_counting(block)
        membership = sparse.csr_matrix(
            (np.ones(len(kept)), (rows[kept], kept)), shape=(n_types, block.shape[0])
        )
        if sparse.issparse(block):
            totals += (membership @ block.astype(np.float64)).toarray()
        else:
            totals += membership @ np.asarray(block, dtype=np.float64)
    return totals


def in_chunks(reference: AnnData, design: str, profiles: str, labels_key) -> bool:
    """Whether SpatialImputer.from_reference makes its profiles from ``reference`` a chunk of
    rows at a time: on disk or in dask arrays, for per-type profiles of given labels (the
    neighbours, the latent design and clustering read every cell)."""
    whole = design != "deconvolution" or profiles != "type" or labels_key is None
    return not whole and on_disk(reference) and not (reference.isbacked and reference.is_view)


def type_profiles(reference: AnnData, layer: str | None, labels, spots: AnnData):
    """The mean counts of each type (types x genes), the reference's genes less the spots'
    genes it never counts, and those shared with the spots, as ``reference_genes`` and
    ``state_profiles`` make them, from per-type sums a chunk of rows at a time; and the
    number of cells counting each of those genes, from the same read."""
    from ._imputer_reference import reference_genes, type_means

    codes = np.asarray(labels.codes)
    counting = np.zeros(reference.n_vars, dtype=np.int64)
    matrix = layer_matrix(reference, layer)
    sums = type_sums(matrix, codes, len(labels.categories), counting)
    _, genes, shared = reference_genes(sums, reference.var_names, spots.var_names)
    columns = pd.Index(reference.var_names.astype(str)).get_indexer(genes)
    return type_means(sums[:, columns], labels, genes), genes, shared, counting[columns]
