"""deltavae.pl panels given as an array of Axes, framed as sc.set_figure_params(frameon=...)
asks, with colour bars that show a clipped scale, and spatial panels spaced as sc.pl.spatial."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from _spot_panels import spot_panels  # noqa: E402

import deltavae as dv  # noqa: E402


def _spots(n=30):
    return spot_panels(n, (0, 100))


_HISTORY = {"elbo_train": pd.DataFrame({"elbo_train": [3.0, 2.0, 1.5]})}


def test_an_array_of_axes_is_taken_per_panel_or_refused_by_name():
    _, grid = plt.subplots(1, 2)
    with pytest.raises(TypeError, match="ax must be one matplotlib Axes.*got 2 Axes"):
        dv.pl.history(_HISTORY, ax=grid, show=False)
    _, one = plt.subplots(1, 1, squeeze=False)
    assert dv.pl.history(_HISTORY, ax=one, show=False) is one[0, 0]
    spots = _spots()
    axes = dv.pl.spatial_proportions(spots, ax=grid, show=False)
    assert axes == list(grid) and axes[1].get_title() == "Neuron"
    _, grid = plt.subplots(1, 2)
    probs = dv.pl.cluster_probabilities(spots, basis="spatial", clusters=[0], ax=grid, show=False)
    assert probs == list(grid)
    with pytest.raises(TypeError, match=r"dv.pl.embedding draws one panel, and got 2 Axes"):
        dv.pl.embedding(spots, basis="spatial", color="region", ax=grid, show=False)
    with pytest.raises(TypeError, match=r"got str: pass an Axes \(fig, ax = plt.subplots"):
        dv.pl.history(_HISTORY, ax="left", show=False)
    ax = dv.pl.embedding(spots, basis="spatial", color="region", ax=one, show=False)
    assert ax is one[0, 0]
    # the Figure of the Axes given (scanpy's return_fig failed: UnboundLocalError 'fig')
    fig = dv.pl.embedding(spots, basis="spatial", color="region", ax=ax, return_fig=True)
    assert fig is ax.figure
    with pytest.raises(ValueError, match="ax holds 2 Axes, and this plot has 3 panels"):
        dv.pl.cluster_probabilities(spots, basis="spatial", clusters=[0, 1], ax=grid, show=False)


def test_several_colours_are_drawn_on_one_axes_each():
    spots = _spots()
    fig, grid = plt.subplots(1, 3)
    colours = ["region", "g0", "g1"]
    axes = dv.pl.embedding(
        spots,
        basis="spatial",
        color=colours,
        ax=grid,
        title=["R"],
        vmax=[None, 3, "p50"],
        show=False,
    )
    assert axes == list(grid) and [ax.get_title() for ax in axes] == ["R", "g0", "g1"]
    assert axes[0].get_legend() is not None and "region_colors" in spots.uns
    assert axes[1].collections[0].get_clim() == (0.0, 3.0)
    g1 = spots[:, "g1"].X.ravel()
    assert axes[2].collections[0].get_clim()[1] == pytest.approx(np.percentile(g1, 50))
    assert len(fig.axes) == 5  # the panels and the two colour bars, in the figure given
    assert dv.pl.embedding(spots, "spatial", colours, ax=grid, return_fig=True) is fig
    with pytest.raises(ValueError, match=r"ax holds 2 Axes, and color names 3 .*one Axes per"):
        dv.pl.embedding(spots, basis="spatial", color=colours, ax=grid[:2], show=False)
    with pytest.raises(ValueError, match=r"ax holds 1 Axes, and color names 3"):
        dv.pl.embedding(spots, basis="spatial", color=colours, ax=grid[0], show=False)
    with pytest.raises(ValueError, match="vmax holds 2 values, and color names 3 panels"):
        dv.pl.embedding(spots, basis="spatial", color=colours, ax=grid, vmax=[1, 2], show=False)


def test_panels_follow_scanpys_frameon_and_line_plots_keep_their_axes():
    spots = _spots()
    framed = sc.settings._frameon
    try:
        sc.settings._frameon = False  # what sc.set_figure_params(frameon=False) sets
        axes = dv.pl.spatial_proportions(spots, show=False)
        axes += [dv.pl.cluster_probabilities(spots, basis="spatial", show=False)]
        assert not any(ax.axison for ax in axes)
        assert dv.pl.history(_HISTORY, show=False).axison
        axes = dv.pl.spatial_proportions(spots, frameon=True, show=False)
        assert all(ax.axison for ax in axes)
    finally:
        sc.settings._frameon = framed
    ax = dv.pl.cluster_probabilities(spots, basis="spatial", frameon=False, show=False)
    assert not ax.axison


def _end(ax):
    """The extend= of the colour bar of the panel's values (its last collection)."""
    return ax.collections[-1].colorbar.extend


