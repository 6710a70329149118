"""Plots of deconvolution and archetype results: proportions on tissue, the archetype elbow."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._checks import check_bools, check_ncols, short_repr
from .._close_names import did_you_mean
from .._docs import doc_ax, doc_params, doc_show_save_apart, doc_title_figsize
from .._renamed import foreign_keywords
from .._warn import warn_user
from ._basis import AXIS_NAMES, missing_basis
from ._tissue import DEFAULT, PLACING, doc_tissue, draw_tissue, placed, spot_drawer, tissue
from ._utils import (
    as_names,
    check_adata,
    closes_on_error,
    colour_bar_end,
    figure_size,
    frame,
    one_axes,
    own_axes,
    panel_axes,
    panel_titles,
    savefig_or_show,
    wrapped_title,
)

#: Most panels spatial_proportions draws without columns= (obsm["imputed"] holds every gene).
MAX_DEFAULT_PANELS = 100


def _spatial_values(
    adata: AnnData, key: str, columns: Sequence[str] | None, basis: str = "spatial"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``obsm[key]`` as a table of spots, and its ``columns`` (all when ``None``)."""
    if key not in adata.obsm:
        if key in adata.obs:  # obs["cell_abundance"], a gene's column: one value per spot
            raise KeyError(
                f"key={key!r} is a column of adata.obs, not a table of adata.obsm (available: "
                f"{list(adata.obsm)}): draw it with dv.pl.embedding(adata, basis={basis!r}, "
                f"color={key!r}), which draws tissue as this plot does."
            )
        raise KeyError(
            f"key={key!r} is not in adata.obsm; {did_you_mean(key, adata.obsm, end=' ')}"
            f"available: {list(adata.obsm)}. Run the model's write_to_adata first."
        )
    values = adata.obsm[key]
    numbered = not isinstance(values, pd.DataFrame)
    if numbered:
        values = pd.DataFrame(np.asarray(values), index=adata.obs_names)
        values.columns = [str(c) for c in values.columns]
    if columns is None:
        if values.shape[1] > MAX_DEFAULT_PANELS:  # SpatialImputer's 9,679 lymph-node genes
            raise ValueError(
                f"obsm[{key!r}] holds {values.shape[1]} columns, a panel each by default (183 "
                f"took 10 s): pass columns=, e.g. columns={list(values.columns[:4])!r}; "
                f"columns=list(adata.obsm[{key!r}].columns) draws every one."
            )
        return values, values
    columns = as_names(columns, "columns")
    if numbered:  # an array's columns are its positions: 0 and "0" name the same one
        columns = [str(c) if isinstance(c, int | np.integer) else c for c in columns]
    missing = [c for c in columns if c not in values.columns]
    if missing:
        # A gene the spots measured is none of the imputed ones: "did you mean" named another
        # gene for it (hippocampus Visium's 'Rpl7': "did you mean 'Rpl13a'?").
        genes = [c for c in missing if isinstance(c, str) and c in adata.var_names]
        hints = "".join(
            f" {c!r}: {h}"
            for c in missing
            if c not in genes and (h := did_you_mean(c, values.columns))
        )
        if genes:
            hints += (
                f" {short_repr(genes)} are genes of adata.var_names, the spots' own counts: "
                f"draw them with dv.pl.embedding(adata, basis={basis!r}, color={genes!r})."
            )
        raise KeyError(
            f"{missing} are not columns of obsm[{key!r}]: "
            f"{short_repr(list(values.columns), n=20, unit='columns')}." + hints
        )
    return values, values[list(columns)]


#: Colour bar labels of the obsm entries deltavae writes.
_BAR_LABELS = {
    "proportions": "proportion",
    "proportions_true": "proportion",
    "archetype_weights": "weight",
    "imputed": "expected count",  # SpatialImputer: impute's expected counts, not normalised
}


def _bar_label(key: str) -> str:
    """The colour bar's label of an obsm key, also written with ``key_added`` (a prefix)."""
    for known, label in _BAR_LABELS.items():
        if key == known or key.endswith(f"_{known}"):
            return label
    return key


#: Colour of spots without a value, as scanpy's ``na_color``.
_NA_COLOR = "lightgray"


