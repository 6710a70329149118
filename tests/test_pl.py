"""deltavae.pl: each plot returns its Axes, draws what it should and saves a PNG."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

import deltavae as dv  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4)
    model.train(max_epochs=2, enable_progress_bar=False, batch_size=64)
    model.write_to_adata(adata)
    # A stand-in 2-D embedding: the plots only need coordinates, not a real UMAP.
    adata.obsm["X_umap"] = adata.obsm["X_zinbvae"][:, :2]
    return model, adata


def _assert_png(path):
    assert path.is_file()
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_draws_one_line_per_recorded_key(trained, tmp_path):
    model, _ = trained
    ax = dv.pl.history(model, show=False)
    assert isinstance(ax, Axes)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["training", "validation"]
    assert len(lines[0].get_xdata()) == 2
    assert ax.get_xlabel() == "epoch"
    assert "ELBO" in ax.get_ylabel()
    assert ax.get_yscale() == "linear"
    assert ax.get_legend() is not None

    out = tmp_path / "history.png"
    with pytest.warns(UserWarning, match=r"no \['not_logged'\]; not drawn. Its keys"):
        ax = dv.pl.history(model, keys=("elbo_validation", "not_logged"), log=True, save=out)
    assert len(ax.get_lines()) == 1
    assert ax.get_yscale() == "log"
    _assert_png(out)


def test_history_marks_the_epoch_restore_best_kept():
    """The history of a default CGMDVAE run on 600 PBMCs ended at epoch 399 with its
    validation ELBO 11% above epoch 200's, the one restore_best kept: nothing in the plot
    said which epoch the model holds."""
    import warnings

    import scvi

    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=20, n_clusters=2, seed=1)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        model.train(
            max_epochs=30, n_epochs_kl_warmup=4, early_stopping=True, early_stopping_patience=2,
            early_stopping_min_delta=1e6, restore_best=True, enable_progress_bar=False,
            batch_size=32,
        )  # fmt: skip
    kept = model.best_epoch_
    assert kept is not None and kept < model.history["elbo_train"].index[-1]
    ax = dv.pl.history(model, show=False)
    marks = [line for line in ax.get_lines() if line.get_label() == f"kept: epoch {kept}"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [kept, kept]
    assert f"kept: epoch {kept}" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")
    # The history dict alone, or the last epoch kept: no mark.
    ax = dv.pl.history(model.history, show=False)
    assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
    plt.close("all")


@pytest.mark.parametrize(
    ("high", "low"), [(3000.0, 1500.0), (600.0, 250.0), (1e5, 300.0), (10066.0, 1066.0)]
)
def test_history_log_axis_labels_plain_numbers_near_the_curves(high, low):
    epochs = np.arange(60)
    values = low + (high - low) * np.exp(-epochs / 8)
    frames = {"elbo_train": pd.DataFrame({"elbo_train": values}, index=epochs)}
    ax = dv.pl.history(frames, log=True, show=False)
    ax.figure.canvas.draw()
    bottom, top = ax.get_ylim()
    labelled = [
        (tick.get_loc(), tick.label1.get_text())
        for tick in ax.yaxis.get_major_ticks()
        if bottom <= tick.get_loc() <= top and tick.label1.get_text()
    ]
    # Several labels, written as plain numbers, one near the lowest value (where the curve
    # ends), within a factor 1.5 below a decade (2,500 was the lowest above 1,066).
    assert len(labelled) >= 2
    assert all("e" not in text for _, text in labelled)
    assert min(loc for loc, _ in labelled) <= (2.5 if high / low >= 10 else 1.5) * low
    plt.close(ax.figure)


def test_history_log_axis_labels_of_many_decades_do_not_overlap():
    """log=True with the KL weight (1e-6 to 1) beside the ELBO (~200): 1, 2 and 5 in each of
    eight decades wrote 24 labels on top of each other."""
    epochs = np.arange(3)
    frames = {
        "elbo_train": pd.DataFrame({"elbo_train": [210.0, 200.0, 195.0]}, index=epochs),
        "kl_weight": pd.DataFrame({"kl_weight": [1e-6, 1.0, 1.0]}, index=epochs),
    }
    ax = dv.pl.history(frames, keys=["elbo_train", "kl_weight"], log=True, show=False)
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.canvas.draw()
    bottom, top = ax.get_ylim()
    boxes = [
        tick.label1.get_window_extent(renderer)
        for tick in ax.yaxis.get_major_ticks()
        if bottom <= tick.get_loc() <= top and tick.label1.get_text()
    ]
    assert len(boxes) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_history_log_axis_refuses_negative_values():
    frames = {"elbo_train": pd.DataFrame({"elbo_train": [5.0, -2.0]}, index=[0, 1])}
    with pytest.raises(ValueError, match="log=False"):
        dv.pl.history(frames, log=True, show=False)
    assert plt.get_fignums() == []  # refused before drawing: no figure left open
    # the curve that reaches 0 is named: a KL warm-up from 0 was blamed on the ELBO
    frames["elbo_train"].iloc[1] = 4.0
    frames["kl_weight"] = pd.DataFrame({"kl_weight": [0.0, 1.0]}, index=[0, 1])
    with pytest.raises(ValueError, match="but kl_weight goes down to 0 .*leave kl_weight out"):
        dv.pl.history(frames, keys=["kl_weight"], log=True, show=False)


def test_history_draws_the_kl_weight_on_an_axis_of_its_own():
    """The KL weight (0 to 1) was drawn on the ELBO's axis: flat at its foot beside an ELBO of
    thousands, and log=True refused it for its 0. It has its own axis, on the right."""
    frames = {
        "elbo_train": pd.DataFrame({"elbo_train": [3000.0, 2500.0, 2400.0]}),
        "kl_weight": pd.DataFrame({"kl_weight": [0.0, 0.5, 1.0]}),
    }
    ax = dv.pl.history(frames, keys=["elbo_train", "kl_weight"], log=True, show=False)
    (right,) = [other for other in ax.figure.axes if other is not ax]
    assert right.get_ylabel() == "KL weight" and right.get_ylim()[0] == 0
    assert right.get_lines()[0].get_ydata().tolist() == [0.0, 0.5, 1.0]
    assert [line.get_label() for line in ax.get_lines()] == ["training"]
    assert ax.get_ylabel() == "negative ELBO per cell" and ax.get_ylim()[0] > 2000
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["training", "KL weight", "KL warm-up"]


def test_history_legend_covers_neither_axis_line():
    """loc="best" weighed only the ELBO's axis: the framed legend sat over the KL weight's
    plateau (upper right, on the right axis)."""
    epochs = np.arange(50)
    frames = {
        "elbo_train": pd.DataFrame({"elbo_train": 500 + 1500 * np.exp(-epochs / 8)}),
        "kl_weight": pd.DataFrame({"kl_weight": np.minimum(1, epochs / 12)}),
    }
    ax = dv.pl.history(frames, keys=["elbo_train", "kl_weight"], show=False)
    box = ax.get_legend().get_window_extent(ax.figure.canvas.get_renderer())
    for line in [*ax.get_lines(), *ax.figure.axes[1].get_lines()]:
        path = line.get_transform().transform_path(line.get_path())
        assert not path.intersects_bbox(box, filled=False), line.get_label()


def test_history_accepts_the_history_dict_and_draws_on_a_given_axes(trained):
    model, _ = trained
    _, given = plt.subplots()
    ax = dv.pl.history(model.history, ax=given, show=False)
    assert ax is given
    assert len(ax.get_lines()) == 2


def test_history_errors(trained):
    model, adata = trained
    with pytest.raises(ValueError, match="available keys"):
        dv.pl.history(model, keys=("nope",), show=False)
    untrained = dv.model.ZINBVAE(adata, n_latent=2)
    with pytest.raises(ValueError, match="train it first"):
        dv.pl.history(untrained, show=False)


def test_embedding_returns_axes_and_saves(trained, tmp_path):
    _, adata = trained
    out = tmp_path / "umap.png"
    ax = dv.pl.embedding(adata, color="cluster", save=out)
    assert isinstance(ax, Axes)
    assert ax.collections[0].get_offsets().shape == (adata.n_obs, 2)
    assert ax.get_xlabel() == "UMAP1"
    _assert_png(out)

    axes = dv.pl.embedding(adata, basis="umap", color=["cluster", "condition"], show=False)
    assert len(axes) == 2 and all(isinstance(a, Axes) for a in axes)
    # Short legends: scanpy's own layout (a wider default gap made figures 30% wider).
    ours = [a.get_position().bounds for a in axes]
    theirs = sc.pl.embedding(adata, basis="umap", color=["cluster", "condition"], show=False)
    np.testing.assert_allclose(ours, [a.get_position().bounds for a in theirs], atol=1e-9)
    assert axes[0].figure.get_figwidth() == theirs[0].figure.get_figwidth()
    # Cell type names: the gap after their legend grows until it clears the next panel.
    adata.obs["long"] = adata.obs["cluster"].map(lambda c: f"a long cell type name {c}")
    axes = dv.pl.embedding(adata, color=["long", "condition"], show=False)
    renderer = axes[0].figure.canvas.get_renderer()
    legend_end = axes[0].get_legend().get_window_extent(renderer).x1
    assert legend_end < axes[1].get_tightbbox(renderer).x0
    # ... and the last column's legend (one panel's too) ran past the figure's right edge,
    # cut off by fig.savefig(path) without bbox_inches="tight".
    for colours in (["condition", "long"], "long"):
        fig = dv.pl.embedding(adata, color=colours, show=False, return_fig=True)
        fig.canvas.draw()
        ends = [ax.get_legend().get_window_extent().x1 for ax in fig.axes if ax.get_legend()]
        assert fig.bbox.x1 > max(ends) > 0.8 * fig.bbox.x1
    # a given wspace is kept
    axes = dv.pl.embedding(adata, color=["cluster", "condition"], wspace=0.1, show=False)
    assert axes[1].get_position().x0 - axes[0].get_position().x1 < 0.1


def test_embedding_missing_basis(trained):
    _, adata = trained
    with pytest.raises(KeyError, match="X_tsne"):
        dv.pl.embedding(adata, basis="X_tsne", color="cluster", show=False)


@pytest.mark.parametrize(
    ("normalize", "axis", "total"),
    [("cluster", 1, None), ("label", 0, None), (None, None, 120)],
)
def test_cluster_composition_table(trained, normalize, axis, total):
    _, adata = trained
    ax = dv.pl.cluster_composition(adata, "cluster", "condition", normalize=normalize, show=False)
    assert isinstance(ax, Axes)
    table = np.asarray(ax.images[0].get_array())
    assert table.shape == (3, 2)
    if axis is not None:
        np.testing.assert_allclose(table.sum(axis=axis), 1.0)
    else:
        assert table.sum() == total
    assert len(ax.texts) == np.count_nonzero(table)
    sizes = adata.obs["cluster"].value_counts()
    expected = [f"{c} (n={sizes[c]})" for c in adata.obs["cluster"].cat.categories]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    # The colour bar names no unit the rows may not be (cells or spots).
    bar = ax.figure.axes[-1].get_ylabel()
    assert bar == {"cluster": "fraction of the row", "label": "fraction of the column"}.get(
        normalize, "count"
    )
    assert ax.images[0].get_clim() == (0, 1 if normalize else table.max())


def test_cluster_composition_sizes_can_be_left_out(trained):
    _, adata = trained
    ax = dv.pl.cluster_composition(adata, "cluster", "condition", show_sizes=False, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(
        adata.obs["condition"].cat.categories
    )


def test_cluster_composition_takes_labels_key_as_the_models_spell_it(trained):
    """cluster_composition(label_key=...) where setup_anndata and from_reference take
    labels_key: labels_key= was a TypeError. labels_key is the name; label_key= still reads,
    with a FutureWarning; both is a TypeError."""
    _, adata = trained
    ax = dv.pl.cluster_composition(adata, "cluster", labels_key="condition", show=False)
    table = np.asarray(ax.images[0].get_array())
    assert ax.get_xlabel() == "condition" and table.shape == (3, 2)
    with pytest.warns(FutureWarning, match=r"label_key is now named labels_key.*labels_key='co"):
        old = dv.pl.cluster_composition(adata, "cluster", label_key="condition", show=False)
    np.testing.assert_array_equal(np.asarray(old.images[0].get_array()), table)
    with pytest.raises(TypeError, match="label_key= and labels_key=: label_key is the former"):
        dv.pl.cluster_composition(adata, "cluster", "condition", label_key="x", show=False)
    with pytest.raises(KeyError, match="labels_key='cell_type'"):
        dv.pl.cluster_composition(adata, "cluster", labels_key="cell_type", show=False)


def test_cluster_composition_saves_and_checks_input(trained, tmp_path):
    _, adata = trained
    out = tmp_path / "composition.png"
    ax = dv.pl.cluster_composition(adata, "cluster", "condition", annotate=False, save=out)
    assert len(ax.texts) == 0
    _assert_png(out)
    with pytest.raises(KeyError, match="cell_type"):
        dv.pl.cluster_composition(adata, "cluster", "cell_type", show=False)
    with pytest.raises(ValueError, match="normalize"):
        dv.pl.cluster_composition(adata, "cluster", "condition", normalize="rows", show=False)


@pytest.fixture
def scanpy_settings():
    """scanpy's settings, restored afterwards (its class properties defeat monkeypatch)."""
    import scanpy as sc

    names = ("figdir", "file_format_figs", "plot_suffix", "autosave")
    saved = {name: getattr(sc.settings, name) for name in names}
    yield sc.settings
    for name, value in saved.items():
        setattr(sc.settings, name, value)


