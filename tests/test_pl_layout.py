"""deltavae.pl sized, titled and placed as scanpy's plots are: rcParams["figure.figsize"]
(sc.set_figure_params) followed, title= on every plot, and spots over their tissue image where
sc.pl.spatial puts them (uns["spatial"] scale factors)."""

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from _spot_panels import spot_panels  # noqa: E402

import deltavae as dv  # noqa: E402


def _visium(n=30):
    """Spots in full-resolution pixels with a Space Ranger library (hires and lowres images)."""
    spots = spot_panels(n, (2000, 8000), umap=True)
    factors = {"tissue_hires_scalef": 0.1, "tissue_lowres_scalef": 0.03}
    factors["spot_diameter_fullres"] = 90.0
    images = {"hires": np.ones((80, 80, 3)), "lowres": np.ones((24, 24, 3))}
    spots.uns["spatial"] = {"lib1": {"images": images, "scalefactors": factors}}
    return spots


def _history():
    return {"elbo_train": pd.DataFrame({"elbo_train": [3.0, 2.0, 1.5]})}


def _elbow(spots):
    curve = {"n_archetypes": [2, 3, 4], "explained_variance": [0.5, 0.8, 0.85], "chosen": 3}
    spots.uns["archetypes"] = {"elbow": curve}
    return spots


def _one_panel_plots(spots):
    means = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["a", "b", "c"])
    return {
        "history": lambda **kw: dv.pl.history(_history(), show=False, **kw),
        "archetype_elbow": lambda **kw: dv.pl.archetype_elbow(_elbow(spots), show=False, **kw),
        "perturbation_scatter": lambda **kw: dv.pl.perturbation_scatter(
            means * 1.1, means, show=False, **kw
        ),
        "cluster_composition": lambda **kw: dv.pl.cluster_composition(
            spots, "region", "region", show=False, **kw
        ),
    }


