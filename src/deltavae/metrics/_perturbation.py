"""Perturbation prediction: agreement of predicted and observed mean expression (scGen's R²)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._checks import float_array, short_repr
from .._close_names import suffixed_hint
from ._deconvolution import _unit
from ._missing import flat, numeric_table
from ._scales import warn_if_scales_differ


def _on_disk(data) -> bool:
    """A matrix read from disk on slicing (a backed AnnData's X: an HDF5 or zarr dataset)."""
    return (
        not isinstance(data, np.ndarray)
        and not sparse.issparse(data)
        and len(getattr(data, "shape", ())) == 2
        and hasattr(data, "__getitem__")
    )


def _column_means(data) -> np.ndarray:
    """Per-column means accumulated in float64 over row chunks: a float32 sparse matrix's own
    ``mean`` sums in float32 (off by 1e-3 over a few hundred thousand cells), and a backed
    matrix is read a chunk at a time."""
    n_rows, total = data.shape[0], np.zeros(data.shape[1])
    for start in range(0, n_rows, _CHUNK_ROWS):
        block = data[start : start + _CHUNK_ROWS]
        if sparse.issparse(block):  # sum(dtype=float64) still adds in float32
            total += np.asarray(block.astype(np.float64).sum(0)).ravel()
        else:
            total += np.asarray(block, dtype=np.float64).sum(0)
    return total / n_rows


#: Rows read at a time for the gene means of a sparse or backed matrix.
_CHUNK_ROWS = 10_000

#: Spread of a change from control, relative to the largest gene mean, up to which it is none:
#: float32 rounding (6e-8 of a value) and another order of summation (1e-16) stay below it.
_NO_CHANGE = 1e-6


def gene_means(data, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-gene means of cells x genes (AnnData, also backed, DataFrame with genes as columns,
    array or sparse matrix) and the gene names, where the input has them."""
    genes = None
    if isinstance(data, AnnData):
        genes = np.asarray(data.var_names).astype(str)
        if data.X is None:  # read as a 0-d array: "must be cells x genes; got shape ()"
            raise ValueError(
                f"{name} is an AnnData without X: pass the matrix to score, e.g. "
                f"{name}.layers[{short_repr(next(iter(data.layers), 'counts'))}]."
            )
        data = data.X
    elif isinstance(data, pd.Series):  # df.mean()'s gene means: means[None] was a KeyError
        raise ValueError(
            f"{name} must be cells x genes (2-D); got a Series of {data.size} values (means "
            "already taken: pass them as one row that keeps the gene names, "
            "means.to_frame().T)."
        )
    elif isinstance(data, pd.DataFrame):  # get_normalized_expression's cells x genes
        data = numeric_table(data, name, kept="genes'")  # numbers held as objects: read
        genes = np.asarray(data.columns).astype(str)
        data = data.to_numpy()
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == 0:
        # A mean over no cells is NaN (dense) or a division by zero (sparse), not bad values.
        raise ValueError(
            f"{name} holds no cells (shape {tuple(shape)}): check the selection that made it."
        )
    if sparse.issparse(data) and data.format not in ("csr", "csc"):
        data = data.tocsr()  # COO, DIA and BSR matrices cannot be sliced by rows
    if sparse.issparse(data) or _on_disk(data):
        means = _column_means(data)
    else:
        data = float_array(data, name, "cells x genes: an AnnData, an array or a DataFrame")
        if data.ndim != 2:
            one_row = (
                " (means already taken: pass them as one row, means[None])"
                if data.ndim == 1
                else ""
            )
            raise ValueError(
                f"{name} must be cells x genes (2-D); got shape {data.shape}{one_row}."
            )
        means = data.mean(0)
    if means.size == 0:
        raise ValueError(f"{name} holds no genes.")
    if not np.isfinite(means).all():
        bad = genes[~np.isfinite(means)][:3].tolist() if genes is not None else []
        raise ValueError(
            f"{name} contains NaN or infinite values ({int((~np.isfinite(means)).sum())} genes"
            + (f", e.g. {bad}" if bad else "")
            + "); fill or drop them first."
        )
    return means, genes


def log_normalize(counts, library_size=None, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(counts / library_size * target_sum)``, the scale scGen scores on.

    Predicted cells and real cells must go through this same transform: a mean of logs is not
    the log of a mean, so log-normalizing a model's *expected* counts (smooth) and the real
    cells' *sampled* counts (sparse) scores the two on different scales. Normalize counts drawn
    from the model's posterior predictive (e.g. ``layers["counts"]`` of
    :meth:`deltavae.model.CGMDVAE.translate`) instead.

    Parameters
    ----------
    counts
        Cells x genes counts (array, sparse matrix or DataFrame).
    library_size
        Per-cell totals to divide by; default the row sums of ``counts``. For a gene subset
        (such as highly variable genes) pass the totals over all genes, as scGen did. A
        Series with a DataFrame ``counts`` is matched to its rows by name.
    target_sum
        Total each cell is scaled to (scGen's Kang data: 1832.5, the median library size).

    Returns
    -------
    Dense float64 array of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> log_normalize(np.array([[1.0, 3.0]]), target_sum=4.0).round(3)
    array([[0.693, 1.386]])
    """
    if (
        isinstance(target_sum, (bool, np.bool_))
        or not isinstance(target_sum, (int, float, np.number))
        or not 0 < target_sum < np.inf
    ):
        # None (scanpy's "the median total") failed on '*'; 0, negative or NaN gave 0s or NaN.
        raise ValueError(
            f"target_sum={target_sum!r} must be a finite number > 0 (for scanpy's median of the "
            "totals, pass np.median(counts.sum(1)))."
        )
    if isinstance(counts, AnnData):
        raise TypeError(
            "log_normalize takes a cells x genes matrix, not an AnnData: pass adata.X, or "
            "adata.layers['counts'] for the counts of a translate result."
        )
    if (
        isinstance(counts, pd.DataFrame)
        and isinstance(library_size, pd.Series)
        and not library_size.index.equals(counts.index)
    ):
        # A Series of totals follows the cells by name (it was read in the order given).
        if set(library_size.index) != set(counts.index) or not library_size.index.is_unique:
            raise ValueError(
                "library_size is a Series of other cells than counts' rows: pass one total "
                "per row of counts, indexed like it (or an array in its row order)."
            )
        library_size = library_size.loc[counts.index]
    # A copy of its own, normalized in place: one cells x genes array, not three.
    x = counts.astype(np.float64).toarray() if sparse.issparse(counts) else None
    x = (
        float_array(counts, "counts", "cells x genes: an array or a DataFrame", copy=True)
        if x is None
        else x
    )
    if x.ndim != 2:
        raise ValueError(f"counts must be cells x genes (2-D); got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(
            f"counts contains {int((~np.isfinite(x)).sum())} NaN or infinite values; a cell's "
            "total would be NaN and its whole row with it. Fill or drop them first."
        )
    if np.min(x, initial=0.0) < 0:
        raise ValueError(
            "counts has negative values: log_normalize takes counts (or expected counts), not "
            "log-transformed or scaled data."
        )
    total = (
        x.sum(1)
        if library_size is None
        else float_array(library_size, "library_size", "one total per cell")
    )
    if total.shape != (x.shape[0],):
        raise ValueError(
            f"library_size must hold one value per cell ({x.shape[0]}); got shape {total.shape}."
        )
    if library_size is not None and not np.isfinite(total).all():
        raise ValueError(
            f"library_size holds {int((~np.isfinite(total)).sum())} NaN or infinite totals; "
            "their cells' rows would be NaN. Pass each cell's total counts (over all genes)."
        )
    if library_size is not None and (total[x.sum(1) > 0] <= 0).any():
        raise ValueError(
            "library_size is 0 or negative for cells with counts: pass each cell's total "
            "counts (over all genes)."
        )
    x /= np.maximum(total, 1e-12)[:, None]
    x *= target_sum
    return np.log1p(x, out=x)


def _named_mask(genes, names) -> bool:
    """Whether ``genes`` is a boolean Series labelled by gene names, to match by name."""
    return (
        isinstance(genes, pd.Series)
        and pd.api.types.is_bool_dtype(genes)
        and names is not None
        and not isinstance(genes.index, pd.RangeIndex)
    )


def _mask_by_name(genes: pd.Series, names: np.ndarray) -> np.ndarray:
    """A boolean Series of genes (a DE table's column, sorted by score) in the data's gene
    order: by position it would select other genes, silently."""
    labels = genes.index.astype(str)
    missing = sorted(map(str, set(names) - set(labels)))  # np.str_ shows as np.str_('a')
    if missing or labels.has_duplicates:
        raise ValueError(
            "genes is a boolean Series whose index does not list each gene once "
            f"({len(missing)} missing, e.g. {missing[:3]}): pass gene names, or a mask in the "
            "data's gene order."
        )
    return pd.Series(genes.to_numpy(), index=labels).reindex(names).to_numpy(dtype=bool)


def mean_expression_r2(predicted, observed, genes: Sequence | None = None, control=None) -> float:
    """scGen's R²: squared correlation of per-gene mean expression, predicted against observed.

    The score of scGen's held-out cell-type benchmark (Lotfollahi et al. 2019, Fig. 2): the
    mean of each gene over the predicted cells and over the real cells, then the squared
    Pearson correlation of the two vectors of means, over all genes or a subset (top DE genes).
    scGen computes it on log-normalized expression; give both sides on that one scale, the
    predicted cells transformed exactly like the real ones (see :func:`log_normalize`). Sides
    that look like two scales are warned about: gene means 20 times apart, or whole counts
    against values that are not whole and stay under ``log1p(1e6)`` (log-normalized values,
    such as a prediction's ``layers["log_normalized"]``).

    Parameters
    ----------
    predicted, observed
        Cells x genes, as AnnData (``X`` is used; a backed one is read in row chunks),
        DataFrames (genes as columns), arrays or sparse matrices; the numbers of cells may
        differ, the genes must match (by name, in order, where both have names). Means are
        taken in float64.
    genes
        Restrict to these genes: names (strings; needs AnnData or DataFrames), integer
        positions, or a boolean mask (a boolean Series indexed by gene names, such as a column
        of a differential-expression table, is matched by name; one on a 0, 1, ... index
        is refused, as it names no genes). Where a DataFrame labels its
        genes by integers, integers are those labels. At least 3 genes: the squared
        correlation of 2 points is 1 whatever they are. scGen's top DE genes are chosen
        from the real cells alone, never from the prediction: the first 100 of
        :func:`scanpy.tl.rank_genes_groups` (``method="wilcoxon"``) of the observed
        stimulated cells against the control cells of the held-out type, on log-normalized
        data (``benchmarks/transfer.py`` ``top_de_genes``; see the last example).
    control
        Cells x genes of the condition the prediction started from (e.g. the control cells
        given to ``predict_perturbation``), on the same scale and genes: score the change of
        the means from the control's instead, mean predicted minus mean control against mean
        observed minus mean control (the delta measure of ``benchmarks/transfer.py``). On the
        top DE genes the stricter score: means near the control's correlate highly with the
        observed ones whether or not the response was predicted. A change the same for every
        gene, up to a millionth of the largest mean (rounding: the control's cells in another
        order, or as float32), is refused, as its R² is undefined.

    Returns
    -------
    R² in [0, 1]. A squared correlation, as scGen defines it: it scores how well the means
    line up, not their sign or scale (means predicted negatively correlated score as high).
    Scoring a predicted change from control (``control``), check its direction as well.
    Not the coefficient of determination (:func:`sklearn.metrics.r2_score` of the means,
    as CPA reports its ``r2_mean``), which also counts their scale and offset and can be
    negative.

    Examples
    --------
    >>> import numpy as np
    >>> obs = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0]])
    >>> round(mean_expression_r2(obs * 2, obs), 3)
    1.0
    >>> counts = np.array([[0.0, 2.0, 5.0], [1.0, 1.0, 8.0]])
    >>> round(mean_expression_r2(log_normalize(counts), log_normalize(counts)), 3)
    1.0
    >>> before = np.array([[1.0, 2.0, 3.0]])  # the change: (0, 0, 1) against (0, 0, 1)
    >>> round(mean_expression_r2(obs, obs, control=before), 3)
    1.0

    The top 100 DE genes of a held-out type (``ctrl``, ``stim``: its real cells, AnnData of
    log-normalized data; ``pred``: its prediction on that scale):

    >>> both = anndata.concat({"ctrl": ctrl, "stim": stim}, label="group")  # doctest: +SKIP
    >>> sc.tl.rank_genes_groups(  # doctest: +SKIP
    ...     both, "group", reference="ctrl", method="wilcoxon"
    ... )
    >>> top = both.uns["rank_genes_groups"]["names"]["stim"][:100].tolist()  # doctest: +SKIP
    >>> mean_expression_r2(pred, stim, genes=top, control=ctrl)  # doctest: +SKIP
    """
    pred, pred_genes = gene_means(predicted, "predicted")
    true, true_genes = gene_means(observed, "observed")
    if pred.shape != true.shape:
        swapped = _transposed_hint(predicted, observed, "predicted", "observed")
        if not swapped:  # named genes: which differ, and how to keep those both hold
            _same_genes(pred_genes, true_genes, "predicted", "observed")
        raise ValueError(
            f"predicted has {pred.size} genes and observed {true.size}; they must match." + swapped
        )
    warn_if_scales_differ(pred, true, predicted, observed)
    _same_genes(pred_genes, true_genes, "predicted", "observed")
    if control is not None:
        ctrl, ctrl_genes = gene_means(control, "control")
        if ctrl.shape != pred.shape:
            swapped = _transposed_hint(control, predicted, "control", "predicted")
            if not swapped:
                first = pred_genes if pred_genes is not None else true_genes
                named = "predicted" if pred_genes is not None else "observed"
                _same_genes(first, ctrl_genes, named, "control")
            raise ValueError(
                f"control has {ctrl.size} genes and predicted {pred.size}; they must match."
                + swapped
            )
        warn_if_scales_differ(ctrl, true, control, observed, name="control")
        named = "predicted" if pred_genes is not None else "observed"
        _same_genes(
            pred_genes if pred_genes is not None else true_genes, ctrl_genes, named, "control"
        )
        pred_genes = pred_genes if pred_genes is not None else true_genes
        true_genes = true_genes if true_genes is not None else ctrl_genes
        # The magnitude of each side's means, before the change from control: the rounding
        # of a change is relative to it.
        sizes = np.maximum(np.abs(pred), np.abs(ctrl)), np.maximum(np.abs(true), np.abs(ctrl))
        pred, true = pred - ctrl, true - ctrl
    if genes is not None:
        names = pred_genes if pred_genes is not None else true_genes
        if isinstance(genes, str):
            raise TypeError(
                f"genes={genes!r} is one string: pass a list of gene names (at least 3)."
            )
        if isinstance(genes, Set):  # a set of DE genes: numpy reads it as one object
            genes = sorted(genes, key=str)
        elif isinstance(genes, Iterator):  # a generator: numpy reads it as one object
            genes = list(genes)
        if (
            isinstance(genes, pd.Series)
            and pd.api.types.is_bool_dtype(genes)
            and names is not None
            and isinstance(genes.index, pd.RangeIndex)
            and not np.array_equal(names, np.arange(len(names)).astype(str))
        ):
            # sc.get.rank_genes_groups_df: 0, 1, ... over genes sorted by score, not the data's.
            raise ValueError(
                "genes is a boolean Series on a 0, 1, ... index, which names no genes: a DE "
                "table's column (sc.get.rank_genes_groups_df) lists the genes sorted by score. "
                "Index it by gene name (df.set_index('names')[column]), pass the names, or pass "
                "a mask in the data's gene order as an array (.to_numpy())."
            )
        index = _mask_by_name(genes, names) if _named_mask(genes, names) else np.asarray(genes)
        if index.size == 0:
            raise ValueError("genes is empty; R² needs at least 3 genes.")
        if index.ndim != 1 or index.dtype.kind not in "biuUSO":
            raise TypeError(
                f"genes holds {index.dtype} values of shape {index.shape}: pass gene names, "
                "integer positions or a boolean mask (one value per gene)."
            )
        integer_labels = any(
            isinstance(data, pd.DataFrame) and pd.api.types.is_integer_dtype(data.columns)
            for data in (predicted, observed, control)
        )
        # A negative position is the gene counted from the end: -1 and n-1 are one gene.
        key = index
        if index.dtype.kind == "i" and not integer_labels:
            key = np.where(index < 0, index + pred.size, index)
        if index.dtype != bool and len(pd.unique(key)) < len(key):
            # By name a repeat was dropped, by position counted twice: neither says so.
            repeated = pd.Index(index)[pd.Index(key).duplicated()][:5].tolist()
            raise ValueError(f"genes repeats {repeated}; give each gene once.")
        # Strings are names; integers are positions, or names where the genes are labelled
        # by integers (DataFrame columns 0, 1, ...).
        if index.dtype.kind in "USO" or (index.dtype.kind in "iu" and integer_labels):
            if names is None:
                raise ValueError(
                    "Gene names need AnnData or DataFrame inputs; pass positions or a mask."
                )
            index = index.astype(str)  # the inputs' names are strings (gene_means)
            missing = sorted(map(str, set(index) - set(names)))
            if missing:
                hint = suffixed_hint(missing, names)  # muscat's CD79A_ENSG00000105369
                raise KeyError(
                    f"genes not found: {missing[:5]} ({len(missing)} in all)."
                    + (f" {hint}: pass those names." if hint else "")
                )
            index = np.flatnonzero(np.isin(names, index))
            if len(index) > len(set(names[index])):  # a name of two columns picked both
                picked = pd.Index(names[index])
                repeated = picked[picked.duplicated()].unique()[:5].tolist()
                raise ValueError(
                    f"The data repeats the gene names {repeated}, so a name does not pick one "
                    "gene: make them unique "
                    "(adata.var_names_make_unique()) or pass positions."
                )
        elif index.dtype == bool and index.shape != pred.shape:
            raise ValueError(f"genes is a mask of {index.size} values for {pred.size} genes.")
        elif (
            index.dtype.kind in "iu"
            and index.size
            and not -pred.size <= index.min() <= index.max() < pred.size
        ):
            raise IndexError(
                f"genes holds positions outside the {pred.size} genes (e.g. {index.max()})."
            )
        pred, true = pred[index], true[index]
        if control is not None:
            sizes = sizes[0][index], sizes[1][index]
    if pred.size < 3:
        raise ValueError(
            f"R² needs at least 3 genes; got {pred.size} (the squared correlation of 2 "
            "points is 1 whatever they are)."
        )
    if control is not None:
        # A change within float32 rounding of the means is none: the control's cells in
        # another order, or a float32 copy of them, gave the R² of that rounding.
        for side, change, size in (("predicted", pred, sizes[0]), ("observed", true, sizes[1])):
            if np.ptp(change) <= _NO_CHANGE * size.max():
                raise ValueError(
                    f"R² is undefined: the {side} change from control is the same for every "
                    f"gene, up to rounding (spread {np.ptp(change):.3g} against means up to "
                    f"{size.max():.3g}; a prediction equal to the control changes none)."
                )
    elif flat(pred) or flat(true):
        raise ValueError("R² is undefined: the mean expression is constant over the genes.")
    return float(np.corrcoef(_unit(pred), _unit(true))[0, 1] ** 2)


def _same_genes(pred_genes, other_genes, named: str, other: str) -> None:
    """Refuse ``other`` (observed or control) whose gene names differ from those of ``named``
    (predicted, or observed where predicted names no genes: an array)."""
    if pred_genes is None or other_genes is None or np.array_equal(pred_genes, other_genes):
        return
    if set(pred_genes) == set(other_genes):
        raise ValueError(
            f"{named} and {other} hold the same genes in another order; put them in one "
            f"order first, e.g. {other} = {other}[:, {named}.var_names] (AnnData) or "
            f"{other}[{named}.columns] (DataFrame)."
        )
    only = sorted(map(str, set(pred_genes) ^ set(other_genes)))
    raise ValueError(
        f"{named} and {other} have different genes ({len(only)} in one only, e.g. "
        f"{only[:3]}); subset both to the genes they share, e.g. shared = "
        f"{named}.var_names.intersection({other}.var_names, sort=False), then "
        f"{named}[:, shared] and {other}[:, shared] (AnnData; DataFrames: .columns, [shared])."
    )


def _names(data, axis: int):
    """Row (0) or column (1) names of a DataFrame or AnnData, as strings; None for others."""
    if isinstance(data, pd.DataFrame):
        return set(map(str, data.index if axis == 0 else data.columns))
    if isinstance(data, AnnData):
        return set(map(str, data.obs_names if axis == 0 else data.var_names))
    return None


def _transposed_hint(one, other, one_name: str, other_name: str) -> str:
    """Where ``one`` and ``other`` (cells x genes each) disagree on their genes: the one whose
    rows are as many as the other's genes (where both are, the one whose row names are the
    other's genes), which may be genes x cells (e.g. a DataFrame with genes as rows), or
    ``""``."""
    shapes = [getattr(d, "shape", None) for d in (one, other)]
    if any(s is None or len(s) != 2 for s in shapes):
        return ""
    pairs = ((one, other, one_name, shapes[0][0]), (other, one, other_name, shapes[1][0]))
    swapped = [p for p, (_, o, _, rows) in enumerate(pairs) if rows == o.shape[1]]
    if len(swapped) == 2:  # either could be: the one whose row names are the other's genes
        rows_named = [(_names(pairs[p][0], 0), _names(pairs[p][1], 1)) for p in swapped]
        named = [p for p, (r, g) in zip(swapped, rows_named, strict=True) if r and r == g]
        swapped = named or swapped
    if not swapped:
        return ""
    if len(swapped) == 2:
        return (
            f" The rows and columns of {one_name} or {other_name} may be swapped (genes x "
            f"cells): pass {one_name}.T or {other_name}.T, cells as rows and genes as columns."
        )
    _, _, name, rows = pairs[swapped[0]]
    return (
        f" {name} has {rows} rows, as many as the other's genes: its rows and columns may be "
        f"swapped (genes x cells); pass {name}.T, cells as rows and genes as columns."
    )