def test_save_follows_scanpy(trained, tmp_path, scanpy_settings):
    """save=True / a string go to scanpy's figdir under the plot's name; a Path is the file."""
    _, adata = trained
    settings = scanpy_settings
    settings.figdir = tmp_path / "figures"
    settings.file_format_figs = "png"
    settings.plot_suffix = ""
    settings.autosave = False
    args = (adata, "cluster", "condition")
    assert isinstance(dv.pl.cluster_composition(*args, save=True), Axes)
    _assert_png(tmp_path / "figures" / "cluster_composition.png")
    dv.pl.cluster_composition(*args, save="_by_condition.svg")
    assert (tmp_path / "figures" / "cluster_composition_by_condition.svg").is_file()
    dv.pl.embedding(adata, color="cluster", save="_clusters.png")
    _assert_png(tmp_path / "figures" / "umap_clusters.png")
    # save=None follows scanpy's autosave; False never saves.
    settings.autosave = True
    settings.plot_suffix = "_auto"
    dv.pl.cluster_composition(*args)
    _assert_png(tmp_path / "figures" / "cluster_composition_auto.png")
    dv.pl.cluster_composition(*args, save=False, show=False)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "cluster_composition.png",
        "cluster_composition_auto.png",
        "cluster_composition_by_condition.svg",
        "umap_clusters.png",
    ]
    # An absolute path as a string is the file, as a Path is (scanpy would nest it in figdir).
    target = tmp_path / "elsewhere" / "composition.pdf"
    target.parent.mkdir()
    dv.pl.cluster_composition(*args, save=str(target))
    assert target.is_file() and target.read_bytes().startswith(b"%PDF")
    assert len(list((tmp_path / "figures").rglob("*"))) == 4
    # A path in a folder not made yet: made, as scanpy makes its figdir (matplotlib's
    # FileNotFoundError came after drawing, the figure left open).
    nested = tmp_path / "results" / "figures" / "composition.png"
    dv.pl.cluster_composition(*args, save=nested)
    _assert_png(nested)


