"""The genes a spot model reads, in the CLI's commands: its advice names them by the model
(``model.used_genes()``, ``model.adata.var_names``), which a shell user's command has not
got; the command names them by the file's own names instead, or drops the spots without
counts with scanpy's ``filter_cells`` where that drops the same spots (no gene named)."""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import pandas as pd

#: How the running command's spot model's advice names its genes, those genes, INPUT's, and
#: the advice's statement that drops the spots without counts in them where scanpy's filter
#: drops the same spots (else ``None``).
_GENES: contextvars.ContextVar[tuple[str, pd.Index, pd.Index, str | None] | None] = (
    contextvars.ContextVar("deltavae_cli_read_genes", default=None)
)
#: scanpy's filter of the spots without counts (in X, every gene).
FILTER = "sc.pp.filter_cells(spots, min_counts=1)"


@contextlib.contextmanager
def read_genes_kept():
    """Within (one command): the genes :func:`remember_read_genes` keeps, forgotten after."""
    token = _GENES.set(None)
    try:
        yield
    finally:
        _GENES.reset(token)


def remember_read_genes(model, adata) -> None:
    """Keep, for this command's advice, the genes ``model`` reads of the spots ``adata``
    (INPUT): for the rest of the command (one command, one model)."""
    from deltavae.model._empty_spots import USED_GENES, drop_empty_spots, read_genes

    _, named = read_genes(model) if hasattr(model, "module") else (0, None)
    if named is None:
        return
    used = pd.Index(model.used_genes() if named == USED_GENES else model.adata.var_names)
    genes = pd.Index(adata.var_names).astype(str)
    layer = model.registry_["setup_args"].get("layer")
    same = _filter_drops_them(adata, genes.isin(used.astype(str)), layer)
    _GENES.set((named, used.astype(str), genes, drop_empty_spots(model) if same else None))


def _filter_drops_them(adata, read: np.ndarray, layer: str | None) -> bool:
    """Whether ``sc.pp.filter_cells(spots, min_counts=1)`` (X's totals over every gene below
    1) drops exactly the spots of ``adata`` without counts in the genes ``read`` marks in
    ``layer`` (X for ``None``): the spots a spot model leaves out. A file read backed is not
    read whole for it."""
    from deltavae.model._matrices import row_sums

    if adata.isbacked:
        return False
    counts = adata.X if layer is None else adata.layers[layer]
    empty = row_sums(abs(counts[:, np.flatnonzero(read)])) == 0
    return bool(np.array_equal(empty, row_sums(adata.X) < 1))


def genes_by_name(note: str) -> str:
    """``note`` with the model's genes named as INPUT's: the list of the genes the model
    reads, or of the spots' genes it does not read where that is the shorter (a command is
    one shell argument, at most 128 KiB on Linux); scanpy's filter instead of the statement
    that drops the spots without counts in those genes where it drops the same spots.

    Examples
    --------
    >>> token = _GENES.set(
    ...     ("model.used_genes()", pd.Index(["a", "b"]), pd.Index(list("abcde")), None)
    ... )
    >>> genes_by_name("x = spots[:, model.used_genes()]")
    "x = spots[:, ['a', 'b']]"
    >>> _GENES.reset(token)
    >>> token = _GENES.set(("model.used_genes()", pd.Index(["a"]), pd.Index(["a"]), "drop()"))
    >>> genes_by_name("(drop())")
    '(sc.pp.filter_cells(spots, min_counts=1))'
    >>> _GENES.reset(token)
    >>> names = "model.adata.var_names", pd.Index(list("abcd")), pd.Index(list("abcde")), None
    >>> token = _GENES.set(names)
    >>> genes_by_name("x = spots[:, model.adata.var_names]")
    "x = spots[:, ~spots.var_names.isin(['e'])]"
    >>> genes_by_name("adata[:, model.adata.var_names]")  # not the spots': left as it is
    'adata[:, model.adata.var_names]'
    >>> _GENES.reset(token)
    """
    genes = _GENES.get()
    if genes is None:  # no spot model that reads some of the genes (the models not loaded)
        return note
    named, used, spot_genes, drop = genes
    if drop is not None:  # no gene to name: scanpy's filter drops the same spots
        note = note.replace(drop, FILTER)
    target = f"spots[:, {named}]"  # the spots' genes, by the model's own name only
    if target not in note:
        return note
    unread = spot_genes[~spot_genes.isin(used)]
    if len(unread) < len(used):
        listed = f"~spots.var_names.isin({list(unread)!r})"
    else:
        listed = repr(list(used))
    return note.replace(target, f"spots[:, {listed}]")
