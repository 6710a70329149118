"""Saving and showing a figure the way scanpy's plotting functions do (``show=``, ``save=``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import scanpy as sc
from matplotlib.axes import Axes
from matplotlib.text import Text

logger = logging.getLogger(__name__)

_MIN_DPI = 150
# scanpy infers the format from these endings of a ``save`` string, and only from these.
_FORMATS = (".svg", ".pdf", ".png")


def figure_path(writekey: str, save: bool | str | os.PathLike) -> Path:
    """Where ``save`` writes the figure of the plot named ``writekey``.

    scanpy's rule (``scanpy.plotting._utils.savefig_or_show``): ``True`` is
    ``{figdir}/{writekey}{plot_suffix}.{file_format_figs}``; a string is appended to
    ``writekey``, and its ending ``.svg``, ``.pdf`` or ``.png`` (removed from the name) sets the
    format. Ours adds: a :class:`pathlib.Path` (any ``os.PathLike``) is the file itself.

    Examples
    --------
    >>> import scanpy as sc
    >>> figure_path("history", "_pbmc.png") == sc.settings.figdir / "history_pbmc.png"
    True
    >>> str(figure_path("history", Path("out") / "elbo.png"))
    'out/elbo.png'
    """
    if isinstance(save, os.PathLike):
        return Path(save)
    ext = sc.settings.file_format_figs
    if isinstance(save, str):
        for ending in _FORMATS:
            if save.endswith(ending):
                save, ext = save.removesuffix(ending), ending[1:]
                break
        writekey += save
    return Path(sc.settings.figdir) / f"{writekey}{sc.settings.plot_suffix}.{ext}"


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
) -> Axes | list[Axes] | None:
    """Save and/or show the figure holding ``axes``; return the axes unless shown.

    ``save=None`` follows ``scanpy.settings.autosave``. ``show=None`` follows
    ``scanpy.settings.autoshow`` unless the figure is saved: a saved figure is closed and its
    axes returned, so that writing many plots in a script neither opens windows nor keeps
    figures in pyplot's memory.
    """
    fig = (axes[0] if isinstance(axes, list) else axes).figure
    if save is None:
        save = sc.settings.autosave
    if show is None:
        show = sc.settings.autoshow and not save
    if save is not False:
        path = figure_path(writekey, save)
        if not isinstance(save, os.PathLike):
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_dpi(), bbox_inches="tight")
        # scanpy announces a file it names itself as a warning; a path given is only logged.
        log = logger.info if isinstance(save, os.PathLike) else logger.warning
        log("saving figure to file %s", path)
    if show:
        plt.show()
        return None
    if save is not False:
        # The axes stay usable; closing only stops pyplot from accumulating saved figures.
        plt.close(fig)
    return axes


def label_points(ax: Axes, xs, ys, labels, fontsize: float = 7, max_steps: int = 30) -> list:
    """Write ``labels`` next to the points ``(xs, ys)`` so that no two labels overlap.

    Each label starts 3 points up and right of its point; while its box overlaps a label
    placed before it, it moves up or down (alternating, one line height per step) and gets a
    thin leader line to its point. Call it after everything that changes the axes' limits is
    drawn: the placement is computed in display coordinates. A small greedy placement rather
    than the ``adjustText`` package, which would be a dependency for ten labels.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.autoscale_view()
    points_per_pixel = 72.0 / fig.dpi
    placed, texts = [], []
    for x, y, label in zip(xs, ys, labels, strict=True):
        text = ax.annotate(
            str(label), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=fontsize
        )
        box = Text.get_window_extent(text, renderer)  # the words, not the leader line
        step = box.height * points_per_pixel
        shift, tries = 0.0, 0
        while any(box.overlaps(other) for other in placed) and tries < 2 * max_steps:
            tries += 1
            shift = step * ((tries + 1) // 2) * (1 if tries % 2 else -1)
            text.xyann = (3, 3 + shift)
            box = Text.get_window_extent(text, renderer)  # the words, not the leader line
        if shift:
            text.remove()
            text = ax.annotate(
                str(label),
                (x, y),
                xytext=(3, 3 + shift),
                textcoords="offset points",
                fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "linewidth": 0.4, "color": "0.4"},
            )
            box = Text.get_window_extent(text, renderer)  # the words, not the leader line
        placed.append(box)
        texts.append(text)
    return texts