#: Lowest top of a proportions panel's own scale: a type below it everywhere reads as nearly
#: absent (a type at most 7e-5 of any spot was drawn in the brightest colour).
LOWEST_SCALE_TOP = 0.05


def _are_proportions(table: pd.DataFrame) -> bool:
    """Whether the rows (spots with values) are shares of a whole: between 0 and 1, summing
    to 1."""
    values = table.to_numpy(dtype=float)
    values = values[~np.isnan(values).any(axis=1)]
    return bool(
        values.size
        and values.min() >= 0
        and values.max() <= 1
        and np.allclose(values.sum(axis=1), 1, atol=1e-3)
    )


def _check_bound(value, arg: str) -> None:
    """A colour scale's end as scanpy takes it: a number, ``"pN"`` (the Nth percentile of a
    panel's values, 0 <= N <= 100), a function of a panel's values, or ``None``."""
    if value is None or callable(value):
        return
    if isinstance(value, str):
        try:
            ok = value.startswith("p") and 0 <= float(value[1:]) <= 100
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{arg} must be a number, 'p{99 if arg == 'vmax' else 1}' or None; got "
                f"{short_repr(value)}. Any percentile "
                "'pN' (0 <= N <= 100, 'p99.5' too) or a function of a panel's values works too, "
                "as in scanpy."
            )
        return
    try:
        finite = bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        raise ValueError(f"{arg} must be a finite number, 'pN' or None; got {short_repr(value)}.")


def _bounds(vmin, vmax, panels: list[str]) -> list[tuple]:
    """``(vmin, vmax)`` of each panel: one value for all, or a list of one per panel (as
    scanpy's), each checked."""
    per_panel = []
    for arg, value in {"vmin": vmin, "vmax": vmax}.items():
        if isinstance(value, list | tuple | np.ndarray):
            if len(value) != len(panels):
                raise ValueError(
                    f"{arg} holds {len(value)} values, and the plot has {len(panels)} panels "
                    f"({short_repr(panels, n=5, unit='panels')}): pass one value for all, or one "
                    "per panel."
                )
            value = list(value)
        else:
            value = [value] * len(panels)
        for one in value:
            _check_bound(one, arg)
        per_panel.append(value)
    for low, high in zip(*per_panel, strict=True):
        numbers = [v is None or isinstance(v, int | float | np.number) for v in (low, high)]
        if all(numbers) and high is not None and not high > (low or 0):
            raise ValueError(
                f"vmax must be above vmin; got vmin={low!r}, vmax={high!r}."
                if low is not None
                else f"vmax must be above 0 (the scale starts at 0; pass vmin= below); got "
                f"{high!r}."
            )
    return list(zip(*per_panel, strict=True))


def _bound(values: np.ndarray, bound, default: float) -> float:
    """A scale's end of a panel's ``values`` (NaN left out): ``bound`` resolved as scanpy
    resolves ``vmin`` and ``vmax``, ``default`` where it is ``None`` (or a percentile of no
    values)."""
    if bound is None or not values.size and not isinstance(bound, int | float):
        return default
    if callable(bound):
        found = float(bound(values))
        if not np.isfinite(found):
            raise ValueError(f"A function given as vmin or vmax returned {found}: not a number.")
        return found
    if isinstance(bound, str):
        return float(np.percentile(values, float(bound[1:])))
    return float(bound)


def _scale(values: np.ndarray, vmin, vmax, floor: float = 0.0) -> tuple[float, float]:
    """Lower and upper end of a panel's colour scale. The lower end is 0 unless ``vmin`` says
    otherwise; the upper end the panel's maximum (or ``vmax``), at least ``floor`` unless
    ``vmax`` is a number or a function, and above the lower end always, so that a column of
    zeros reads as absent (the lowest colour), not as a middle value on a scale around 0."""
    bottom = _bound(values, vmin, 0.0)
    top = _bound(values, vmax, float(values.max()) if values.size else bottom)
    fixed = vmax is not None and not isinstance(vmax, str)
    if not fixed and top > bottom:  # a column of zeros: 0 to 1, not 0 to the floor
        top = max(top, floor)
    if top > bottom:
        return bottom, top
    step = abs(top if fixed else bottom) * 0.1 or 1.0
    return (top - step, top) if fixed else (bottom, bottom + step)


