"""What deltavae's ``prepare_query_anndata`` adds to scvi-tools' (:mod:`deltavae.model._query`):
its docstring's notes, and the query's ``uns``, ``raw`` and matrix types kept through scvi-tools'
padding of missing genes."""

from __future__ import annotations

import numpy as np
from anndata import AnnData


def _docstring_of(source, notes: str = ""):
    def take(method):
        method.__doc__ = source.__doc__.rstrip() + notes
        return method

    return take


#: What deltavae's prepare_query_anndata adds to scvi-tools' (whose docstring it takes).
_PREPARE_NOTES = """

        Notes
        -----
        deltavae warns with the number of the reference's genes the query lacks and gets as
        zeros (scvi-tools logs it at INFO only), as :meth:`load_query_data` does. A saved
        reference's folder is read as :meth:`load_query_data` reads it (a missing, prefixed
        or damaged save is named); a query sharing none of its genes is told the ``var``
        column that holds them, where one does. ``inplace=False`` leaves the query as it
        was (scvi-tools reordered its genes in place when none was missing) and refuses a
        backed one (the error says what runs instead: load_query_data takes a backed query
        as it is);
        ``inplace=True`` on a view (``adata[mask]``) whose genes it would reorder is
        refused, and so is one on a backed query whose genes differ (a file opened backed
        cannot be padded or reordered in place). The padding keeps the query's ``uns``,
        ``raw`` and matrix types.

        What is returned, against the Returns above: with ``inplace=True`` (the default) the
        query itself is padded and reordered and the method returns None; with
        ``inplace=False``, the new AnnData; with ``return_reference_var_names=True``, the
        reference's genes (a ``pandas.Index``), the query left as it is.
        """


def _as_given(adata: AnnData) -> tuple:
    """``adata``'s uns, raw and the kind of its matrices, for :func:`_restore`."""
    kinds = {None: adata.X}
    kinds.update(adata.layers.items())
    kinds = {
        name: (matrix.dtype, isinstance(matrix, np.ndarray))
        for name, matrix in kinds.items()
        if hasattr(matrix, "dtype")
    }
    return dict(adata.uns), adata.raw, kinds


def _restore(ready: AnnData, kept: tuple) -> None:
    """Undo what scvi-tools' padding of missing genes (anndata.concat) did besides adding
    them: it dropped ``uns`` and ``raw``, made the counts float64 (int32 counts took twice
    the memory) and a dense matrix sparse. The padding is zeros, which every numeric dtype
    holds."""
    uns, raw, kinds = kept
    if ready.isbacked:
        return
    for key, value in uns.items():
        ready.uns.setdefault(key, value)
    if raw is not None and ready.raw is None:
        ready.raw = AnnData(X=raw.X, var=raw.var, varm=dict(raw.varm))
    for name, (dtype, dense) in kinds.items():
        matrix = ready.X if name is None else ready.layers.get(name)
        if matrix is None or (matrix.dtype == dtype and isinstance(matrix, np.ndarray) == dense):
            continue
        matrix = matrix.astype(dtype)
        if dense and not isinstance(matrix, np.ndarray):
            matrix = matrix.toarray()
        if name is None:
            ready.X = matrix
        else:
            ready.layers[name] = matrix
