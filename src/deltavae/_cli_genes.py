"""The genes a spot model reads, in the CLI's commands: its advice names them by the model
(``model.used_genes()``, ``model.adata.var_names``), which a shell user's command has not
got; the command names them by the file's own names instead."""

from __future__ import annotations

import contextlib
import contextvars

import pandas as pd

#: How the running command's spot model's advice names its genes, those genes, and INPUT's.
_GENES: contextvars.ContextVar[tuple[str, pd.Index, pd.Index] | None] = contextvars.ContextVar(
    "deltavae_cli_read_genes", default=None
)


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
    from deltavae.model._empty_spots import USED_GENES, read_genes  # the models are loaded

    _, named = read_genes(model) if hasattr(model, "module") else (0, None)
    if named is None:
        return
    used = model.used_genes() if named == USED_GENES else model.adata.var_names
    _GENES.set((named, pd.Index(used).astype(str), pd.Index(adata.var_names).astype(str)))


def genes_by_name(note: str) -> str:
    """``note`` with the model's genes named as INPUT's: the list of the genes the model
    reads, or of the spots' genes it does not read where that is the shorter (a command is
    one shell argument, at most 128 KiB on Linux).

    Examples
    --------
    >>> token = _GENES.set(("model.used_genes()", pd.Index(["a", "b"]), pd.Index(list("abcde"))))
    >>> genes_by_name("x = spots[:, model.used_genes()]")
    "x = spots[:, ['a', 'b']]"
    >>> _GENES.reset(token)
    >>> names = "model.adata.var_names", pd.Index(list("abcd")), pd.Index(list("abcde"))
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
    named, used, spot_genes = genes
    target = f"spots[:, {named}]"  # the spots' genes, by the model's own name only
    if target not in note:
        return note
    unread = spot_genes[~spot_genes.isin(used)]
    if len(unread) < len(used):
        listed = f"~spots.var_names.isin({list(unread)!r})"
    else:
        listed = repr(list(used))
    return note.replace(target, f"spots[:, {listed}]")