def test_plots_follow_rcparams_figsize_as_scanpy_plots_do():
    """plt.rcParams["figure.figsize"] (what sc.set_figure_params(figsize=...) sets) was ignored:
    every plot drew at its own fixed size; and image.cmap (color_map=) by the value plots."""
    spots = _visium()
    plots = _one_panel_plots(spots)
    with plt.rc_context({"figure.figsize": (3.0, 2.0)}):
        for name, plot in plots.items():
            if name != "cluster_composition":  # sized to its table, as sc.pl.matrixplot
                assert tuple(plot().figure.get_size_inches()) == (3.0, 2.0), name
        # several panels: the size of each, as scanpy's multi-panel plots
        axes = dv.pl.spatial_proportions(spots, ncols=2, show=False)
        assert tuple(axes[0].figure.get_size_inches()) == (6.0, 2.0)
        axes = dv.pl.cluster_probabilities(spots, clusters=[0, 1], ncols=3, show=False)
        assert tuple(axes[0].figure.get_size_inches()) == (9.0, 2.0)
    for name, plot in plots.items():  # figsize= wins, on every plot
        assert tuple(plot(figsize=(4, 3)).figure.get_size_inches()) == (4.0, 3.0), name
    fig = dv.pl.embedding(spots, color="g0", figsize=(2.5, 2.5), return_fig=True)
    assert tuple(fig.get_size_inches()) == (2.5, 2.5)
    with plt.rc_context({"image.cmap": "magma"}):  # sc.set_figure_params(color_map="magma")
        (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", show=False)
        assert ax.collections[-1].get_cmap().name == "magma"
        axes = dv.pl.cluster_probabilities(spots, clusters=[0], show=False)
        assert [ax.collections[-1].get_cmap().name for ax in axes] == ["magma_r", "magma"]
    # matplotlib's default size leaves each plot its own
    assert tuple(plots["history"]().figure.get_size_inches()) == (5.0, 3.5)
    with pytest.raises(ValueError, match=r"figsize must be \(width, height\) in inches; got 4"):
        plots["history"](figsize=4)


def test_every_plot_takes_a_title():
    spots = _visium()
    for name, plot in _one_panel_plots(spots).items():
        assert plot(title="Mine").get_title() == "Mine", name
        assert plot(title="").get_title() == "", name
    assert dv.pl.history(_history(), show=False).get_title() == "Training history"
    axes = dv.pl.spatial_proportions(spots, title=["A", "N"], show=False)
    assert [ax.get_title() for ax in axes] == ["A", "N"]
    # one string over several panels is the figure's title; the panels keep theirs
    axes = dv.pl.cluster_probabilities(spots, clusters=[1], title="Sample 1", show=False)
    assert axes[0].figure.get_suptitle() == "Sample 1"
    assert [ax.get_title() for ax in axes] == ["Cluster entropy", "P(cluster 1)"]
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", title="Astrocytes", show=False)
    assert ax.get_title() == "Astrocytes" and not ax.figure.get_suptitle()
    with pytest.raises(ValueError, match=r"title names 1 panels, and the plot has 2"):
        dv.pl.spatial_proportions(spots, title=["A"], show=False)


def test_every_plot_returns_its_figure_as_scanpy_plots_do(tmp_path):
    """return_fig=True (scanpy's) was refused by every plot but embedding: TypeError."""
    spots = _visium()
    plots = _one_panel_plots(spots)
    plots["spatial_proportions"] = lambda **kw: dv.pl.spatial_proportions(spots, **kw)
    plots["cluster_probabilities"] = lambda **kw: dv.pl.cluster_probabilities(spots, **kw)
    for name, plot in plots.items():  # the last two not shown under scanpy's autoshow either
        fig = plot(return_fig=True)
        assert isinstance(fig, plt.Figure) and fig.axes, name
    fig = dv.pl.history(_history(), return_fig=True, save=tmp_path / "h.png")
    assert isinstance(fig, plt.Figure) and (tmp_path / "h.png").stat().st_size > 1000


def _centres(ax):
    return np.asarray(ax.collections[-1].get_offsets())


def test_spots_land_on_the_image_as_scanpy_places_them():
    """obsm["spatial"] in full-resolution pixels was drawn as it is: over a hires image (10% of
    the full resolution) the spots lay ten times too far out, beside the tissue."""
    spots = _visium()
    full = spots.obsm["spatial"]
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", show=False)
    np.testing.assert_allclose(_centres(ax), full * 0.1)
    assert ax.images and ax.images[0].get_array().shape[:2] == (80, 80)
    assert ax.yaxis_inverted() and ax.get_aspect() == 1.0
    np.testing.assert_allclose(ax.collections[-1].get_widths(), 90 * 0.1)  # to scale
    # the same place in dv.pl.embedding(basis="spatial"), scanpy's circles of that radius
    emb = dv.pl.embedding(spots, basis="spatial", color="g0", show=False)
    paths = emb.collections[0].get_paths()
    centres = np.array([(p.vertices.min(0) + p.vertices.max(0)) / 2 for p in paths])
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(full * 0.1, axis=0), rtol=1e-6)
    assert emb.images and emb.yaxis_inverted()
    # cluster_probabilities(basis="spatial") too (drew full-resolution pixels, no image)
    ax = dv.pl.cluster_probabilities(spots, basis="spatial", show=False)
    np.testing.assert_allclose(np.sort(_centres(ax), 0), np.sort(full * 0.1, 0))
    assert ax.images and ax.yaxis_inverted()
    # img_key and scale_factor as in scanpy; img_key=None: the coordinates as they are
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", img_key="lowres", show=False)
    np.testing.assert_allclose(_centres(ax), full * 0.03)
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", img_key=None, show=False)
    np.testing.assert_allclose(_centres(ax), full)
    assert not ax.images
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", scale_factor=0.5, show=False)
    np.testing.assert_allclose(_centres(ax), full * 0.5)
    # sc.pl.spatial's alpha_img, bw and crop_coord (full-resolution pixels), in both plots
    crop = {"alpha_img": 0.5, "bw": True, "crop_coord": (3000, 6000, 2000, 5000)}
    (prop,) = dv.pl.spatial_proportions(spots, columns="Astro", show=False, **crop)
    emb = dv.pl.embedding(spots, basis="spatial", color="region", show=False, **crop)
    for ax in (prop, emb):
        assert ax.get_xlim() == (300.0, 600.0) and ax.get_ylim() == (500.0, 200.0)
        assert ax.images[0].get_alpha() == 0.5 and ax.images[0].get_array().shape == (80, 80)