@doc_params(tissue=doc_tissue, **doc_show_save_apart("spatial_proportions"))
@foreign_keywords(color="columns")
@closes_on_error
def spatial_proportions(
    adata: AnnData,
    key: str = "proportions",
    columns: Sequence[str] | None = None,
    basis: str = "spatial",
    ncols: int = 4,
    size: float | None = None,
    cmap: str | None = None,
    vmax: float | str | None = None,
    vmin: float | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    title: str | Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    img_key: str | None = DEFAULT,
    library_id: str | None = DEFAULT,
    scale_factor: float | None = None,
    spot_size: float | None = None,
    alpha_img: float = 1.0,
    bw: bool = False,
    crop_coord: tuple[float, float, float, float] | None = None,
    return_fig: bool = False,
    frameon: bool | None = None,
) -> list[Axes] | Figure | None:
    """One panel per cell type (or archetype): its proportion at every spot's coordinates.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[basis]`` and values in ``obsm[key]``.
    key
        obsm entry to draw: ``"proportions"`` (NMFDeconv, SpatialImputer),
        ``"archetype_weights"`` (Archetypes), ``"imputed"`` (SpatialImputer's genes, with
        ``columns=`` the genes to draw), ``"proportions_true"`` (pseudo-spots) ...; the colour
        bar names what the entry holds.
    columns
        Column(s) to draw; default all, up to 100 (``obsm["imputed"]`` of every gene is
        refused without ``columns=``).
    basis
        obsm entry with the x/y coordinates (``"X_<basis>"`` too, as scanpy looks them up);
        ``"spatial"`` (image coordinates) is drawn with the y axis pointing down, as scanpy
        and squidpy draw tissue.
    ncols
        Panels per row.
    size
        Marker size (points²; one, or one per spot); default from the number of spots.
        Spots of a known diameter (``spot_size``, or the library's ``spot_diameter_fullres``)
        are drawn to scale over the tissue, as :func:`scanpy.pl.spatial` draws them, and
        ``size`` scales their diameter (default 1).
    cmap
        Colour map; default ``rcParams["image.cmap"]`` (viridis, or
        ``sc.set_figure_params(color_map=...)``), as scanpy's plots.
    vmax
        Upper end of the colour scale: a number (above ``vmin``), ``"p99"`` (per-panel 99th
        percentile; any ``"pN"``, as scanpy's), a function of a panel's values (as scanpy's)
        or ``None`` (per-panel maximum; 1 for a column of zeros). For proportions (every
        spot's values sum to 1) a panel's own scale reaches at least 0.05, so that a type
        below 5% of every spot reads as nearly absent; pass a number for one scale across
        panels. Spots without a value (NaN) are drawn in light grey.
    vmin
        Lower end of the colour scale, taken as ``vmax`` is (a number, ``"pN"`` or a
        function); default 0. Either may be a list of one per panel, as scanpy's. Values
        beyond either end take its colour, and the colour bar an arrow-tipped end.
    ax
        Axes to draw a single panel on (one column), or a sequence of Axes, one per column
        drawn (``plt.subplots(1, 2)``); a new figure when ``None``.
    {show_save}
    title
        Title of each panel (one per column drawn; default the column names), or one string:
        the title of a single panel, or of the figure of several.
    figsize
        Size of one panel (inches, its colour bar included); default
        ``rcParams["figure.figsize"]`` where set (``sc.set_figure_params``, as scanpy sizes
        each panel), else (3.2, 3.0).
    {tissue}
    {return_fig}
    frameon
        Draw a frame around each panel; default ``sc.set_figure_params(frameon=...)``
        (``True`` unless set), as :func:`scanpy.pl.spatial`.

    Returns
    -------
    The list of Axes, unless the figure is shown; the Figure with ``return_fig``.

    Examples
    --------
    >>> d.write_to_adata(spots)  # doctest: +SKIP
    >>> axes = dv.pl.spatial_proportions(spots, show=False)  # doctest: +SKIP
    >>> dv.pl.spatial_proportions(spots, "archetype_weights", save="_arch.png")  # doctest: +SKIP
    """
    check_adata(adata, "spatial_proportions")
    check_bools(bw=bw, return_fig=return_fig, show=show, frameon=frameon)
    check_ncols(ncols)
    # As scanpy's embedding plots: "X_spatial" for basis="spatial" too, and "spatial" for
    # basis="X_spatial" (squidpy's and scanpy's readers write obsm["spatial"]).
    keys = dict.fromkeys((basis, f"X_{basis.removeprefix('X_')}", basis.removeprefix("X_")))
    found = [k for k in keys if k in adata.obsm]
    if not found:
        raise missing_basis(adata, basis, "")
    coords = np.asarray(adata.obsm[found[0]], dtype=float)
    # scanpy's axis labels: spatial1 and spatial2, UMAP1 and UMAP2
    axis_name = found[0].removeprefix("X_")
    axis_name = AXIS_NAMES.get(axis_name, axis_name)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"obsm[{found[0]!r}] has shape {coords.shape}; expected (spots, 2).")
    unplaced = ~np.isfinite(coords[:, :2]).all(axis=1)
    if unplaced.any():  # matplotlib leaves them out without a word
        warn_user(
            f"{int(unplaced.sum())} of the {adata.n_obs} spots have no coordinates (NaN in "
            f"obsm[{found[0]!r}], e.g. {adata.obs_names[unplaced][0]!r}): they are not drawn."
        )
    image_rows = found[0].removeprefix("X_") == "spatial"
    placing = dict(zip(PLACING, (img_key, library_id, scale_factor, spot_size), strict=False))
    placing = placed(
        basis, image_rows, **placing, alpha_img=alpha_img, bw=bw, crop_coord=crop_coord
    )
    if adata.n_obs == 0:
        raise ValueError("adata holds no spots: nothing to draw.")
    table, values = _spatial_values(adata, key, columns, basis)
    on = tissue(adata, **placing) if image_rows else None
    titles, figure_title = panel_titles(title, [str(c) for c in values.columns])
    bounds = _bounds(vmin, vmax, titles)
    floor = LOWEST_SCALE_TOP if _are_proportions(table) else 0.0
    n = values.shape[1]
    fig, axes = panel_axes(ax, n, ncols, figure_size(figsize, (3.2, 3.0)))
    xy = coords[:, :2] * (on.scale if on is not None else 1.0)
    default = max(2.0, 12000.0 / max(adata.n_obs, 1) ** 1.1)
    draw = spot_drawer(on, size, adata.n_obs, default)
    for ax, column, name, (low, high) in zip(axes, values.columns, titles, bounds, strict=True):
        v = values[column].to_numpy(dtype=float)
        missing = np.isnan(v)
        bottom, top = _scale(v[~missing], low, high, floor)
        # Spots without a value in light grey (scanpy's na_color), under the others.
        if missing.any():
            draw(ax, xy[missing], missing, c=_NA_COLOR, rasterized=True)
        # rasterized, as scanpy draws points: a PDF of 50,000 beads' vector markers per panel
        # took minutes to open
        points = draw(
            ax,
            xy[~missing],
            ~missing,
            c=v[~missing],
            cmap=cmap,
            vmin=bottom,
            vmax=top,
            rasterized=True,
        )
        # an arrow-tipped end where vmax or vmin (the 0 the scale starts at, by default)
        # clips values, as matplotlib marks a clipped scale
        extend = colour_bar_end(v, bottom, top)
        bar = dict(label=_bar_label(key), shrink=0.7, pad=0.02, extend=extend)
        fig.colorbar(points, ax=ax, **bar)
        ax.set_title(wrapped_title(ax, name))
        if image_rows:  # image orientation (rows down), over the tissue image where there is one
            draw_tissue(ax, on)
        else:
            ax.set_aspect("equal")
        frame(ax, axis_name, frameon)
    if figure_title is not None:
        fig.suptitle(figure_title)
    return savefig_or_show(axes, "spatial_proportions", show, save, return_fig)