def test_saving_closes_only_the_figures_a_plot_made(trained, tmp_path):
    """A plot saved into a figure of its own closes it; one drawn on the user's ``ax`` leaves
    the user's figure open for its other panels (and the other panels untouched)."""
    model, adata = trained
    made = dv.pl.cluster_composition(adata, "cluster", "condition", save=tmp_path / "a.png")
    assert not plt.fignum_exists(made.figure.number)
    fig, (left, right) = plt.subplots(1, 2)
    dv.pl.history(model, ax=left, save=tmp_path / "b.png")
    dv.pl.embedding(adata, color="cluster", ax=right, save=tmp_path / "c.png")
    assert plt.fignum_exists(fig.number)
    right.set_title("still drawable")
    fig.savefig(tmp_path / "both.png")
    _assert_png(tmp_path / "both.png")
    own = dv.pl.embedding(adata, color="cluster", save=tmp_path / "d.png")
    assert not plt.fignum_exists(own.figure.number)


def test_a_figure_shown_and_saved_is_closed_as_scanpy_closes_it(trained, tmp_path):
    """show=True with save left each figure open under a non-interactive backend: a loop
    over plots met matplotlib's 'More than 20 figures' warning (scanpy closes them)."""
    _, adata = trained
    for name in ("a.png", "b.png"):
        out = dv.pl.cluster_composition(
            adata, "cluster", "condition", show=True, save=tmp_path / name
        )
        assert out is None
    assert plt.get_fignums() == []


