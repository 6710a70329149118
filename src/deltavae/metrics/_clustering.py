"""Clustering agreement between true labels and predicted clusters.

All functions accept any 1-D labels: numpy arrays, lists, or pandas Series (categorical,
string, integer). Labels are only compared for equality, so the two arguments may use
different vocabularies, for example cell-type names against cluster ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .._checks import short_repr
from .._docs import doc_labels, doc_params
from .._warn import warn_user

ArrayLike = np.ndarray | pd.Series | pd.Categorical | Sequence


def _codes(labels: ArrayLike, name: str) -> np.ndarray:
    """Integer codes 0..n_unique-1 for a 1-D label vector, with validation."""
    shape = np.shape(labels)
    if len(shape) != 1:
        hint = ""
        if len(shape) == 2 and shape[1] == 1:
            hint = ": a one-column table, pass its column (table.iloc[:, 0])"
        elif len(shape) == 2:
            hint = (
                ": a table of soft assignments (cells x clusters)? Pass each cell's most "
                "likely cluster, table.idxmax(axis=1) (DataFrame) or array.argmax(1)"
            )
        elif not shape:  # numpy reads a dict, set or generator as one object
            raise ValueError(f"{name} must be 1-D, one label per cell; {_not_labels(labels)}")
        raise ValueError(f"{name} must be 1-D; got shape {shape}{hint}")
    values = labels if isinstance(labels, pd.Series) else pd.Series(labels)
    if len(values) == 0:
        raise ValueError(f"{name} is empty; expected at least one label")
    missing = values.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"{name} has {int(missing.sum())} missing (NaN/None) labels, the first at position "
            f"{first}; drop or fill them before scoring"
        )
    codes, uniques = pd.factorize(values, sort=False)
    _warn_missing_as_text(codes, uniques, name)
    return codes


#: The text ``str()`` makes of a missing value (NaN, None, pd.NA, NaT).
_MISSING_AS_TEXT = frozenset({"nan", "NaN", "None", "<NA>", "NaT"})


def _warn_missing_as_text(codes: np.ndarray, uniques, name: str) -> None:
    """Warn where labels read as the text of a missing value ('nan' of a column with NaN
    passed through ``.astype(str)``): missing labels are refused, but as text they were
    scored as one more class without a word. Warned, not refused: it may be a name."""
    found = sorted(
        (str(u), k) for k, u in enumerate(uniques) if isinstance(u, str) and u in _MISSING_AS_TEXT
    )
    if not found:
        return
    n = int(np.isin(codes, [k for _, k in found]).sum())
    marks = ", ".join(repr(text) for text, _ in found)
    warn_user(
        f"{name} holds {n} label{'s' if n > 1 else ''} {marks}, the text of a missing value "
        "(a column with NaN passed through .astype(str)?), scored as one more class. "
        "If they are missing labels, leave those cells out of both first, e.g. keep = "
        f"~np.isin({name}, [{marks}]).",
    )


def _not_labels(labels) -> str:
    """What a 0-d ``labels`` is and what to pass instead."""
    kind = f"got an object of type {type(labels).__name__} ({short_repr(labels)})"
    if isinstance(labels, dict):
        return f"{kind}: pass pd.Series(labels) (cell name -> label) or its values in cell order"
    if isinstance(labels, set | frozenset):
        return f"{kind}, which has no order: pass the labels in cell order as a list or array"
    if isinstance(labels, Iterable) and not isinstance(labels, str | bytes):
        return f"{kind}: pass it as a list (list(...)), array or pandas Series"
    return f"{kind}: pass a list, array or pandas Series of one label per cell"


def _from_array(labels: pd.Series) -> bool:
    """Whether ``labels`` has the index ``pd.Series(array)`` gives, 0, 1, ..., n - 1 (a
    RangeIndex): the cells' positions, not their names."""
    index = labels.index
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _paired_codes(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    if (
        isinstance(labels_true, pd.Series)
        and isinstance(labels_pred, pd.Series)
        and not labels_true.index.equals(labels_pred.index)
        and labels_true.index.is_unique
        and labels_pred.index.is_unique
        and set(labels_true.index) == set(labels_pred.index)
    ):
        # Two Series of the same cells in another order (obs columns of two AnnData objects)
        # pair their cells by name; Series of other indexes pair by position, as arrays do.
        labels_pred = labels_pred.loc[labels_true.index]
    elif (
        isinstance(labels_true, pd.Series)
        and isinstance(labels_pred, pd.Series)
        and not labels_true.index.equals(labels_pred.index)  # one AnnData's columns: same cells
    ):
        shared = labels_true.index.intersection(labels_pred.index).size
        # Cell names on both sides (not 0, 1, ... of a Series made from an array).
        named = not any(
            pd.api.types.is_integer_dtype(labels.index) for labels in (labels_true, labels_pred)
        )
        if len(labels_true) != len(labels_pred):
            pass  # refused below
        elif set(labels_true.index) == set(labels_pred.index):
            # The same names in another order, some repeated (concatenated samples' barcodes):
            # no pairing by name, and "partly different cells" would be wrong.
            warn_user(
                "labels_true and labels_pred are Series of the same cell names in another "
                "order, but the names repeat (e.g. "
                f"{short_repr(labels_true.index[labels_true.index.duplicated()][:2])}), so "
                "cells cannot be paired by name; they are paired by position. Make the names "
                "unique on both (adata.obs_names_make_unique()) or pass them in one order.",
            )
        elif 0 < shared < len(labels_true) and not any(
            map(_from_array, (labels_true, labels_pred))
        ):
            # Columns of two AnnData subsets: paired by position, most pairs are wrong cells.
            # Not a Series made from an array (0, 1, ...) against a subset of a table
            # (df.loc[mask, col]): it names no cells, so shares 0, 1, ... by chance.
            warn_user(
                f"labels_true and labels_pred are Series of partly different cells ({shared} "
                "names shared); they are paired by position. Score the same cells (e.g. "
                "labels_pred.loc[labels_true.index] on the shared ones), or pass arrays.",
            )
        elif shared == 0 and named:
            # Columns of AnnData objects named apart (concat's suffixes): by position, quietly.
            warn_user(
                "labels_true and labels_pred are Series whose cell names have none in common "
                f"(e.g. {short_repr(labels_true.index[:2])} and "
                f"{short_repr(labels_pred.index[:2])}); they are paired by position. Check "
                "that both list the same cells in the same order and pass arrays "
                "(.to_numpy()), or give them the same cell names.",
            )
    true = _codes(labels_true, "labels_true")
    pred = _codes(labels_pred, "labels_pred")
    if true.shape[0] != pred.shape[0]:
        hint = ""
        if (
            isinstance(labels_true, pd.Series)
            and isinstance(labels_pred, pd.Series)
            and labels_true.index.intersection(labels_pred.index).size
        ):
            hint = (
                ". To score the cells both hold: cells = labels_true.index.intersection("
                "labels_pred.index), then labels_true[cells] and labels_pred[cells]"
            )
        raise ValueError(
            f"labels_true has length {true.shape[0]} but labels_pred has length "
            f"{pred.shape[0]}; expected one label per cell in both{hint}"
        )
    return true, pred


def _contingency(true: np.ndarray, pred: np.ndarray) -> sparse.csr_matrix:
    """Counts of cells per (true class, predicted cluster), classes x clusters, sparse: a
    dense table of per-cell ids (n x n) ran out of memory, as sklearn's sparse one does not."""
    shape = (int(true.max()) + 1, int(pred.max()) + 1)
    counts = np.ones(true.shape[0], dtype=np.int64)
    return sparse.csr_matrix((counts, (true, pred)), shape=shape)  # repeats are summed


#: Entries of a classes x clusters table matched dense in one piece (8 MB of int64); a
#: larger one is matched in blocks, each of at most _BLOCK_ENTRIES (200 MB).
_DENSE_ENTRIES = 1_000_000
_BLOCK_ENTRIES = 25_000_000


def _accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    table = _contingency(true, pred)
    return float(_matched_cells(table) / true.shape[0])


def _matched_cells(table: sparse.csr_matrix) -> int:
    """Cells on the best one-to-one matching of clusters to classes (Hungarian). A large
    table is matched in its blocks of classes and clusters that share cells (the matching
    of a block-diagonal table is that of its blocks), each dense on its own."""
    if table.shape[0] * table.shape[1] <= _DENSE_ENTRIES:
        return _hungarian(table.toarray())
    n_true = table.shape[0]
    graph = sparse.bmat([[None, table], [table.T, None]], format="csr")
    n_blocks, block = connected_components(graph, directed=False)
    n_rows = np.bincount(block[:n_true], minlength=n_blocks)
    n_cols = np.bincount(block[n_true:], minlength=n_blocks)
    if (n_rows * n_cols).max() > _BLOCK_ENTRIES:
        k = int((n_rows * n_cols).argmax())
        raise ValueError(
            f"The Hungarian matching of {table.shape[0]:,} classes to {table.shape[1]:,} "
            f"clusters needs a dense table of {n_rows[k]:,} x {n_cols[k]:,} (classes and "
            "clusters linked by shared cells), too large to match. Are the labels ids of "
            "single cells or samples? ari, nmi and purity score such labels (in sparse tables)."
        )
    # The table's entries grouped by block; a block of one class or one cluster matches
    # its largest entry, the others are matched dense.
    entries = table.tocoo()
    of_entry = block[entries.row]
    order = np.argsort(of_entry, kind="stable")
    rows, cols, counts = entries.row[order], entries.col[order], entries.data[order]
    starts = np.flatnonzero(np.r_[True, np.diff(of_entry[order]) != 0])
    ids = of_entry[order][starts]
    largest = np.maximum.reduceat(counts, starts)
    simple = (n_rows[ids] == 1) | (n_cols[ids] == 1)
    total = int(largest[simple].sum())
    ends = np.r_[starts[1:], counts.size]
    for start, end in zip(starts[~simple], ends[~simple], strict=True):
        r_local = np.unique(rows[start:end], return_inverse=True)[1]
        c_local = np.unique(cols[start:end], return_inverse=True)[1]
        dense = np.zeros((r_local.max() + 1, c_local.max() + 1), dtype=counts.dtype)
        dense[r_local, c_local] = counts[start:end]
        total += _hungarian(dense)
    return total


def _hungarian(dense: np.ndarray) -> int:
    rows, cols = linear_sum_assignment(dense, maximize=True)
    return int(dense[rows, cols].sum())


def _purity(true: np.ndarray, pred: np.ndarray) -> float:
    top = _contingency(true, pred).max(axis=0).toarray()  # each cluster's largest class
    return float(top.sum() / true.shape[0])


@doc_params(parameters=doc_labels)
def clustering_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Accuracy after the best one-to-one matching of clusters to classes (Hungarian).

    Each predicted cluster is matched to at most one class so that the matched cells are as
    many as possible. Cells in unmatched clusters count as errors. This happens when there are
    more clusters than classes. Large tables (per-cell ids as labels) are matched in their
    blocks of classes and clusters that share cells; a block of over 25 million (class,
    cluster) pairs is refused.

    {parameters}

    Returns
    -------
    float
        Fraction of cells whose cluster is matched to their class, in [0, 1].

    Examples
    --------
    >>> from deltavae.metrics import clustering_accuracy
    >>> clustering_accuracy(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    >>> clustering_accuracy(["a", "a", "b", "b"], [0, 1, 2, 2])
    0.75
    """
    return _accuracy(*_paired_codes(labels_true, labels_pred))


@doc_params(parameters=doc_labels)
def purity(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Cluster purity: each cluster is credited with its most common class.

    Purity is 1 when every cluster holds a single class. Unlike
    :func:`clustering_accuracy`, it also reaches 1 when each cell is its own cluster.

    {parameters}

    Returns
    -------
    float
        ``sum_clusters max_class n(class, cluster) / n_cells``, in (0, 1].

    Examples
    --------
    >>> from deltavae.metrics import purity
    >>> purity(["a", "a", "b", "b"], [0, 0, 0, 1])
    0.75
    """
    return _purity(*_paired_codes(labels_true, labels_pred))


@doc_params(parameters=doc_labels)
def ari(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`).

    {parameters}

    Returns
    -------
    float
        1 for identical partitions and about 0 for random ones.

    Examples
    --------
    >>> from deltavae.metrics import ari
    >>> ari(["x", "x", "y", "y"], [5, 5, 7, 7])
    1.0
    >>> ari(["x", "x", "y", "y"], [5, 7, 5, 7])  # worse than chance
    -0.5
    """
    true, pred = _paired_codes(labels_true, labels_pred)
    return float(adjusted_rand_score(true, pred))


@doc_params(parameters=doc_labels)
def nmi(
    labels_true: ArrayLike, labels_pred: ArrayLike, average_method: str = "arithmetic"
) -> float:
    """Normalised mutual information (:func:`sklearn.metrics.normalized_mutual_info_score`).

    {parameters}
    average_method
        How the two entropies are averaged in the normaliser: ``"arithmetic"``,
        ``"geometric"``, ``"min"`` or ``"max"``.

    Returns
    -------
    float
        In [0, 1]. It is 1 for identical partitions.

    Examples
    --------
    >>> from deltavae.metrics import nmi
    >>> nmi(["x", "x", "y", "y"], [1, 1, 0, 0])
    1.0
    """
    true, pred = _paired_codes(labels_true, labels_pred)
    return float(normalized_mutual_info_score(true, pred, average_method=average_method))


@doc_params(parameters=doc_labels)
def cluster_scores(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[str, float]:
    """ARI, NMI, Hungarian accuracy and purity in one dictionary.

    The values of :func:`ari`, :func:`nmi` (arithmetic mean in the normaliser, sklearn's
    default), :func:`clustering_accuracy` and :func:`purity`.

    {parameters}

    Returns
    -------
    dict
        Keys ``"ari"``, ``"nmi"``, ``"accuracy"`` and ``"purity"``, with float values.

    Examples
    --------
    >>> from deltavae.metrics import cluster_scores
    >>> cluster_scores(["a", "a", "b"], [0, 0, 1])["accuracy"]
    1.0
    """
    true, pred = _paired_codes(labels_true, labels_pred)
    return {
        "ari": float(adjusted_rand_score(true, pred)),
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "accuracy": _accuracy(true, pred),
        "purity": _purity(true, pred),
    }
