"""Whether the two tables of :func:`deltavae.metrics.matched_profile_correlation` are
archetypes x genes, as it reads them, or genes x archetypes, as
``Archetypes.get_archetype_profiles()`` and ``varm["profiles_true"]`` hold them: scored as
given, genes would be matched to genes (a perfect prediction scored -0.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._checks import short_repr

_NAMES = ("true_profiles", "pred_profiles")
_HOLD = "Archetypes.get_archetype_profiles() and varm['profiles_true'] hold them"


def refuse_transposed(true_profiles, pred_profiles) -> None:
    """Refuse a table that reads as genes x archetypes, where the two tables' shapes (or,
    for two DataFrames of one shape, their row names) say so; more archetypes than genes
    (5 x 4, a small gene panel) is scored where the shapes leave no doubt."""
    tables = (true_profiles, pred_profiles)
    shapes = [np.shape(t) for t in tables]
    if any(len(s) != 2 for s in shapes):
        return  # refused as not 2-D later
    (rows_t, cols_t), (rows_p, cols_p) = shapes
    if cols_t != cols_p:
        # Other genes as given (refused anyway): a table with more rows than columns whose
        # rows are the other's genes (as many, or named alike) is genes x archetypes.
        for k in (0, 1):
            if shapes[k][0] > shapes[k][1] and _rows_are_genes(tables[k], tables[1 - k]):
                _refuse(_NAMES[k], shapes[k], shapes[1 - k])
        return
    if rows_t != rows_p or rows_t <= cols_t:
        return  # the same genes (columns), other numbers of archetypes: no other reading
    # One shape, more rows than columns: archetypes over few genes, or genes x archetypes.
    frames = all(isinstance(t, pd.DataFrame) for t in tables)
    if frames and not _rows_named_alike(*tables):
        return  # DataFrames: genes are their columns, and the rows name no shared genes
    named = (
        f"name their rows alike (e.g. {short_repr(true_profiles.index[:3].tolist())}), as the "
        "genes of genes x archetypes tables"
        if frames
        else "are arrays"
    )
    raise ValueError(
        f"true_profiles and pred_profiles both have {rows_t} rows and {cols_t} columns and "
        f"{named}: profiles are rows (archetypes x genes, at least 3 genes), but this could be "
        f"genes x archetypes, as {_HOLD}. For genes x archetypes, pass true_profiles.T and "
        f"pred_profiles.T. For {rows_t} archetypes over {cols_t} genes, pass DataFrames with "
        "the genes as columns, e.g. pd.DataFrame(profiles, columns=genes)"
        + (" and .reset_index(drop=True)" if frames else "")
        + "."
    )


def _rows_named_alike(true: pd.DataFrame, pred: pd.DataFrame) -> bool:
    """Whether two DataFrames label their rows with the same names (not 0, 1, ...): the
    genes of genes x archetypes tables (or archetypes named alike, which cannot be told
    from them)."""
    index = true.index
    default = pd.api.types.is_integer_dtype(index) and np.array_equal(index, np.arange(len(index)))
    return not default and set(index) == set(pred.index)


def _rows_are_genes(table, other) -> bool:
    """Whether ``table``'s rows are ``other``'s columns: as many, or sharing a name."""
    if len(table) == np.shape(other)[1]:
        return True
    frames = isinstance(table, pd.DataFrame) and isinstance(other, pd.DataFrame)
    return frames and table.index.isin(other.columns).any()


def _refuse(name: str, shape: tuple, other: tuple) -> None:
    """Refuse ``name`` of ``shape`` as genes x archetypes, the other table being ``other``."""
    raise ValueError(
        f"{name} has {shape[0]} rows and {shape[1]} columns, but profiles are rows (archetypes "
        f"x genes, at least 3 genes), and the other table is {other[0]} x {other[1]}, other "
        f"genes as given. For genes x archetypes, as {_HOLD}, pass {name}.T."
    )
