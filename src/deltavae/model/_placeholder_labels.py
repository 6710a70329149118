"""Reference cells whose label reads as no cell type ('Unknown', 'NA', 'nan', ''): the spot
models built from a reference say how many, and how to drop them."""

from __future__ import annotations

import pandas as pd

from .._checks import short_repr
from ._label_setup import _UNLABELLED_WORDS
from ._validation import warn_user

#: Labels (stripped, lower case) that mark cells of no known type rather than a type.
PLACEHOLDERS = frozenset(_UNLABELLED_WORDS)


def warn_placeholder_labels(reference, labels_key: str, what: str) -> None:
    """Warn that reference cells labelled as of no type ('Unknown', 'NA', 'nan', '', -1) form
    a cell type of their own, ``what`` (its signature, profile) taking a share of the spots;
    name how many and the line that drops them. They are not dropped: the label may be a
    type's real name."""
    labels = pd.Categorical(reference.obs[labels_key])
    marks = [c for c in labels.categories if str(c).strip().lower() in PLACEHOLDERS]
    if not marks:
        return
    n_cells = int(pd.Series(labels).isin(marks).sum())
    col = f"reference.obs[{labels_key!r}]"
    values = [m.item() if hasattr(m, "item") else m for m in marks]
    warn_user(
        f"{n_cells} reference cells are labelled {short_repr(values)} in {col}, which reads as "
        f"no cell type: they form a cell type of their own, with its own {what}, which takes "
        "a share of the spots. If they are unlabelled cells, drop them first: reference = "
        f"reference[~{col}.isin({values!r})].copy()."
    )
