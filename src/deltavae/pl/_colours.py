"""Several colours of :func:`deltavae.pl.embedding` drawn on Axes of the user's, one per colour
(scanpy refuses ``ax`` with several colours: its grid is its own figure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from natsort import natsorted

from .._checks import short_repr
from ._utils import _items

#: scanpy's arguments that take one value per panel (one value: the same for every panel).
PER_PANEL = ("vmin", "vmax", "vcenter", "norm", "marker")


def axes_per_colour(ax, colors: list) -> list[Axes]:
    """``ax`` given with several colours: one Axes per colour (``plt.subplots(1, 2)``'s array,
    or a list), refused by name where the counts differ or ``ax`` is one Axes (scanpy's
    "Cannot specify `ax` when plotting multiple panels" did not say what to pass)."""
    given = [ax] if isinstance(ax, Axes) else _items(ax)
    if not (given and all(isinstance(a, Axes) for a in given)):
        raise TypeError(
            "ax must be a sequence of matplotlib Axes, one per colour, or None; got "
            f"{type(ax).__name__}."
        )
    if len(given) != len(colors):
        raise ValueError(
            f"ax holds {len(given)} Axes, and color names {len(colors)} "
            f"({short_repr([str(c) for c in colors], n=5, unit='colours')}): pass one Axes per "
            "colour (fig, axes = plt.subplots(1, len(color))), or ax=None for a figure of its "
            "own."
        )
    return given


def _one_panel(kwargs: dict, i: int, n: int) -> dict:
    """``kwargs`` of panel ``i`` of ``n``: its title and its entries of the per-panel
    arguments, as scanpy reads them over its own grid."""
    out = dict(kwargs)
    title = out.pop("title", None)
    titles = [] if title is None else [title] if isinstance(title, str) else list(title)
    if i < len(titles):  # scanpy titles the rest by their colour
        out["title"] = titles[i]
    for key in PER_PANEL:
        value = out.get(key)
        if value is None or isinstance(value, str) or not isinstance(value, Sequence):
            continue
        if len(value) not in (1, n):
            raise ValueError(
                f"{key} holds {len(value)} values, and color names {n} panels: pass one value "
                "for every panel, or one per colour."
            )
        out[key] = value[0] if len(value) == 1 else value[i]
    return out


def each_colour(
    drawn: AnnData, basis: str, colors: list, axes: list[Axes], kwargs: dict
) -> list[Axes]:
    """Draw each colour of ``colors`` on its Axes of ``axes``, as scanpy draws one."""
    if isinstance(kwargs.get("components"), Sequence) and not isinstance(kwargs["components"], str):
        if len(kwargs["components"]) > 1:
            raise ValueError(
                "ax given as one Axes per colour draws one pair of components: pass one "
                "(components='1,2'), or ax=None for a panel per colour and pair."
            )
    n = len(colors)
    for i, (color, ax) in enumerate(zip(colors, axes, strict=True)):
        sc.pl.embedding(
            drawn,
            basis=basis,
            color=color,
            ax=ax,
            show=False,
            save=False,
            **_one_panel(kwargs, i, n),
        )
    return list(axes)


def fill_palette(adata: AnnData, colors: list, kwargs: dict) -> None:
    """A ``palette`` given as a dict, checked against the categories it colours: scanpy needs
    a colour for every category, and a dict without one raised a bare ``KeyError: 'NK'``, also
    for a category no cell holds (which it lists in the legend). Categories of no cell get the
    colour of their place in matplotlib's cycle (``"C3"``), as scanpy's default; a category of
    cells without a colour is refused by name."""
    palette = kwargs.get("palette")
    if not isinstance(palette, Mapping):
        return
    filled = dict(palette)
    for name in colors:
        if not isinstance(name, str) or name not in adata.obs:
            continue
        values = adata.obs[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            categories = list(values.cat.categories)
            used = set(values.dropna().unique())
        elif pd.api.types.is_string_dtype(values) or values.dtype == object:
            # every value is used (nothing to fill); natsorted as scanpy lists them, mixed too
            categories = natsorted(used := set(values.dropna().unique()), key=str)
        else:
            continue
        lacking = [c for c in categories if c not in filled and c in used]
        if lacking:
            raise ValueError(
                f"palette names no colour for {short_repr(lacking, n=10, unit='categories')} "
                f"of {name!r}: add them (palette={{{lacking[0]!r}: 'tab:green', ...}}), or pass "
                "palette as a list or a colour map name."
            )
        for i, category in enumerate(categories):
            filled.setdefault(category, to_hex(f"C{i}"))
    kwargs["palette"] = filled
