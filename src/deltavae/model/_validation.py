"""Early, clear checks of user input, run before anything touches the AnnData."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.abc import CSCDataset, CSRDataset
from scipy import sparse

from .._anndata_or_folder import check_anndata
from .._checks import (
    check_bools,
    is_number,
    not_count_repr,
    not_counts,
    short_repr,
    x_or_none,
)
from .._io import csc_advice, dense_advice, is_dense_zarr
from .._numbered_obs import refuse_numbered_tables
from .._warn import warn_user
from ._count_advice import (
    counts_hint,
    drop_empty,
    empty_x_hint,
    missing_layer_error,
    why_not_whole,
)
from ._row_chunks import csr_rows, nonzero_rows_genes, row_bounds
from ._setup_instead import SETUP_INSTEAD, drop_scvi_defaults

logger = logging.getLogger(__name__)

_CHUNK = 10_000
#: Bytes of a dense chunk of rows: a few checks' temporaries of this size stay small.
_CHUNK_BYTES = 2**26
#: Every read-out's refusal of an AnnData with no rows (a selection that kept none).
NO_CELLS = "adata holds no cells (0 observations); pass at least one cell."


def is_sparse(X) -> bool:
    """Whether ``X`` is a sparse matrix in memory or on disk (anndata's sparse dataset), or a
    dask array of sparse chunks (anndata's lazy reads of one)."""
    return (
        sparse.issparse(X)
        or isinstance(X, CSRDataset | CSCDataset)
        or sparse.issparse(getattr(X, "_meta", None))
    )


def chunk_rows(X) -> int:
    """Rows read at a time from ``X``: up to 10,000, fewer for a wide matrix so that a chunk
    holds about 64 MiB (at least 256 rows): a dense one's values, a sparse one's stored values
    and their column indices (a full-transcriptome atlas held 240 MB in 10,000 rows).

    Examples
    --------
    >>> chunk_rows(np.zeros((5, 33_000), dtype=np.float32))
    508
    >>> chunk_rows(sparse.csr_matrix((5, 33_000)))
    10000
    """
    itemsize = np.dtype(getattr(X, "dtype", np.float64)).itemsize
    if sparse.issparse(X) or isinstance(X, CSRDataset | CSCDataset):
        # stored values per row, on average, each with its column index (a dask array's are
        # not known before it is read: bounded as if dense)
        width = (X.nnz if sparse.issparse(X) else X.group["data"].shape[0]) / max(1, X.shape[0])
        return int(np.clip(_CHUNK_BYTES // max(1, width * (itemsize + 4)), 256, _CHUNK))
    return int(np.clip(_CHUNK_BYTES // max(1, X.shape[1] * itemsize), 256, _CHUNK))


def _matrix(adata: AnnData, layer: str | None, name: str = "adata", counts: bool = False):
    if layer is not None and not isinstance(layer, str):  # the matrix itself: "unhashable type"
        raise TypeError(f"A layer is a name in {name}.layers, not a {type(layer).__name__}.")
    if layer is None:
        if (X := x_or_none(adata)) is None:
            raise ValueError(f"{name}.X is empty (None){empty_x_hint(adata, name)}")
        return X
    if layer not in adata.layers:
        raise missing_layer_error(adata, layer, name, counts)
    return adata.layers[layer]


def _chunks(X, chunk: int | None = None) -> Iterator[np.ndarray | sparse.spmatrix]:
    # Row chunks, so that a large or backed matrix is never densified whole; a dask array's
    # computed (of sparse chunks, np.asarray gave an array of objects).
    chunk = chunk or chunk_rows(X)
    for start, stop in row_bounds(X, chunk):
        yield computed(X[start:stop])


def computed(block):
    """Rows read from a matrix, in memory: a dask array's computed (numpy or scipy), else
    ``block`` itself."""
    return block.compute() if type(block).__module__.startswith("dask") else block


def _values(block) -> np.ndarray:
    if sparse.issparse(block):
        return np.asarray(block.data)
    return np.asarray(block)


def check_data(
    adata: AnnData,
    layer: str | None = None,
    kind: Literal["counts", "real", "binary"] = "counts",
    min_cells: int = 2,
    warn_empty: bool = True,
    name: str = "adata",
    unit: str = "cells",
) -> None:
    """Check the data matrix a model will read.

    Raises a ``ValueError`` that names the problem for: fewer than 2 cells, NaN or infinite
    values, and (``kind="counts"``) negative or non-integer values, (``kind="binary"``) values
    outside [0, 1]. Warns about all-zero cells and genes; raises if every cell is empty.

    Parameters
    ----------
    adata
        The AnnData to check. It is only read.
    layer
        Layer holding the data; ``None`` for ``adata.X``.
    kind
        What the likelihood needs: raw ``"counts"``, any ``"real"`` values, or ``"binary"``
        values in [0, 1].
    min_cells
        Fewest cells accepted: 2 to train, 1 to read results.
    warn_empty
        Warn about all-zero cells and genes.
    name
        What to call the AnnData in messages (e.g. ``"reference"``).
    unit
        What its rows are, in messages: ``"cells"`` or, for spatial models, ``"spots"``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> check_data(ad.AnnData(np.array([[1.0, 0.0], [0.0, 2.0]])))
    >>> check_data(ad.AnnData(np.array([[1.5, 0.0], [0.0, 2.0]])))
    Traceback (most recent call last):
    ...
    ValueError: adata.X must hold raw counts: found non-integer values such as 1.5 ...
    """
    where = f"{name}.X" if layer is None else f"{name}.layers[{layer!r}]"
    if adata.n_obs < min_cells:
        if min_cells == 1:
            raise ValueError(NO_CELLS.replace("cell", unit[:-1]))
        raise ValueError(
            f"At least {min_cells} {unit} are needed to train a model; got {adata.n_obs}."
        )
    if adata.n_vars < 1:
        raise ValueError("adata has no variables (genes).")
    # CGMDVAE's setup checks "real" values (its likelihood comes later): a layer named for
    # counts is looked for as counts
    counts = kind == "counts" or "count" in str(layer).lower()
    X = _matrix(adata, layer, name, counts=counts)
    if is_dense_zarr(X):  # a dense layer (or X) of read_lazy's zarr store
        store = getattr(getattr(X, "store", None), "root", "store.zarr")
        raise ValueError(
            f"{where} is stored dense in a zarr store; deltavae streams sparse matrices from "
            f"zarr stores. {dense_advice(layer or 'X', store)}"
        )
    csc = isinstance(X, CSCDataset) or getattr(getattr(X, "_meta", None), "format", "") == "csc"
    if csc and min_cells > 1:  # to train on (read-outs: said at setup)
        # on disk or a dask array (read_elem_lazy's chunks of all cells): scvi-tools warns of
        # CSC in memory only
        warn_user(csc_advice(where))
    if sparse.issparse(X) and not sparse.isspmatrix(X):
        raise TypeError(
            f"{where} is a scipy sparse array ({type(X).__name__}), which scvi-tools does not "
            f"read; make it a sparse matrix: {where} = scipy.sparse.csr_matrix({where})."
        )
    cell_nonzero, lowest = np.zeros(adata.n_obs, dtype=bool), 0
    gene_nonzero = np.zeros(adata.n_vars, dtype=bool)
    # An in-memory CSR matrix (canonical: the sums of repeated entries are what is read) is
    # read through views of its arrays; a slice of it copied every stored value.
    csr = sparse.isspmatrix_csr(X) and X.has_canonical_format
    # Each check reduces the chunk without a chunk-sized copy where numpy allows it.
    for row, stop in row_bounds(X, chunk_rows(X)):
        if csr:
            values, indices, indptr = csr_rows(X, row, stop)
            block = None  # sliced only for the message of a value that is not a count
        else:
            block = computed(X[row:stop])  # read from disk or dask: a CSR block of its own
            values = _values(block)
            rows_of = sparse.isspmatrix_csr(block) and block.has_canonical_format
            indices, indptr = (block.indices, block.indptr) if rows_of else (None, None)
        if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
            raise ValueError(f"{where} must be numeric; got dtype {values.dtype}.")
        if values.dtype.kind == "f" and not np.isfinite(np.sum(values, dtype=np.float64)):
            n_nan = int(np.isnan(values).sum())  # NaN, inf or (float64) an overflowing sum
            if n_nan:
                raise ValueError(f"{where} contains {n_nan} NaN values; fill or remove them first.")
            if not np.isfinite(values).all():
                raise ValueError(f"{where} contains infinite values; data must be finite.")
        low, high = (values.min(), values.max()) if values.size else (0, 0)
        lowest = min(lowest, low)
        if kind == "counts":
            if values.dtype == bool:  # a detection (binarised) matrix: read as 0/1 counts
                raise ValueError(
                    f"{where} must hold raw counts: found booleans (True/False), detected or "
                    f"not. If they are counts of 0 and 1, convert them: {where} = "
                    f"{where}.astype(np.float32)." + counts_hint(adata, layer, name, unit)
                )
            if low < 0:
                raise ValueError(
                    f"{where} must hold raw counts: found negative values (min {low})."
                    + counts_hint(adata, layer, name, unit)
                )
            frac = not_counts(values)  # not whole: the negative ones were refused above
            if frac.size:
                block = X[row:stop] if block is None else block
                raise ValueError(
                    f"{where} must hold raw counts: found non-integer values such as "
                    f"{not_count_repr(frac.flat[0])} "
                    f"({frac.size} in {unit} {row + 1}-{stop}): "
                    + why_not_whole(
                        frac,
                        high,
                        np.asarray(block.sum(axis=1)).ravel(),
                        unit,
                        where,
                        sparse.issparse(block),
                    )
                    + counts_hint(adata, layer, name, unit)
                )
        elif kind == "binary" and (low < 0 or high > 1):
            raise ValueError(
                f"{where} must lie in [0, 1] for a Bernoulli likelihood; found values in "
                f"[{low:g}, {high:g}]."
            )
        if not warn_empty:  # the empty cells and genes are not looked for
            continue
        if indptr is not None:
            cell_nonzero[row:stop] = nonzero_rows_genes(values, indices, indptr, gene_nonzero)
        else:
            nonzero = block != 0  # booleans: a quarter of a float32 chunk
            cell_nonzero[row:stop] = np.asarray(nonzero.sum(axis=1)).ravel() > 0
            gene_nonzero |= np.asarray(nonzero.sum(axis=0)).ravel() > 0
    if not warn_empty:
        return
    n_empty = int((~cell_nonzero).sum())
    if n_empty == adata.n_obs:
        raise ValueError(
            f"Every {unit[:-1]} in {where} is all zeros; there is nothing to learn from."
        )
    if n_empty:
        names = ", ".join(map(str, adata.obs_names[~cell_nonzero][:5]))
        warn_user(
            f"{n_empty} {unit} in {where} are all zeros (e.g. {names}); consider "
            f"{drop_empty(name, layer, True, kind == 'counts', lowest >= 0)}."
        )
    n_silent = int((~gene_nonzero).sum())
    if n_silent:
        warn_user(
            f"{n_silent} genes in {where} are zero in every {unit[:-1]}; consider "
            f"{drop_empty(name, layer, False, kind == 'counts', lowest >= 0)}."
        )


def check_setup_target(adata, kwargs: dict | None = None, model: str | None = None) -> None:
    """Check that ``setup_anndata`` (also a query's) was given an AnnData it can register
    fields on, and (``kwargs``, its extra keywords) no argument ``model`` does not take:
    scvi-tools' ``register_fields`` would name none of them usefully. scvi-tools' setup
    arguments ``model`` lacks, given at their default ``None``, are removed from ``kwargs``
    (``drop_scvi_defaults``): they register nothing.

    scvi-tools' own message for a view (``Please run `adata = adata.copy()```) does not say
    why; this one does, before any field is written.

    Parameters
    ----------
    adata
        What was passed to ``setup_anndata``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> check_setup_target(ad.AnnData(np.ones((3, 2))))
    >>> check_setup_target(ad.AnnData(np.ones((3, 2)))[:2])
    Traceback (most recent call last):
    ...
    ValueError: adata is a view ...
    """
    # scvi-tools' arguments the model lacks, at their default (None): removed, as no-ops.
    drop_scvi_defaults(kwargs if kwargs is not None else {}, model or "")
    # load and load_query_data pass the saved setup arguments (with source_registry) back.
    unexpected = [] if "source_registry" in (kwargs or {}) else sorted(kwargs or {})
    if unexpected:
        key = unexpected[0]
        hint = SETUP_INSTEAD.get(model or "", {}).get(
            key, "see its docstring for the arguments it takes"
        )
        raise TypeError(f"{model}.setup_anndata() got an unexpected argument {key!r}: {hint}.")
    # A file's name, a table (worded as every method words them), a minified AnnData (zeros
    # for counts: the cells were read as empty).
    check_anndata(adata, call=f"{model or 'Model'}.setup_anndata(adata)", optional=False)
    if adata.is_view:
        fix = (
            "Pass the subset in memory, adata = adata[mask].to_memory(), or keep it on disk: "
            "adata = adata[mask].copy(filename='subset.h5ad') (a backed AnnData is not copied "
            "otherwise)."
            if adata.isbacked
            # adata = adata.copy(): right for a subset of cells or genes (the HVGs' view,
            # adata[:, adata.var["highly_variable"]]), where adata[mask] reads a gene mask as rows
            else "Pass a copy of the subset: adata = adata.copy() (or subset with a copy, "
            "adata = adata[mask].copy(), adata[:, mask].copy() for genes)."
        )
        raise ValueError(
            "adata is a view (a subset such as adata[mask] that shares its parent's data); "
            "setup_anndata writes the model's fields to it, which a view cannot hold. "
            f"{fix}"
        )
    # Results name genes (expression tables, new data matched by name): each name once.
    _refuse_unnamed_genes(adata.var_names, "adata")
    _refuse_duplicates(pd.Index(adata.var_names.astype(str)), "adata")
    refuse_numbered_tables(adata, "adata")  # anndata copies, subsets of it fail


def refuse_numeric_names(adata: AnnData, who: str) -> None:
    """Refuse obs or var names held as numbers (an index of integers read from a table):
    anndata cannot subset such an AnnData (``adata[mask]``, ``adata[:, genes]`` fail with
    "Don't call _normalize_index with non-categorical/string names"), which the models do
    (``from_reference``'s marker genes, translations, queries), and a file of it does not read
    back with its ``obsm`` tables."""
    for axis in ("obs", "var"):
        names = getattr(adata, f"{axis}_names")
        if not isinstance(names, pd.RangeIndex) and names.dtype.kind in "iuf":
            raise ValueError(
                f"{who}.{axis}_names are numbers ({names.dtype}, e.g. {names[:3].tolist()}): "
                f"anndata cannot subset such an AnnData ({who}[mask] fails), which the models "
                f"do. Make them text: {who}.{axis}_names = {who}.{axis}_names.astype(str)."
            )


def _refuse_unnamed_genes(names: pd.Index, who: str) -> None:
    """Refuse missing gene names (NaN, None: symbols mapped from IDs where some have none).
    Setup read them as the text 'nan', then ``load`` onto the same AnnData compared the names
    themselves (NaN is not NaN) and said the genes were in another order, and anndata cannot
    write the AnnData (``save_anndata=True``, ``write_h5ad``)."""
    missing = np.flatnonzero(pd.isna(np.asarray(names, dtype=object)))
    if len(missing):
        where = (
            f"position {missing[0]}"
            if len(missing) == 1
            else f"e.g. positions {missing[:5].tolist()}"
        )
        raise ValueError(
            f"{who}.var_names has {len(missing)} missing gene name(s) (NaN, at {where}): genes "
            "are named in results and matched by name on load and in new data, and anndata "
            f"cannot write a missing name. Name every gene, e.g. from another var column "
            f"({who}.var_names = {who}.var['gene_ids']), or keep them as text: "
            f"{who}.var_names = {who}.var_names.astype(str); {who}.var_names_make_unique()."
        )


def _refuse_duplicates(names: pd.Index, who: str, fix: str | None = None) -> None:
    """Refuse repeated gene names in ``who`` (an AnnData's variable name, or a phrase: then
    ``adata``), with ``fix``, by default its ``var_names_make_unique()``."""
    if names.has_duplicates:
        dup = names[names.duplicated()].unique()[:5].tolist()
        name = who if who.isidentifier() else "adata"
        raise ValueError(
            f"Gene names in {who} are not unique (repeated: {dup}); make them unique "
            f"({fix or f'{name}.var_names_make_unique()'})."
        )


def _numbers(value) -> np.ndarray | None:
    """``value`` (a number or an array of them) as a float array; ``None`` for a string, None,
    a bool or anything else, which ``np.asarray(value, dtype=float)`` read as a number
    (``"1"`` as 1.0, ``True`` as 1.0) or failed on with numpy's "could not convert"."""
    values = np.asarray(value) if not isinstance(value, str) else np.asarray([], dtype=object)
    return np.atleast_1d(values).astype(float) if values.dtype.kind in "iuf" else None


def check_model_arguments(
    sizes: dict[str, object] | None = None,
    dropout_rate: float | None = None,
    positive: dict[str, object] | None = None,
    non_negative: dict[str, object] | None = None,
    flags: dict[str, object] | None = None,
) -> None:
    """Refuse, by name, network sizes that are not integers of 1 or more, a dropout rate
    outside [0, 1), weights that are not finite numbers > 0 (``positive``) or >= 0
    (``non_negative``), and ``flags`` that are not True or False (``"False"`` read as True).

    Examples
    --------
    >>> check_model_arguments({"n_hidden": 128}, dropout_rate=np.float32(0.1))
    >>> check_model_arguments({"n_latent_w": 0})
    Traceback (most recent call last):
    ...
    ValueError: n_latent_w must be a positive integer; got 0.
    >>> check_model_arguments(flags={"encode_covariates": "False"})
    Traceback (most recent call last):
    ...
    ValueError: encode_covariates must be True or False, got 'False'.
    """
    for name, value in (sizes or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {short_repr(value)}.")
    if dropout_rate is not None and not (is_number(dropout_rate) and 0 <= dropout_rate < 1):
        raise ValueError(f"dropout_rate must lie in [0, 1); got {short_repr(dropout_rate)}.")
    for name, value in (positive or {}).items():
        values = _numbers(value)
        if values is None or not (np.isfinite(values).all() and (values > 0).all()):
            raise ValueError(f"{name} must be a finite number > 0; got {short_repr(value)}.")
    for name, value in (non_negative or {}).items():
        values = _numbers(value)
        if values is None or not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError(f"{name} must be a finite number >= 0; got {short_repr(value)}.")
    check_flags(**(flags or {}))


def check_flags(**flags) -> None:
    """Refuse, by name, a flag that is not True or False: ``"False"`` was read as True and
    None as False, or failed deep in torch (``validate_distributions="no"``: a ValueError
    without a message).

    Examples
    --------
    >>> check_flags(encode_covariates=np.bool_(True))
    >>> check_flags(validate_distributions="no")
    Traceback (most recent call last):
    ...
    ValueError: validate_distributions must be True or False, got 'no'.
    """
    check_bools(none=(), **flags)  # the plots' flags' check, in the same words


def check_key_added(key_added, embedding: bool = False) -> str:
    """A ``key_added`` prefix: a non-empty string that h5ad and zarr can store as a key; for
    a model writing its latent to ``obsm[f"X_{key_added}"]`` (``embedding``), not starting
    with ``"X_"`` itself."""
    if not isinstance(key_added, str) or not key_added.strip():
        raise ValueError(
            f"key_added must be a non-empty string (the prefix of the keys written), "
            f"got {key_added!r}."
        )
    if embedding and key_added.startswith("X_"):
        name = key_added.removeprefix("X_")
        raise ValueError(
            f"key_added={key_added!r} would write obsm['X_{key_added}']: it names the keys, "
            f"and the latent's gets 'X_' in front (scanpy's habit). Pass key_added={name!r} "
            f"for obsm['X_{name}']."
        )
    if "/" in key_added:
        raise ValueError(
            f"key_added={key_added!r} holds '/', which .h5ad and .zarr files read as a group "
            "separator; choose a prefix without it."
        )
    return key_added


def check_backing_for_training(adata: AnnData) -> None:
    """A backed AnnData must be open, and open read-only, to train on it.

    Training reads the file from every data-loader and DDP process at once; a handle open for
    writing could change or lock it under them.

    Parameters
    ----------
    adata
        The AnnData a model is about to train on; in-memory AnnData pass unchecked.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> check_backing_for_training(ad.AnnData(np.ones((2, 2))))
    """
    if not adata.isbacked:
        return
    if not adata.file.is_open:
        raise ValueError(
            f"The AnnData's backing file {str(adata.filename)!r} is closed; reopen it with "
            "anndata.read_h5ad(path, backed='r')."
        )
    mode = adata.file["obs"].file.mode
    if mode != "r":
        raise ValueError(
            f"{str(adata.filename)!r} is opened backed={mode!r} (writable); training needs it "
            "read-only: adata.file.close(); adata.file.open(filemode='r') (the model keeps this "
            "AnnData: one read again is another). Reopen it with filemode='r+' afterwards to "
            "write results into the file."
        )
