"""The cells CGMDVAE trained on per condition value, kept with the model (``condition_counts_``).

A model saved and loaded onto other cells (its controls alone, say, to translate them) reads
its conditions from these counts, not from the AnnData it holds now: translating to a
condition, and the conditions :meth:`~deltavae.model.CGMDVAE.sample` draws, are those of
the training cells.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd


def cells_per_value(column: pd.Series) -> dict[str, int]:
    """Cells per value of an obs column, by the value as a string.

    Examples
    --------
    >>> cells_per_value(pd.Series(["a", "b", "a"], dtype="category"))
    {'a': 2, 'b': 1}
    """
    return {str(k): int(n) for k, n in column.astype(str).value_counts().items()}


def record_condition_counts(model) -> None:
    """Add the cells of ``model``'s AnnData per condition value to ``model.condition_counts_``
    (saved with the model): ``train`` calls it once the cells have trained."""
    before = getattr(model, "condition_counts_", None) or {}
    model.condition_counts_ = {
        key: dict(Counter(before.get(key, {})) + Counter(cells_per_value(model.adata.obs[key])))
        for key in model.condition_keys
    }


def condition_counts(model, key: str) -> dict[str, int]:
    """Training cells per value of condition ``key``: as ``train`` recorded them, else (a
    model saved before they were kept) those of the model's AnnData."""
    recorded = (getattr(model, "condition_counts_", None) or {}).get(key)
    return recorded if recorded is not None else cells_per_value(model.adata.obs[key])
