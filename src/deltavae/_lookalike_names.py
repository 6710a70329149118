"""Category names that are one name typed two ways ('ctrl' and 'Ctrl ', 'B cell' and
'B cell ', '1015' and '1015.0'): a column of conditions, batches, labels or cell types holding
both registers each as a category of its own, so the model learns a condition effect, a
batch or a cell type that is not there."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._warn import warn_user


def same_name(value) -> str:
    """A category's name as a user reads it: case, surrounding spaces and the number format
    ('1015.0' for 1015) left out.

    Examples
    --------
    >>> same_name(" Ctrl"), same_name("1015.0"), same_name(1015)
    ('ctrl', '1015', '1015')
    """
    text = str(value).strip().casefold()
    try:
        number = float(text)
    except ValueError:
        return text
    return repr(int(number)) if number.is_integer() else repr(number)


def plain(value):
    """numpy's scalars as Python's, so that a line given reads as the user would write it."""
    return value.item() if isinstance(value, np.generic) else value


def reference_lookalikes(values, reference) -> dict:
    """``{value: the reference's name}`` for each of ``values`` that one of ``reference``'s
    names is but for case, spaces or number format (a query's '0 ' or 'Ctrl' for the
    reference's '0' or 'ctrl'), as Python's values, in the order of ``values``.

    Examples
    --------
    >>> reference_lookalikes(["B ", "X", 1015.0], ["B", "T", 1015])
    {'B ': 'B', 1015.0: 1015}
    """
    by_name = {same_name(v): plain(v) for v in reference}
    return {plain(v): by_name[same_name(v)] for v in values if same_name(v) in by_name}


def lookalike_renames(column: pd.Series, skip=None) -> dict:
    """``{value: the value it is most likely meant to be}`` for the values of ``column`` that
    another of its values is but for case, spaces or number format, each renamed to the one of
    its group the most cells carry; ``skip`` (an unlabelled mark) is left out. Empty where
    every value reads as a name of its own.

    Examples
    --------
    >>> lookalike_renames(pd.Series(["ctrl", "ctrl", "Ctrl ", "stim"]))
    {'Ctrl ': 'ctrl'}
    >>> lookalike_renames(pd.Series(["B", "T", "NK"]))
    {}
    """
    counts = column.dropna().value_counts(sort=False)
    counts = counts[counts > 0]  # unused categories: named by the check of unused ones
    if skip is not None:
        counts = counts[[str(v) != str(skip) for v in counts.index]]
    keys = pd.Series([same_name(v) for v in counts.index], index=counts.index, dtype=object)
    renames = {}
    for _, group in keys.groupby(keys, sort=False):
        if len(group) < 2:
            continue
        ranked = counts[group.index].sort_values(ascending=False, kind="stable")
        kept = plain(ranked.index[0])
        renames.update({plain(v): kept for v in ranked.index[1:]})
    return renames


def warn_lookalike_names(column: pd.Series, col: str, each: str, before: str, skip=None) -> None:
    """Warn where ``column`` (shown as ``col``, e.g. ``adata.obs['condition']``) holds values
    that differ only in case, spaces or number format (:func:`lookalike_renames`): each is
    ``each`` ("a condition of its own"); the line that renames them is to run ``before`` (the
    call that registers them). Nothing is said where there are none.

    Examples
    --------
    >>> warn_lookalike_names(pd.Series(["B", "T"]), "adata.obs['ct']", "a type", "setup")
    """
    renames = lookalike_renames(column, skip)
    if not renames:
        return
    counts = column.value_counts()
    shown = ", ".join(
        f"{v!r} ({counts[v]}) beside {k!r} ({counts[k]})" for v, k in list(renames.items())[:3]
    )
    warn_user(
        f"{col} holds values that differ only in case, spaces or number format (how many "
        f"carry each): {shown}. Each is {each}. If they are one, rename them before {before}: "
        f"{col} = {col}.astype(str).replace({renames!r})."
    )