@doc_params(
    ax=doc_ax,
    **doc_show_save_apart("archetype_elbow"),
    title_figsize=doc_title_figsize('``"Archetype elbow"``', (4.5, 3.2)),
)
@closes_on_error
def archetype_elbow(
    adata_or_model,
    key: str = "archetypes",
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Explained variance against the number of archetypes, with the chosen number marked
    (and the number of archetypes kept, where similar ones were merged: ``merge_threshold``).
    The legend states the rule: the first number whose next archetype explains less than
    7% of the variance that 2 leave unexplained, or the range's end where each still did
    (a larger ``max_archetypes`` may then choose more).

    Parameters
    ----------
    adata_or_model
        An AnnData with ``uns["archetypes"]["elbow"]`` (written by
        :meth:`deltavae.model.Archetypes.write_to_adata`) or the model itself, trained with
        ``n_archetypes="auto"``.
    key
        The ``uns`` entry holding the curve: ``"archetypes"``, or ``"<key_added>_archetypes"``
        for results written with ``write_to_adata(key_added=...)``.
    {ax}
    {show_save}
    {title_figsize}
    {return_fig}

    Returns
    -------
    The Axes, unless the figure is shown; the Figure with ``return_fig``.

    Examples
    --------
    >>> ax = dv.pl.archetype_elbow(spots, show=False)  # doctest: +SKIP
    """
    check_bools(return_fig=return_fig, show=show)
    if isinstance(adata_or_model, AnnData):
        curve = adata_or_model.uns.get(key, {}).get("elbow")
        kept = adata_or_model.uns.get(key, {}).get("names")
        written = [k for k in adata_or_model.uns if str(k).endswith("archetypes") and k != key]
    elif not hasattr(adata_or_model, "archetype_names"):
        # Another model, a table or a path was told it had no curve for want of "auto".
        raise TypeError(
            "dv.pl.archetype_elbow takes an AnnData with uns[key]['elbow'] or an Archetypes "
            f"model, not {type(adata_or_model).__name__}."
        )
    else:
        curve, written = getattr(adata_or_model, "elbow_", None), []
        names = getattr(adata_or_model, "archetype_names", None)  # merged after training
        trained = callable(names) and getattr(adata_or_model, "is_trained_", False)
        kept = names() if curve is not None and trained else None
        if curve is None:  # the uns advice below would send the model's user to the model
            raise ValueError(
                f"This {type(adata_or_model).__name__} has no explained-variance curve: only "
                "n_archetypes='auto' computes one, to choose the number of archetypes."
            )
    if curve is None:
        elsewhere = [k for k in written if "elbow" in adata_or_model.uns[k]]
        # key="k4" for write_to_adata(key_added="k4")'s curve: its entry first, not the first
        elsewhere.sort(key=lambda k: k != f"{key}_archetypes")
        raise ValueError(
            f"No explained-variance curve in uns[{key!r}]; "
            + (
                f"uns holds one under {elsewhere}: pass key={elsewhere[0]!r}."
                if elsewhere
                else "fit Archetypes with n_archetypes='auto' and call write_to_adata to "
                "store it (or pass the model)."
            )
        )
    lacking = [k for k in ("n_archetypes", "explained_variance", "chosen") if k not in curve]
    if lacking:
        raise ValueError(
            f"The explained-variance curve lacks {lacking}; write it again with "
            "model.write_to_adata(adata), or pass the model."
        )
    ks = np.asarray(curve["n_archetypes"])
    explained = np.asarray(curve["explained_variance"])
    chosen = int(curve["chosen"])
    ax = one_axes(ax, "archetype_elbow")
    if ax is None:
        ax = own_axes(figure_size(figsize, (4.5, 3.2)))
    ax.plot(ks, explained, marker="o", color="0.3")
    label = f"chosen: {chosen}"
    if kept is not None and len(kept) != chosen:  # the spatial panels show the merged ones
        label += f", merged into {len(kept)}"
    label += _rule_note(curve)
    ax.axvline(chosen, color="tab:red", linestyle="--", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "2.5 archetypes" tick
    ax.set_xlabel("number of archetypes")
    ax.set_ylabel("explained variance")
    ax.set_title("Archetype elbow" if title is None else title)
    ax.legend()
    return savefig_or_show(ax, "archetype_elbow", show, save, return_fig)


def _rule_note(curve) -> str:
    """The stopping rule of :func:`archetype_elbow`'s curve, for its legend (``""`` for a
    curve written before the rule was recorded)."""
    if "min_gain" not in curve:
        return ""
    if not bool(curve.get("stopped", True)):
        return "\n(end of range: a larger max_archetypes may add more)"
    return f"\n(the next explains < {float(curve['min_gain']):.0%} of what 2 leave)"