def test_history_of_an_anndata_says_it_takes_the_model(trained):
    """history(adata) said "The model has no training history; train it first"."""
    _, adata = trained
    with pytest.raises(TypeError, match="takes the trained model"):
        dv.pl.history(adata, show=False)


def test_embedding_misspelled_colour_names_close_matches_and_leaves_no_figure(trained):
    """scanpy's KeyError named no alternative and left its empty figure open (a blank panel
    in a notebook)."""
    _, adata = trained
    with pytest.raises(KeyError, match=r"'clustr': did you mean 'cluster'\?"):
        dv.pl.embedding(adata, color=["condition", "clustr"], show=False)
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="palette"):  # any of scanpy's errors
        dv.pl.embedding(adata, color="cluster", palette="not_a_palette", show=False)
    assert plt.get_fignums() == []


def test_embedding_of_no_cells_says_so(trained):
    """A selection of no cells (a misspelled category) met scanpy's ZeroDivisionError."""
    _, adata = trained
    with pytest.raises(ValueError, match="no cells"):
        dv.pl.embedding(adata[adata.obs["cluster"] == "no such"], color="cluster", show=False)
    assert plt.get_fignums() == []


def test_a_plot_on_an_axes_of_a_subfigure_saves_the_whole_figure(trained, tmp_path):
    """save= with an ax of fig.subfigures() failed after drawing: 'SubFigure' object has no
    attribute 'savefig'."""
    _, adata = trained
    fig = plt.figure(layout="constrained")
    left, right = fig.subfigures(1, 2)
    dv.pl.cluster_composition(
        adata, "cluster", "condition", ax=left.subplots(), show=False, save=tmp_path / "l.png"
    )
    dv.pl.embedding(
        adata, color="cluster", ax=right.subplots(), show=False, save=tmp_path / "r.png"
    )
    _assert_png(tmp_path / "l.png")
    _assert_png(tmp_path / "r.png")
    assert plt.fignum_exists(fig.number)  # the user's figure stays open


def test_a_figure_that_cannot_be_saved_is_not_left_open(trained, tmp_path):
    _, adata = trained
    with pytest.raises(ValueError, match="not supported"):
        dv.pl.cluster_composition(adata, "cluster", "condition", save=tmp_path / "t.nofmt")
    assert plt.get_fignums() == []
