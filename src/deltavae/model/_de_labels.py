"""Differential expression by a model's own labels column: its mark of unlabelled cells is no
group, and labels the model was not trained with are groups as the column holds them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._labels import _label_state
from ._matrices import with_column
from ._validation import warn_user

#: obs column holding the groups as given, for a comparison by the labels column.
GROUPS_AS_GIVEN = "_deltavae_de_groups"


def unlabelled_cells(model, column: pd.Series, groupby, given: dict):
    """The cells of ``column`` (``adata.obs[groupby]``) that the model's labels column marks
    unlabelled (``"Unknown"``) and the mark, where ``groupby`` is that column and neither
    ``group1`` nor ``group2`` names the mark: cells of no known label, not a group ("Unknown
    vs Rest") nor cells of every rest, as NaN is no group. ``(None, mark)`` where there are
    none or they are compared by name (or left out anyway: both groups named)."""
    key, mark, _ = _label_state(model.registry_)
    if key is None or groupby != key:
        return None, mark
    groups = [given.get("group1"), given.get("group2")]
    named = [v for g in groups if g is not None for v in np.atleast_1d(np.asarray(g, object))]
    if any(str(v) == str(mark) for v in named) or all(g is not None for g in groups):
        return None, mark
    marked = (column.astype(str) == str(mark)).to_numpy() & column.notna().to_numpy()
    return (marked if marked.any() else None), mark


def groups_as_given(model, adata, groupby):
    """``(adata, groupby)`` to compare by: where ``groupby`` names the labels column and
    ``adata`` holds labels the model was not trained with, a copy sharing its matrices whose
    column :data:`GROUPS_AS_GIVEN` holds the groups as given and whose labels column reads
    those labels as unlabelled (else they left their groups when the AnnData was read: a
    group of them only made scvi-tools divide by zero), with a warning worded for DE (the
    model's expression of a cell does not read its label); else ``None``."""
    key, mark, known = _label_state(model.registry_)
    if adata is None or groupby is None or groupby != key or key not in adata.obs:
        return None
    labels = adata.obs[key]
    kept = labels.astype(str).isin(known).to_numpy() | labels.isna().to_numpy()
    if kept.all() and labels.notna().all():
        return None
    data = with_column(adata, GROUPS_AS_GIVEN, labels.to_numpy())
    if not kept.all():
        names = sorted(set(labels[~kept].astype(str)))
        warn_user(
            f"{int((~kept).sum())} cells carry labels the model was not trained with "
            f"({names[:5]}, in adata.obs[{key!r}]): differential_expression compares them as "
            "groups of their own, as the column holds them (a cell's expression does not "
            "read its label)."
        )
        data = with_column(data, key, labels.astype(object).where(kept, mark).to_numpy())
    return data
