"""Saving and showing a figure the way scanpy's plotting functions do (``show=``, ``save=``)."""

from __future__ import annotations

import functools
import logging
import os
import textwrap
import weakref
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from anndata import AnnData
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text

logger = logging.getLogger(__name__)

_MIN_DPI = 150
# scanpy infers the format from these endings of a ``save`` string, and only from these.
_FORMATS = (".svg", ".pdf", ".png")
# Figures a plot made itself: only these are closed after saving. A figure the user's ``ax``
# belongs to stays open, for the panels still to be drawn on it.
_OWN_FIGURES: weakref.WeakSet = weakref.WeakSet()


def own_figure(fig: plt.Figure) -> plt.Figure:
    """Mark ``fig`` as made by a plot of this package (see :func:`savefig_or_show`)."""
    _OWN_FIGURES.add(fig)
    return fig


def closes_on_error(plot):
    """Close the figures ``plot`` opened when it fails: a figure made before the error (an
    unknown ``cmap``, a ``size`` that is no number) was left open, drawn half or empty, and a
    notebook showed it under the traceback. A figure of an ``ax`` passed in stays open."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        opened = set(plt.get_fignums())
        try:
            return plot(*args, **kwargs)
        except BaseException:
            for number in set(plt.get_fignums()) - opened:
                plt.close(number)
            raise

    return wrapper


def is_file_path(save) -> bool:
    """Whether ``save`` names the file itself: a :class:`pathlib.Path` (any ``os.PathLike``)
    or an absolute path given as a string."""
    return isinstance(save, os.PathLike) or (isinstance(save, str) and os.path.isabs(save))


def figure_path(writekey: str, save: bool | str | os.PathLike) -> Path:
    """Where ``save`` writes the figure of the plot named ``writekey``.

    scanpy's rule (``scanpy.plotting._utils.savefig_or_show``): ``True`` is
    ``{figdir}/{writekey}{plot_suffix}.{file_format_figs}``; a string is appended to
    ``writekey``, and its ending ``.svg``, ``.pdf`` or ``.png`` (removed from the name) sets the
    format. Ours adds: a :class:`pathlib.Path` (any ``os.PathLike``) or an absolute path as a
    string is the file itself (scanpy's rule would nest it under ``figdir``).

    Examples
    --------
    >>> import scanpy as sc
    >>> figure_path("history", "_pbmc.png") == sc.settings.figdir / "history_pbmc.png"
    True
    >>> str(figure_path("history", Path("out") / "elbo.png"))
    'out/elbo.png'
    """
    if is_file_path(save):
        return Path(save)
    ext = sc.settings.file_format_figs
    if isinstance(save, str):
        for ending in _FORMATS:
            if save.endswith(ending):
                save, ext = save.removesuffix(ending), ending[1:]
                break
        writekey += save
    return Path(sc.settings.figdir) / f"{writekey}{sc.settings.plot_suffix}.{ext}"


def check_adata(adata, plot: str) -> None:
    """Refuse anything but an AnnData, a model above all (``dv.pl.history`` takes one): its
    error was an AttributeError about ``n_obs`` or ``obsm``.

    Examples
    --------
    >>> check_adata(object(), "embedding")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: dv.pl.embedding takes an AnnData, not object. A model's results are drawn ...
    """
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"dv.pl.{plot} takes an AnnData, not {type(adata).__name__}. A model's results "
            "are drawn from the AnnData they were written into: model.write_to_adata(adata), "
            "then pass adata."
        )


def for_scanpy(adata: AnnData, obsm_key: str, kwargs: dict) -> AnnData:
    """An AnnData for :func:`scanpy.pl.embedding` to draw ``obsm[obsm_key]`` of ``adata`` from,
    sharing its matrices but with ``obs``, ``var`` and ``uns`` of its own: scanpy makes every
    string column of ``obs`` and ``var`` categorical and stores colours in ``uns``, which
    changed the user's columns and turned a view into a copy of its subset.
    :func:`keep_colours` hands the colours back.
    """
    layer = kwargs.get("layer")
    drawn = AnnData(
        X=adata.X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        obsm={obsm_key: adata.obsm[obsm_key]},
        layers={layer: adata.layers[layer]} if layer in adata.layers else None,
        obsp=dict(adata.obsp) if kwargs.get("edges") else None,
        uns=dict(adata.uns),
    )
    if adata.raw is not None:  # genes drawn from raw (use_raw), its matrix shared too
        drawn.raw = AnnData(X=adata.raw.X, var=adata.raw.var.copy())
    return drawn


def keep_colours(adata: AnnData, drawn: AnnData) -> None:
    """Keep the colours scanpy chose for ``drawn``'s categories in ``adata.uns``, as scanpy
    does, so that later plots colour the groups alike; a view keeps none (it would become a
    copy of its subset)."""
    if adata.is_view:
        return
    for key, value in drawn.uns.items():
        if key.endswith("_colors") and (key not in adata.uns or adata.uns[key] is not value):
            adata.uns[key] = value


def as_names(value, arg: str) -> list | None:
    """A list argument as a list: one name given as a string is that name (scanpy's
    ``color="CD3E"``), not its letters; an array is its elements; an empty list is refused.

    Examples
    --------
    >>> as_names("ISG15", "highlight"), as_names(np.array([0, 1]), "clusters")
    (['ISG15'], [0, 1])
    """
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(np.asarray(value, dtype=object).ravel())
    if not names:
        raise ValueError(f"{arg} is empty; name at least one, or pass None.")
    return names


def figure_size(figsize, default: tuple[float, float]) -> tuple[float, float]:
    """The size of a plot's figure (or of one of its panels): ``figsize`` where given, else
    ``rcParams["figure.figsize"]`` where the user set it (``plt.rcParams``,
    ``sc.set_figure_params``, a style, ``plt.rc_context``), as scanpy's plots follow it; the
    plot's own ``default`` under matplotlib's default size.

    Examples
    --------
    >>> with plt.rc_context({"figure.figsize": (3, 2)}):
    ...     figure_size(None, (5, 3.5))
    (3.0, 2.0)
    >>> figure_size(None, (5, 3.5)), figure_size((4, 4), (5, 3.5))
    ((5, 3.5), (4.0, 4.0))
    """
    if figsize is None:
        size = tuple(mpl.rcParams["figure.figsize"])
        if size == tuple(mpl.rcParamsDefault["figure.figsize"]):
            return default
        return float(size[0]), float(size[1])
    try:
        width, height = (float(v) for v in figsize)
    except (TypeError, ValueError):
        width = height = float("nan")
    if not (width > 0 and height > 0 and np.isfinite([width, height]).all()):
        raise ValueError(f"figsize must be (width, height) in inches; got {figsize!r}.")
    return width, height


def panel_titles(title, defaults: list[str]) -> tuple[list[str], str | None]:
    """Titles of a plot's panels and of its figure: ``title`` as scanpy's plots take it (one
    string, or one per panel); one string over several panels is the figure's title.

    Examples
    --------
    >>> panel_titles(None, ["A", "B"]), panel_titles("Sample 1", ["A", "B"])
    ((['A', 'B'], None), (['A', 'B'], 'Sample 1'))
    >>> panel_titles(["a", "b"], ["A", "B"]), panel_titles("x", ["A"])
    ((['a', 'b'], None), (['x'], None))
    """
    if title is None:
        return defaults, None
    if isinstance(title, str):
        return ([title], None) if len(defaults) == 1 else (defaults, title)
    titles = [str(t) for t in title]
    if len(titles) != len(defaults):
        raise ValueError(
            f"title names {len(titles)} panels, and the plot has {len(defaults)} "
            f"({defaults[:5]}{' ...' if len(defaults) > 5 else ''}): pass one title per panel, "
            "or one string for the figure."
        )
    return titles, None


def _items(ax) -> list:
    """What a sequence given as ``ax`` holds, flattened (``plt.subplots``' arrays); nothing
    for a string."""
    return [] if isinstance(ax, str) else list(np.asarray(ax, dtype=object).ravel())


def one_axes(ax, plot: str) -> Axes | None:
    """``ax`` of a plot drawing one panel: an Axes, or a sequence holding one (the array of
    ``plt.subplots(1, 1, squeeze=False)``); several Axes (``plt.subplots(1, 2)``) or anything
    else is refused by name (its error was an AttributeError about ``plot``)."""
    if ax is None or isinstance(ax, Axes):
        return ax
    many = _items(ax)
    if len(many) == 1 and isinstance(many[0], Axes):
        return many[0]
    if len(many) and all(isinstance(a, Axes) for a in many):
        got = f"got {len(many)} Axes: pass one of them (ax=axes[0])"
    else:
        got = f"got {type(ax).__name__}: pass an Axes (fig, ax = plt.subplots())"
    raise TypeError(
        f"ax must be one matplotlib Axes: dv.pl.{plot} draws one panel, and {got}, or "
        "ax=None for a figure of its own."
    )


def frame(ax: Axes, axis_name: str, frameon: bool | None) -> None:
    """An embedding's panel: axes labelled ``<axis_name>1`` and ``<axis_name>2``, no ticks, and
    no frame (axis lines and labels off) where ``frameon`` is ``False``, or is ``None`` and
    ``sc.set_figure_params(frameon=False)`` asked for none, as scanpy's embedding and spatial
    plots follow it."""
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    ax.set_xticks([])
    ax.set_yticks([])
    if not (sc.settings._frameon if frameon is None else frameon):
        ax.axis("off")


def colour_bar_end(values, vmin: float | None, vmax: float | None) -> str:
    """``extend=`` of a colour bar (matplotlib's): ``"max"``, ``"min"`` or ``"both"`` where
    ``vmax`` / ``vmin`` clip some of ``values`` (NaN left out), ``"neither"`` otherwise.

    Examples
    --------
    >>> colour_bar_end([0.1, 0.9], 0.0, 0.5), colour_bar_end([0.1, 0.4], 0.0, 0.5)
    ('max', 'neither')
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    # a rounding error (an entropy of 1.0000001 on a scale to 1) clips nothing worth marking
    span = abs(vmax - vmin) if vmin is not None and vmax is not None else 1.0
    tol = 1e-6 * (span or 1.0)
    below = vmin is not None and values.size > 0 and values.min() < vmin - tol
    above = vmax is not None and values.size > 0 and values.max() > vmax + tol
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (bool(below), bool(above)), "neither"
    )


def own_axes(figsize: tuple[float, float]) -> Axes:
    """A new figure's Axes, laid out so that labels and colour bars stay inside the figure
    when it is saved with ``plt.savefig`` after ``show=False``."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    own_figure(fig)
    return ax


def wrapped_title(ax: Axes, title: str) -> str:
    """``title`` broken at spaces into lines no wider than ``ax``'s cell of its figure's grid
    (the whole Axes where it has none): a long cell-type name ran over its neighbours' titles.

    Examples
    --------
    >>> fig, (a, b) = plt.subplots(1, 2, figsize=(4, 2))
    >>> wrapped_title(a, "Oligodendrocyte precursor cell")
    'Oligodendrocyte\\nprecursor cell'
    >>> plt.close(fig)
    """
    fig = ax.figure
    spec = ax.get_subplotspec()
    share = len(spec.colspan) / spec.get_geometry()[1] if spec is not None else None
    inches = fig.bbox.width / fig.dpi * (share or ax.get_position().width)
    points = FontProperties(size=mpl.rcParams["axes.titlesize"]).get_size_in_points()
    width = max(8, int(inches * 72 / (0.6 * points)))  # a character ~0.6 of the font's size
    lines = str(title).splitlines() or [""]
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) or line for line in lines)


def panel_axes(
    ax: Axes | None, n_panels: int, ncols: int, panel_size: tuple[float, float], **subplots
) -> tuple[plt.Figure, list[Axes]]:
    """The figure and the Axes of a plot of ``n_panels`` panels: the given ``ax`` for a plot of
    one panel (as scanpy's multi-panel plots take it), else a grid of its own."""
    if n_panels < 1:
        raise ValueError("Nothing to draw: no panel selected.")
    subplots.setdefault("layout", "constrained")
    if ax is not None and not isinstance(ax, Axes):
        # a sequence of Axes (plt.subplots(1, 2)): one per panel, in order
        given = _items(ax)
        if not (len(given) and all(isinstance(a, Axes) for a in given)):
            raise TypeError(
                "ax must be a matplotlib Axes (one panel) or a sequence of Axes, one per "
                f"panel; got {type(ax).__name__}."
            )
        if len(given) != n_panels:
            raise ValueError(
                f"ax holds {len(given)} Axes, and this plot has {n_panels} panels: pass one "
                "Axes per panel, or ax=None for a figure of its own."
            )
        return given[0].figure, list(given)
    if ax is not None:
        if n_panels != 1:
            raise ValueError(
                f"ax draws one panel, and this plot has {n_panels}: pass one Axes per panel "
                "(a sequence), ax=None for a figure of its own, or ask for a single panel."
            )
        return ax.figure, [ax]
    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    width, height = panel_size
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **subplots
    )
    own_figure(fig)
    axes = list(grid.ravel())
    for spare in axes[n_panels:]:
        spare.remove()
    return fig, axes[:n_panels]


def _dpi() -> float:
    # scanpy saves at rcParams["savefig.dpi"] (set by set_figure_params(dpi_save=...)); a
    # figure saved below 150 dpi is blurry, so that is the floor here.
    dpi = mpl.rcParams["savefig.dpi"]
    return max(float(dpi), _MIN_DPI) if isinstance(dpi, int | float) else _MIN_DPI


def savefig_or_show(
    axes: Axes | list[Axes],
    writekey: str,
    show: bool | None,
    save: bool | str | os.PathLike | None,
    return_fig: bool = False,
) -> Axes | list[Axes] | plt.Figure | None:
    """Save and/or show the figure holding ``axes``; return the axes unless shown, or with
    ``return_fig`` the figure, not shown (scanpy's ``return_fig``).

    ``save=None`` follows ``scanpy.settings.autosave``. ``show=None`` follows
    ``scanpy.settings.autoshow`` unless the figure is saved: a saved figure the plot made itself
    is closed and its axes returned, so that writing many plots in a script neither opens
    windows nor keeps figures in pyplot's memory; the figure of an ``ax`` passed in stays open
    for its other panels.
    """
    # .figure twice: an Axes of a SubFigure (which cannot be saved) to the figure holding it
    fig = (axes[0] if isinstance(axes, list) else axes).figure.figure
    if save is None:
        save = sc.settings.autosave
    if return_fig:
        show = False
    if show is None:
        show = sc.settings.autoshow and not save
    if save is not False:
        path = figure_path(writekey, save)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # scanpy's figdir, or the folder
            fig.savefig(path, dpi=_dpi(), bbox_inches="tight")
        except Exception:
            if fig in _OWN_FIGURES:  # not left open, drawn but unsaved, for the next plot
                plt.close(fig)
            raise
        # scanpy announces a file it names itself as a warning; a path given is only logged.
        log = logger.info if is_file_path(save) else logger.warning
        log("saving figure to file %s", path)
    if show:
        plt.show()
    if save is not False and fig in _OWN_FIGURES:
        # The axes stay usable; closing only stops pyplot from accumulating saved figures
        # (shown ones too, as scanpy closes them: a non-interactive backend keeps them open).
        plt.close(fig)
    if return_fig:
        return fig
    return None if show else axes


class _LabelPlacer(Artist):
    """Places its annotations when the figure is drawn, so that they stay apart whatever the
    layout (``tight_layout``, ``bbox_inches="tight"``, more panels) did to the axes since.

    Each label, in the order given, takes the first spot around its point whose box overlaps
    no label placed before it, covers no labelled point nor one of ``avoid`` (a label over
    another gene's point left it unclear which point was which) and stays inside the axes:
    up-right first, then the other corners and sides, then the same directions one line
    height further out, and so on; a label that had to move away gets a thin leader line to
    its point.
    """

    zorder = 2.9  # before the texts (zorder 3) in the axes' drawing order

    def __init__(self, texts: list, avoid=(), max_rings: int = 12):
        super().__init__()
        self.texts = texts
        self.avoid = [tuple(point) for point in avoid]
        self.max_rings = max_rings
        self.set_in_layout(False)

    def draw(self, renderer) -> None:
        if not self.texts:
            return
        frame = self.axes.get_window_extent(renderer)
        # the labelled points (pixels), each as wide as a highlighted marker (s=14: ~2 points)
        points = self.axes.transData.transform([text.xy for text in self.texts] + self.avoid)
        radius = 2.0 * self.figure.dpi / 72.0
        placed = []
        for text in self.texts:
            box = self._place(text, renderer, placed, frame, points, radius)
            placed.append(box)

    def _place(self, text, renderer, placed, frame, points, radius):
        height = _words_box(text, renderer).height * 72.0 / text.figure.dpi
        for ring in range(self.max_rings):
            for sx, sy in _DIRECTIONS:
                _move(text, sx, sy, 3.0 + ring * height)
                box = _words_box(text, renderer)
                inside = frame.containsx(box.x0) and frame.containsx(box.x1)
                inside = inside and frame.containsy(box.y0) and frame.containsy(box.y1)
                wide = box.padded(radius)
                covers = wide.count_contains(points) > 0
                if inside and not covers and not any(box.overlaps(other) for other in placed):
                    text.arrow_patch.set_visible(ring > 0)
                    return box
        # nowhere free: the first spot, as without the placement
        _move(text, *_DIRECTIONS[0], 3.0)
        text.arrow_patch.set_visible(False)
        return _words_box(text, renderer)


def _move(text, sx: int, sy: int, radius: float) -> None:
    # offset (points) in direction (sx, sy), the words aligned to lie on that side of the point
    text.xyann = (sx * radius, sy * radius)
    text.set_horizontalalignment({1: "left", -1: "right", 0: "center"}[sx])
    text.set_verticalalignment({1: "bottom", -1: "top", 0: "center"}[sy])


def _words_box(text, renderer):
    # an Annotation's own extent includes its leader line; its words' box is the Text's, at
    # the position its offset gives now (update_positions moves the words there)
    text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


# up-right first (the usual place of a point's label), then the other corners, then the sides
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def label_points(ax: Axes, xs, ys, labels, fontsize: float = 7, avoid=()) -> list:
    """Write ``labels`` next to the points ``(xs, ys)`` so that no two labels overlap, and
    no label covers one of the points or of ``avoid`` (more points, as ``(x, y)`` pairs).

    The labels are placed each time the figure is drawn (:class:`_LabelPlacer`), in the
    order given: earlier labels get the spots closest to their points. A small greedy
    placement rather than the ``adjustText`` package, which would be a dependency for ten
    labels and places them once, before a later layout change can move them onto each other.
    """
    texts = [
        ax.annotate(
            str(label),
            (x, y),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": "0.4"},
        )
        for x, y, label in zip(xs, ys, labels, strict=True)
    ]
    for text in texts:
        text.arrow_patch.set_visible(False)
    ax.add_artist(_LabelPlacer(texts, avoid))
    return texts
