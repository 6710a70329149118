"""The obs columns a setup names: present, without missing values, categories where they name
categories (not measurements such as nUMI), size factors finite and positive."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_key_type, measurement_note, no_column, refuse_mixed_kinds, short_repr


def check_obs_keys(
    adata: AnnData,
    keys: dict[str, str | Iterable[str] | None],
    categories: bool = True,
    unlabeled: str = "Unknown",
) -> None:
    """Check that each named obs column exists and has no missing values.

    Parameters
    ----------
    adata
        The AnnData to check.
    keys
        Mapping from the argument name (e.g. ``"batch_key"``) to the obs column(s) it names;
        ``None`` values are skipped.
    categories
        The columns name categories (batches, conditions, labels), so a column that looks like
        a measurement (nUMI, a score) is refused; ``False`` for measurements (size factors).
    unlabeled
        The mark of unlabelled cells, which the advice for missing labels writes in.

    Examples
    --------
    >>> import numpy as np, pandas as pd, anndata as ad
    >>> a = ad.AnnData(np.ones((2, 2)), obs=pd.DataFrame({"b": ["x", "y"]}, index=["c1", "c2"]))
    >>> check_obs_keys(a, {"batch_key": "b"})
    """
    for arg, value in keys.items():
        if value is None:
            continue
        check_key_type(arg, value)
        names = [value] if isinstance(value, str) else list(value)
        if len(set(names)) < len(names):
            raise ValueError(f"{arg}={short_repr(names)} names a column more than once.")
        for key in names:
            if key not in adata.obs:
                raise KeyError(no_column(arg, key, adata.obs))
            n_missing = int(pd.isna(adata.obs[key]).sum())
            if n_missing:
                raise ValueError(
                    f"{arg}={key!r}: adata.obs[{key!r}] has {n_missing} missing values (NaN); "
                    + _fill_advice(arg, key, categories, unlabeled)
                )
            note = None
            if categories:
                refuse_mixed_kinds(adata.obs[key], arg, key)
                note = measurement_note(adata.obs[key], fractions=arg != "labels_key")
            if note is not None:  # nUMI, a score: one category per value
                raise ValueError(
                    f"{arg}={key!r}: adata.obs[{key!r}] looks like a measurement, not "
                    f"categories: {note}. Name a column of categories (batch, donor, "
                    "condition, cell type); integer ids are fine."
                )


def _fill_advice(arg: str, key: str, categories: bool, unlabeled: str) -> str:
    """What to do with the missing values of ``arg``'s column ``key``: labels marked
    ``unlabeled``, other categories a value of their own, as the statement that does it."""
    if not categories:
        return "fill them or drop those cells."
    column = f"adata.obs[{key!r}]"
    mark = unlabeled if arg == "labels_key" else "missing"
    as_mark = f"{column} = {column}.astype(str).where({column}.notna(), {mark!r})"
    if arg == "labels_key":
        which = (
            "'Unknown' unless unlabeled_category names another"
            if unlabeled == "Unknown"
            else f"as {unlabeled!r}, the unlabeled_category given"
        )
        return f"mark those cells unlabelled ({which}): {as_mark}, or drop them."
    rows = "spots" if arg == "sample_key" else "cells"  # Archetypes' rows
    return f"fill them with a value of their own, e.g. {as_mark}, or drop those {rows}."


def check_size_factors(adata: AnnData, size_factor_key: str | None) -> None:
    """Size factors must be finite, positive numbers (not booleans)."""
    if size_factor_key is None:
        return
    check_obs_keys(adata, {"size_factor_key": size_factor_key}, categories=False)
    column = adata.obs[size_factor_key]
    if pd.api.types.is_bool_dtype(column) or pd.api.types.infer_dtype(column) == "boolean":
        # Read as 1 (or 0) per cell: every cell the same library, without a word.
        raise ValueError(
            f"size_factor_key={size_factor_key!r} names a column of booleans (True/False), "
            "not size factors; name a column of positive numbers, e.g. each cell's total "
            "count divided by their mean."
        )
    given = np.asarray(column)
    values = pd.to_numeric(given, errors="coerce").astype(float)  # text: NaN, shown as given
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        shown = ", ".join(map(repr, pd.unique(given[bad])[:3].tolist()))
        raise ValueError(
            f"size_factor_key={size_factor_key!r} must hold finite, positive numbers; "
            f"{int(bad.sum())} cells hold {shown}."
        )