def test_colour_bar_ends_show_clipped_values_only():
    spots = _spots()
    clipped = dv.pl.spatial_proportions(spots, vmax=0.5, show=False)
    assert [_end(ax) for ax in clipped] == ["max", "max"]
    whole = dv.pl.spatial_proportions(spots, vmax=1.0, show=False)
    assert [_end(ax) for ax in whole] == ["neither", "neither"]
    spots.obsm["scores"] = np.c_[np.linspace(-1, 2, spots.n_obs)]
    (both,) = dv.pl.spatial_proportions(spots, "scores", vmax=1.0, show=False)
    assert _end(both) == "both"
    # cluster_probabilities' scales hold every value (probabilities are checked to be 0..1)
    ax, prob = dv.pl.cluster_probabilities(spots, basis="spatial", clusters=[0], show=False)
    assert [_end(ax), _end(prob)] == ["neither", "neither"]


def test_spatial_panels_are_spaced_as_sc_pl_spatial_spaces_them():
    spots = _spots()
    spots.uns["spatial"] = {
        "lib": {
            "images": {"hires": np.ones((20, 20, 3))},
            "scalefactors": {"tissue_hires_scalef": 0.2, "spot_diameter_fullres": 5.0},
        }
    }
    ours = dv.pl.embedding(spots, basis="spatial", color=["region", "g0"], show=False)
    with pytest.warns(FutureWarning):
        theirs = sc.pl.spatial(spots, color=["region", "g0"], show=False)
    widths = [axes[0].figure.get_figwidth() for axes in (ours, theirs)]
    assert widths[0] == pytest.approx(widths[1])
    gaps = [axes[1].get_position().x0 - axes[0].get_position().x1 for axes in (ours, theirs)]
    assert gaps[0] == pytest.approx(gaps[1], abs=0.01)
    # a legend too long for that gap widens the figure, not run under the next panel
    spots.obs["type"] = spots.obs["region"].map({"a": "Oligodendrocyte precursor " * 2, "b": "T"})
    left, right = dv.pl.embedding(spots, basis="spatial", color=["type", "g0"], show=False)
    left.figure.canvas.draw()  # as saving or showing it does
    renderer = left.figure.canvas.get_renderer()
    end = left.get_legend().get_window_extent(renderer).x1
    assert end < right.get_window_extent(renderer).x0
    # only the gap after the long legend grows: the others keep scanpy's width (in inches)
    colours = ["type", "g0", "g1", "region"]
    wide = dv.pl.embedding(spots, basis="spatial", color=colours, show=False)
    plain = dv.pl.embedding(spots, basis="spatial", color=["region", *colours[1:]], show=False)

    def gaps(axes):
        fig = axes[0].figure
        boxes = [ax.get_position(original=True) for ax in axes]
        return [(b.x0 - a.x1) * fig.get_figwidth() for a, b in zip(boxes, boxes[1:], strict=False)]

    assert gaps(wide)[1:] == pytest.approx(gaps(plain)[1:], abs=0.01)
    assert gaps(wide)[0] > gaps(plain)[0] + 1.0
    grown = wide[0].figure.get_figwidth() - plain[0].figure.get_figwidth()
    assert grown == pytest.approx(gaps(wide)[0] - gaps(plain)[0], abs=0.01)
    # on another basis too, where 0.5 holds most names and a longer one ran over "UMAP2"
    spots.obsm["X_umap"] = spots.obsm["spatial"]
    with plt.rc_context({"figure.constrained_layout.use": True}):  # which laid it out as it was
        left, right = dv.pl.embedding(spots, color=["type", "g0"], show=False)
    left.figure.canvas.draw()
    renderer = left.figure.canvas.get_renderer()
    end = left.get_legend().get_window_extent(renderer).x1
    assert end < right.get_tightbbox(renderer).x0


def test_a_palette_dict_needs_colours_of_the_drawn_categories_only():
    """A dict without a colour for a category was scanpy's bare KeyError: 'Mono', also for a
    category no cell holds."""
    spots = _spots()
    spots.obs["type"] = spots.obs["region"].map({"a": "B", "b": "T"}).astype(str)
    spots.obs["type"] = pd.Categorical(spots.obs["type"], categories=["B", "T", "Mono"])
    palette = {"B": "red", "T": "blue"}
    ax = dv.pl.embedding(spots, basis="spatial", color="type", palette=palette, show=False)
    assert list(spots.uns["type_colors"][:2]) == ["#ff0000ff", "#0000ffff"]
    assert palette == {"B": "red", "T": "blue"}  # the user's dict is left as it was
    assert ax.get_legend() is not None
    plt.close("all")
    with pytest.raises(ValueError, match=r"palette names no colour for \['T'\] of 'type'"):
        dv.pl.embedding(spots, basis="spatial", color="type", palette={"B": "red"}, show=False)
    assert plt.get_fignums() == []
