"""Room in a figure for the legends its panels place right of them (scanpy's "right margin"):
in the gap before the next panel, and past the last column, inside the figure's edge."""

from __future__ import annotations


def room_for_legends(panels, rounds: int = 3, gaps: bool = True) -> None:
    """Make room in a figure of its own for its panels' legends (:func:`room_at_right`), and,
    with ``gaps``, widen the gaps of a grid of panels where a panel's legend would run under
    the panel right of it (its y label included): scanpy's gap (``sc.pl.spatial``'s, or
    :func:`deltavae.pl.embedding`'s 0.5) holds a short legend, and a long cell type name ran
    under the next panel.

    Only the gap after a column with such a legend grows (by its overlap, in inches): the
    panels and colour bars right of it move right, and the figure widens by as much, each
    keeping its size. Growing every column (the figure's width, which scales every slot) made
    a figure of four panels with one long legend 40% wider than needed, with wide empty gaps.
    """
    panels = [p for p in panels if not hasattr(p, "_colorbar")]
    if gaps:
        _widen_gaps(panels, rounds)
    room_at_right(panels)


def _widen_gaps(panels, rounds: int) -> None:
    fig = panels[0].figure
    for _ in range(rounds):
        renderer = fig.canvas.get_renderer()
        width = fig.get_figwidth()
        # the left edge (inches) of each column after a legend too long, and the room it needs
        extra: dict[float, float] = {}
        for left, right in zip(panels, panels[1:], strict=False):
            legend = left.get_legend()
            was, after = left.get_position(original=True), right.get_position(original=True)
            same_row = after.x0 > was.x0 and after.y0 < was.y1 and was.y0 < after.y1
            if legend is None or not same_row:
                continue
            right.apply_aspect()
            end = legend.get_window_extent(renderer).x1
            # clear of the next panel's y label and ticks too, where it has them
            overlap = (end - right.get_tightbbox(renderer).x0) / fig.dpi
            if overlap > 0:
                edge = round(after.x0 * width, 3)
                extra[edge] = max(extra.get(edge, 0.0), overlap + 0.1)
        if not extra:
            return
        moved = [(ax, ax.get_position(original=True)) for ax in fig.axes]  # colour bars too
        # rcParams["figure.constrained_layout.use"] laid scanpy's grid out as it was, legends
        # over the next panel, and would undo the moves: scanpy's positions, moved, are kept
        fig.set_layout_engine("none")
        grown = width + sum(extra.values())
        fig.set_figwidth(grown)
        for ax, box in moved:
            shift = sum(d for edge, d in extra.items() if box.x0 * width >= edge - 1e-3)
            ax.set_position(
                [(box.x0 * width + shift) / grown, box.y0, box.width * width / grown, box.height]
            )


def room_at_right(panels) -> None:
    """Widen the figure where a panel's legend (that of the last column) runs past its right
    edge, each panel keeping its size and place: the legend was cut off in a figure saved
    with ``fig.savefig(path)`` (only ``bbox_inches="tight"`` kept it) and in a notebook's
    inline figure."""
    fig = panels[0].figure
    renderer = fig.canvas.get_renderer()
    ends = [p.get_legend().get_window_extent(renderer).x1 for p in panels if p.get_legend()]
    over = (max(ends, default=0.0) - fig.bbox.x1) / fig.dpi
    if over <= 0:
        return
    width = fig.get_figwidth()
    grown = width + over + 0.1
    moved = [(ax, ax.get_position(original=True)) for ax in fig.axes]  # colour bars too
    fig.set_layout_engine("none")  # a layout engine would lay the panels out anew
    fig.set_figwidth(grown)
    for ax, box in moved:
        ax.set_position([box.x0 * width / grown, box.y0, box.width * width / grown, box.height])


#: Matplotlib's ``loc="best"`` candidates, in its order of preference (ties keep the first).
_PLACES = (
    "upper right", "upper left", "lower left", "lower right", "right",
    "center left", "center right", "lower center", "upper center", "center",
)  # fmt: skip


def legend_clear_of_lines(ax, axes, handles, labels, **kwargs):
    """``ax.legend(handles, labels)`` where it covers the fewest points and lines of all of
    ``axes`` (``ax`` and its twins): matplotlib's ``loc="best"`` weighs only ``ax``'s lines,
    and put a history's legend over the KL weight's plateau, drawn on the right axis."""
    renderer = ax.figure.canvas.get_renderer()
    for a in axes:  # autoscaled limits, as they will be drawn
        a.get_xlim(), a.get_ylim()
    paths = [
        line.get_transform().transform_path(line.get_path())
        for a in axes
        for line in a.get_lines()
        if line.get_visible() and len(line.get_xydata())
    ]
    best, least = _PLACES[0], None
    for place in _PLACES:
        legend = ax.legend(handles, labels, loc=place, **kwargs)
        box = legend.get_window_extent(renderer)
        badness = sum(
            int(box.count_contains(path.vertices))
            + 10 * int(path.intersects_bbox(box, filled=False))
            for path in paths
        )
        if least is None or badness < least:
            best, least = place, badness
        if not badness:
            break
    return ax.legend(handles, labels, loc=best, **kwargs)


def colorbar_as_tall(ax, mappable, label: str, fraction: float = 0.05, pad: float = 0.02):
    """``ax.figure.colorbar(mappable, ax=ax)`` as tall as ``ax``: matplotlib makes a colour bar
    ``fraction`` of the axes' width wide and keeps it 20 times as long as wide, so that the
    bar of a tall, narrow heatmap (a composition of two conditions) stopped at 72% of its
    height. Its length ratio is raised to the axes' height over its width where they are
    taller than wide; the bar keeps its width."""
    fig, root = ax.figure, ax.figure.figure  # a subfigure's, and the figure it lies in
    bar = fig.colorbar(mappable, ax=ax, label=label, fraction=fraction, pad=pad)
    root.draw_without_rendering()  # the layout engine places the axes at drawing
    box = ax.get_position()  # in fractions of the whole figure
    tall = box.height * root.get_figheight() / (box.width * root.get_figwidth() * fraction)
    if tall > bar.ax.get_box_aspect():
        bar.remove()
        bar = fig.colorbar(mappable, ax=ax, label=label, fraction=fraction, pad=pad, aspect=tall)
    return bar
