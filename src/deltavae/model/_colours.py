"""scanpy's colours of a categorical obs column (``uns["<column>_colors"]``, one per category,
in the categories' order) kept right when ``write_to_adata`` writes that column again.

A second fit with fewer clusters (or archetypes) left the first fit's colours: scanpy took
them by position, so the clusters that remained were drawn in the colours of others, and
anndata reset them on the next subset (their number no longer that of the categories).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def _categories(values: pd.Series) -> pd.Index | None:
    """The categories scanpy colours ``values`` by: a categorical's own, a string column's
    sorted values (scanpy makes it categorical); ``None`` for numbers (a colour scale)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.categories
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        return pd.Categorical(values).categories
    return None


def coloured_categories(adata: AnnData | None) -> dict[str, pd.Index]:
    """The categories of each obs column of ``adata`` that has colours in ``uns``, before
    ``write_to_adata`` writes (its results may replace some of those columns)."""
    if adata is None or adata.is_view:
        return {}
    out = {}
    for name in adata.obs.columns:
        if f"{name}_colors" in adata.uns:
            categories = _categories(adata.obs[name])
            if categories is not None:
                out[name] = categories
    return out


def recolour_written(adata: AnnData, keys: list[str], before: dict[str, pd.Index]) -> None:
    """For each obs column among ``keys`` (``"obs/<name>"``) that had colours before the write
    (``before``, of :func:`coloured_categories`): its categories' colours kept by name where
    every new category had one, in the new order; otherwise the colours are removed, and
    scanpy picks new ones at the next plot. Columns that were not there or had no colours are
    left as they are (colours set for a column to come)."""
    for key in keys:
        slot, name = key.split("/", 1)
        colour_key = f"{name}_colors"
        if slot != "obs" or name not in before or colour_key not in adata.uns:
            continue
        old, new = before[name], _categories(adata.obs[name])
        if new is None:
            continue
        colours = adata.uns[colour_key]
        listed = np.asarray(colours, dtype=object).ravel()
        if new.equals(old) and len(listed) == len(old):
            continue  # the same categories: the colours stand
        at = old.get_indexer(new)
        if len(listed) != len(old) or (at < 0).any():
            del adata.uns[colour_key]  # a category without a colour: scanpy picks them again
            continue
        kept = listed[at]  # as stored: a list (scanpy's), or an array of its dtype
        if isinstance(colours, list):
            adata.uns[colour_key] = kept.tolist()
        else:
            adata.uns[colour_key] = kept.astype(np.asarray(colours).dtype)


def sync_colours(group, adata: AnnData, keys: list[str]) -> None:
    """In an .h5ad file or zarr store (``group``, its root), the colours of each obs column
    among ``keys`` as ``adata.uns`` holds them after the write: written, or removed where
    :func:`recolour_written` removed them."""
    from anndata.io import write_elem

    for key in keys:
        slot, name = key.split("/", 1)
        colour_key = f"{name}_colors"
        if slot != "obs":
            continue
        stored = "uns" in group and colour_key in group["uns"]
        if colour_key in adata.uns:
            if "uns" not in group:
                write_elem(group, "uns", {})
            if stored:
                del group["uns"][colour_key]
            write_elem(group["uns"], colour_key, adata.uns[colour_key])
        elif stored:
            del group["uns"][colour_key]