def test_a_size_per_spot_stays_with_its_spot():
    """size with one value per spot (as scanpy takes it): the spots without a value were drawn
    apart, and the sizes did not follow them (a ValueError, or sizes of other spots)."""
    spots = _visium(10)
    spots.obsm["proportions"].iloc[:2] = np.nan
    size = np.arange(1.0, 11.0)
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", size=size, show=False)
    grey, values = ax.collections
    np.testing.assert_allclose(grey.get_widths(), size[:2] * 9.0)
    np.testing.assert_allclose(values.get_widths(), size[2:] * 9.0)
    spots.uns.clear()  # markers in points², as scatter draws them
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", size=size, show=False)
    np.testing.assert_allclose(ax.collections[1].get_sizes(), size[2:])
    # rasterized as scanpy's points: a PDF of 20,000 spots was 9.8 MB of vector markers
    assert all(points.get_rasterized() for points in [grey, values, *ax.collections])
    with pytest.raises(ValueError, match=r"size has 3 values; pass one, or one per spot \(10\)"):
        dv.pl.spatial_proportions(spots, size=[1, 2, 3], show=False)


def test_which_library_and_image_is_asked_for_and_refused_by_name(tmp_path):
    spots = _visium()
    spots.uns["spatial"]["lib2"] = spots.uns["spatial"]["lib1"]
    with pytest.raises(ValueError, match=r"holds 2 libraries .*pass library_id="):
        dv.pl.spatial_proportions(spots, show=False)
    with pytest.raises(ValueError, match=r"holds 2 libraries"):
        dv.pl.embedding(spots, basis="spatial", color="g0", show=False)
    (ax,) = dv.pl.spatial_proportions(spots, columns="Astro", library_id="lib2", show=False)
    np.testing.assert_allclose(_centres(ax), spots.obsm["spatial"] * 0.1)
    plt.close("all")
    # the CLI's report of spots of two libraries: drawn without an image, not refused
    from deltavae._cli_report import _spatial_plots

    files = _spatial_plots(spots, _history(), "nmfdeconv", tmp_path)
    assert [f.name for f in files] == ["elbo_history.png", "spatial_proportions.png"]
    assert plt.get_fignums() == []
    with pytest.raises(KeyError, match=r"library_id='lib3' is not in adata.uns\['spatial'\]"):
        dv.pl.spatial_proportions(spots, library_id="lib3", show=False)
    with pytest.raises(KeyError, match=r"img_key='fullres' is not in .*\['hires', 'lowres'\]"):
        dv.pl.spatial_proportions(spots, library_id="lib1", img_key="fullres", show=False)
    with pytest.raises(ValueError, match=r"\['img_key'\] place spots on a tissue image"):
        dv.pl.spatial_proportions(spots, basis="X_umap", img_key="hires", show=False)
    assert plt.get_fignums() == []


def test_slides_concatenated_are_drawn_one_library_at_a_time():
    """Two slides concatenated with a library_id column: each library's spots go over its own
    image only (library_id='s1' drew the spots of both slides over s1's image, silently), and
    one slide's spots need no library_id (the column tells it)."""
    first, second = _visium(10), _visium(10)
    second.uns["spatial"] = {"s2": second.uns["spatial"].pop("lib1")}
    first.uns["spatial"] = {"s1": first.uns["spatial"].pop("lib1")}
    both = ad.concat(
        {"s1": first, "s2": second}, label="library_id", uns_merge="unique", index_unique="-"
    )
    with pytest.raises(ValueError, match=r"by obs\['library_id'\]: draw one library at a time"):
        dv.pl.spatial_proportions(both, show=False)
    with pytest.raises(ValueError, match=r"10 of the 20 spots belong to other libraries"):
        dv.pl.spatial_proportions(both, library_id="s1", show=False)
    one = both[both.obs["library_id"] == "s2"]
    (ax,) = dv.pl.spatial_proportions(one, columns="Astro", show=False)
    np.testing.assert_allclose(_centres(ax), one.obsm["spatial"] * 0.1)
    # without an image the coordinates of both are drawn, as before
    (ax,) = dv.pl.spatial_proportions(both, columns="Astro", img_key=None, show=False)
    plt.close("all")


