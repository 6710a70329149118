"""What scanpy keeps in ``uns`` of an obs column (its colours, ``uns["<column>_colors"]``, one
per category in the categories' order; its dendrogram, ``uns["dendrogram_<column>"]``) kept
right when ``write_to_adata`` writes that column again.

A second fit with fewer clusters (or archetypes) left the first fit's colours: scanpy took
them by position, so the clusters that remained were drawn in the colours of others, and
anndata reset them on the next subset (their number no longer that of the categories). Its
dendrogram (drawn by ``sc.pl.rank_genes_groups_dotplot`` of the archetypes' markers) made
scanpy's next such plot fail ("Incompatible observations"), or order the new clusters by the
old ones' tree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._file_unchanged_on_failure import remove_entry


def _colour_key(name: str) -> str:
    return f"{name}_colors"


def palette_by_name(uns, obs, name: str) -> dict:
    """The colours scanpy keeps for categorical obs column ``name`` (``uns["<name>_colors"]``,
    one per category in order) by category; ``{}`` where there are none, the column is not
    categorical, or their number is not its categories'.

    Examples
    --------
    >>> obs = pd.DataFrame({"c": pd.Categorical(["a", "b"])})
    >>> palette_by_name({"c_colors": ["#1f77b4", "#ff7f0e"]}, obs, "c")
    {'a': '#1f77b4', 'b': '#ff7f0e'}
    """
    palette = uns.get(_colour_key(name)) if uns is not None else None
    column = obs[name] if obs is not None and name in obs else None
    if palette is None or column is None or not isinstance(column.dtype, pd.CategoricalDtype):
        return {}
    listed = np.asarray(palette).ravel().tolist()
    categories = column.cat.categories.tolist()
    if len(listed) != len(categories):
        return {}
    return dict(zip(categories, listed, strict=True))


def _dendrogram_key(name: str) -> str:
    return f"dendrogram_{name}"


def scanpy_uns_keys(name: str) -> tuple[str, str]:
    """The ``uns`` keys scanpy keeps of obs column ``name``: its colours, its dendrogram."""
    return _colour_key(name), _dendrogram_key(name)


def forget_scanpy_keys(adata: AnnData, names: list[str]) -> None:
    """scanpy's colours and dendrogram of the obs columns ``names``, removed by the write,
    removed from ``adata.uns`` too (applied by position to a column written later)."""
    for name in names:
        for uns_key in scanpy_uns_keys(name):
            adata.uns.pop(uns_key, None)


def _categories(values: pd.Series) -> pd.Index | None:
    """The categories scanpy colours ``values`` by: a categorical's own, a string column's
    sorted values (scanpy makes it categorical); ``None`` for numbers (a colour scale)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.categories
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        return pd.Categorical(values).categories
    return None


def columns_with_scanpy_keys(adata: AnnData | None) -> dict[str, pd.Series]:
    """Each obs column of ``adata`` with colours or a dendrogram in ``uns``, as it is before
    ``write_to_adata`` writes (its results may replace some of those columns)."""
    if adata is None or adata.is_view:
        return {}
    keys = set(adata.uns.keys())
    return {
        name: adata.obs[name].copy()
        for name in adata.obs.columns
        if set(scanpy_uns_keys(name)) & keys
    }


def _recolour(adata: AnnData, name: str, old: pd.Series) -> None:
    """The colours of column ``name`` by category name, in its new order, where every new
    category had one; otherwise removed (scanpy picks new ones at the next plot)."""
    colour_key = _colour_key(name)
    before, now = _categories(old), _categories(adata.obs[name])
    if colour_key not in adata.uns or before is None or now is None:
        return
    colours = adata.uns[colour_key]
    listed = np.asarray(colours, dtype=object).ravel()
    if now.equals(before) and len(listed) == len(before):
        return  # the same categories: the colours stand
    at = before.get_indexer(now)
    if len(listed) != len(before) or (at < 0).any():
        del adata.uns[colour_key]
        return
    kept = listed[at]  # as stored: a list (scanpy's), or an array of its dtype
    if isinstance(colours, list):
        adata.uns[colour_key] = kept.tolist()
    else:
        adata.uns[colour_key] = kept.astype(np.asarray(colours).dtype)


def update_scanpy_keys(adata: AnnData, keys: list[str], before: dict[str, pd.Series]) -> None:
    """For each obs column among ``keys`` (``"obs/<name>"``) that had colours or a dendrogram
    before the write (``before``, of :func:`columns_with_scanpy_keys`): the colours kept by
    category name (or removed, see :func:`_recolour`); the dendrogram removed unless the
    column holds what it held. Columns that were not there are left as they are (colours
    set for a column to come), as are colours the write wrote itself (``"uns/<name>_colors"``
    among ``keys``: over the new categories already)."""
    for key in keys:
        slot, name = key.split("/", 1)
        if slot != "obs" or name not in before:
            continue
        if f"uns/{_colour_key(name)}" not in keys:
            _recolour(adata, name, before[name])
        if _dendrogram_key(name) in adata.uns and not before[name].equals(adata.obs[name]):
            del adata.uns[_dendrogram_key(name)]  # of other groups: scanpy computes it again


def sync_scanpy_keys(group, adata: AnnData, keys: list[str]) -> None:
    """In an .h5ad file or zarr store (``group``, its root), the colours and dendrogram of
    each obs column among ``keys`` as ``adata.uns`` holds them after the write: written, or
    removed where :func:`update_scanpy_keys` removed them."""
    from anndata.io import write_elem

    for key in keys:
        slot, name = key.split("/", 1)
        if slot != "obs":
            continue
        for uns_key in scanpy_uns_keys(name):
            stored = "uns" in group and uns_key in group["uns"]
            if uns_key in adata.uns:
                if "uns" not in group:
                    write_elem(group, "uns", {})
                if stored:
                    remove_entry(group["uns"], uns_key)
                write_elem(group["uns"], uns_key, adata.uns[uns_key])
            elif stored:
                remove_entry(group["uns"], uns_key)
