"""Reference cells whose label reads as no cell type ('Unknown', 'NA', 'nan', ''): the spot
models built from a reference say how many, and how to drop them; and labels that are one
name typed two ways ('B cell' and 'B cell '), each made a cell type of its own."""

from __future__ import annotations

import pandas as pd

from .._checks import short_repr
from .._lookalike_names import warn_lookalike_names
from ._label_setup import _UNLABELLED_WORDS
from ._validation import warn_user

#: Labels (stripped, lower case) that mark cells of no known type rather than a type.
PLACEHOLDERS = frozenset(_UNLABELLED_WORDS)


def warn_placeholder_labels(reference, labels_key: str, what: str) -> None:
    """Warn that reference cells labelled as of no type ('Unknown', 'NA', 'nan', '', -1) form
    a cell type of their own, ``what`` (its signature, profile) taking a share of the spots;
    name how many and the line that drops them. They are not dropped: the label may be a
    type's real name. Labels that differ only in case, spaces or number format are named
    with the line that renames them (``warn_lookalike_names``)."""
    col = f"reference.obs[{labels_key!r}]"
    kind = f"a cell type of its own, with its own {what}, which takes a share of the spots"
    warn_lookalike_names(reference.obs[labels_key], col, kind, "from_reference")
    labels = pd.Categorical(reference.obs[labels_key])
    marks = [c for c in labels.categories if str(c).strip().lower() in PLACEHOLDERS]
    if not marks:
        return
    n_cells = int(pd.Series(labels).isin(marks).sum())
    values = [m.item() if hasattr(m, "item") else m for m in marks]
    warn_user(
        f"{n_cells} reference cells are labelled {short_repr(values)} in {col}, which reads as "
        f"no cell type: they form a cell type of their own, with its own {what}, which takes "
        "a share of the spots. If they are unlabelled cells, drop them first: reference = "
        f"reference[~{col}.isin({values!r})].copy()."
    )