def test_long_panel_titles_stay_over_their_panel():
    """Cell types of long names (as many references label them): each title ran over its
    neighbours' in a row of panels; they are broken into lines that fit their panel."""
    spots = _visium(10)
    names = ["Oligodendrocyte precursor cell of the cortex", "Microglia macrophage perivascular"]
    spots.obsm["proportions"].columns = names
    fig = dv.pl.spatial_proportions(spots, img_key=None, return_fig=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    first, second = (ax.title.get_window_extent(renderer) for ax in panels)
    assert first.x1 < second.x0, (first, second)
    assert [ax.title.get_text().replace("\n", " ") for ax in panels] == names
    plt.close(fig)


def test_cli_draws_each_slide_over_its_own_image(tmp_path):
    """The CLI's report of slides concatenated (a library_id column, or --sample-key): every
    slide's spots were drawn in one panel without an image, where slides of overlapping
    coordinates lie over each other; now one PNG per slide, over its own image."""
    from deltavae._cli_report import _spatial_plots

    first, second = _visium(10), _visium(10)
    second.uns["spatial"] = {"s2": second.uns["spatial"].pop("lib1")}
    second.uns["spatial"]["s2"]["scalefactors"] = {"tissue_hires_scalef": 0.05}
    first.uns["spatial"] = {"s1": first.uns["spatial"].pop("lib1")}
    both = ad.concat(
        {"s1": first, "s2": second}, label="library_id", uns_merge="unique", index_unique="-"
    )
    files = _spatial_plots(both, _history(), "nmfdeconv", tmp_path)
    names = ["elbo_history.png", "spatial_proportions_s1.png", "spatial_proportions_s2.png"]
    assert [f.name for f in files] == names
    assert all(f.is_file() for f in files)
    assert plt.get_fignums() == []
    both.obs["slide"] = both.obs["library_id"].map({"s1": "a b", "s2": "c/d"})
    both.uns.pop("spatial")  # slides without images, by --sample-key
    files = _spatial_plots(both, _history(), "nmfdeconv", tmp_path / "k", sample_key="slide")
    assert [f.name for f in files][1:] == [
        "spatial_proportions_a_b.png",
        "spatial_proportions_c_d.png",
    ]


def test_spots_without_coordinates_are_named_not_dropped_silently():
    """A spot whose coordinates are NaN (a bead off the puck, a cell not segmented) was left
    out of every panel by matplotlib without a word."""
    spots = _visium(10)
    spots.obsm["spatial"][3] = np.nan
    with pytest.warns(UserWarning, match=r"1 of the 10 spots have no coordinates .*'3'\): they"):
        dv.pl.spatial_proportions(spots, columns="Astro", img_key=None, show=False)
    plt.close("all")


def test_cli_draws_the_imputers_proportions(tmp_path):
    """deltavae fit --model imputer wrote obsm['proportions'] of spots with coordinates, and
    the help promises 'proportions ... on obsm['spatial'] when the spots have coordinates',
    but drew only the ELBO curves; the latent design writes no proportions, nothing more."""
    from deltavae._cli_report import _spatial_plots

    files = _spatial_plots(_visium(10), _history(), "imputer", tmp_path)
    assert [f.name for f in files] == ["elbo_history.png", "spatial_proportions.png"]
    latent = _visium(10)
    del latent.obsm["proportions"]
    files = _spatial_plots(latent, _history(), "imputer", tmp_path / "latent")
    assert [f.name for f in files] == ["elbo_history.png"]
    assert plt.get_fignums() == []


@pytest.mark.parametrize("layout", ["own", None, "constrained"])
def test_composition_colour_bar_is_as_tall_as_a_narrow_table(layout):
    """A composition of 6 clusters by 2 conditions is a tall, narrow heatmap: matplotlib kept
    its colour bar 20 times as long as wide, and it stopped at 72% of the heatmap's height
    (tutorial 2's clusters against ctrl/stim). It spans the heatmap, on a figure of its own
    and on the user's axes, laid out by constrained layout or not."""
    rng = np.random.default_rng(0)
    cells = ad.AnnData(np.zeros((300, 1)))
    cells.obs["cluster"] = pd.Categorical(rng.integers(0, 6, 300).astype(str))
    cells.obs["condition"] = pd.Categorical(rng.choice(["ctrl", "stim"], 300))
    if layout == "own":
        ax = dv.pl.cluster_composition(cells, "cluster", "condition", show=False)
    else:
        _, (ax, _) = plt.subplots(1, 2, figsize=(5, 4.5), layout=layout)
        dv.pl.cluster_composition(cells, "cluster", "condition", ax=ax, show=False)
    fig = ax.figure
    fig.draw_without_rendering()
    (bar,) = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    heatmap, colour = ax.get_position(), bar.get_position()
    assert colour.height == pytest.approx(heatmap.height, rel=0.01)
    assert colour.y0 == pytest.approx(heatmap.y0, abs=0.005)
    assert colour.width * fig.get_figwidth() > 0.05  # inches: still a bar, not a line
    assert bar.get_ylabel() == "fraction of the row"
    plt.close("all")
