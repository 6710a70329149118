"""deltavae.pl as a scanpy user calls it from a notebook: the warm-up of a weighted ELBO, no
empty figure left behind by a plot that failed, and missing keys named with those there are."""

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import deltavae as dv  # noqa: E402


def _frames(kl):
    epochs = np.arange(len(kl))
    elbo = 300.0 - 10 * epochs
    return {
        "elbo_train": pd.DataFrame({"elbo_train": elbo}, index=epochs),
        "kl_weight": pd.DataFrame({"kl_weight": kl}, index=epochs),
    }


def _warmup(ax):
    (span,) = [p for p in ax.patches if p.get_label() == "KL warm-up"]
    return span.get_x(), span.get_x() + span.get_width()


def test_a_weighted_elbo_shades_only_its_warm_up():
    """plan_kwargs={"max_kl_weight": 0.5}: the weight never reached 1, and the whole run (and
    an epoch past it) was shaded as the KL warm-up."""
    frames = _frames([1e-6, 0.5, 0.5, 0.5])

    class Model:  # a trained model: its history and the arguments it trained with
        history = frames
        train_args_ = {"max_epochs": 4, "plan_kwargs": {"max_kl_weight": 0.5}}

    for model in (Model(), frames):  # the model, or its history alone
        assert _warmup(dv.pl.history(model, show=False)) == (0.0, 1.0)
    # A run that ended inside its warm-up: shaded to its last epoch, not one past it.
    ax = dv.pl.history(_frames([1e-6, 0.25, 0.5]), show=False)
    assert _warmup(ax) == (0.0, 2.0)
    assert ax.get_xlim()[1] < 2.5
    # Trained twice, to max_kl_weight 0.5 then 1 (the model's record is the last call's):
    # each run's own warm-up is shaded, not the first's epochs at its full weight of 0.5.
    twice = _frames([1e-6, 0.5, 0.5, 0.5, 1e-6, 0.5, 1.0, 1.0])

    class Again:
        history = twice
        train_args_ = {"max_epochs": 4}

    ax = dv.pl.history(Again(), show=False)
    spans = [p for p in ax.patches if p.get_label().lstrip("_") == "KL warm-up"]
    assert sorted((p.get_x(), p.get_x() + p.get_width()) for p in spans) == [(0, 1), (4, 6)]
    # Without a warm-up (constant weight 1) nothing is shaded.
    assert not dv.pl.history(_frames([1.0, 1.0, 1.0]), show=False).patches


def _cells(n=60):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.gamma(2.0, 1.0, (n, 3)).astype(np.float32))
    adata.var_names = ["g0", "g1", "g2"]
    adata.obsm["cgmdvae_cluster_probs"] = rng.dirichlet(np.ones(3), n)
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    adata.obsm["proportions"] = pd.DataFrame(
        rng.dirichlet([1, 1], n), index=adata.obs_names, columns=["Astro", "Neuron"]
    )
    adata.obs["cluster"] = pd.Categorical(rng.integers(0, 3, n).astype(str))
    adata.obs["cell_type"] = pd.Categorical(rng.choice(["B", "T"], n))
    return adata


@pytest.mark.parametrize(
    "plot",
    [
        lambda a, **kw: dv.pl.cluster_composition(a, "cluster", "cell_type", cmap="nope", **kw),
        lambda a, **kw: dv.pl.cluster_probabilities(a, cmap="nope", **kw),
        lambda a, **kw: dv.pl.spatial_proportions(a, size="big", **kw),
        lambda a, **kw: dv.pl.perturbation_scatter(a, a, highlight="g0", n_labels="3", **kw),
    ],
    ids=["composition", "probabilities", "spatial", "perturbation"],
)
def test_a_plot_that_fails_leaves_no_figure_open(plot):
    """An unknown cmap failed after the figure was made: an empty figure stayed open, and a
    notebook showed it under the traceback. The figure of an ax passed in stays open."""
    adata = _cells()
    with pytest.raises((ValueError, TypeError)):
        plot(adata, show=False)
    assert plt.get_fignums() == []
    fig, ax = plt.subplots()
    with pytest.raises((ValueError, TypeError)):
        plot(adata, ax=ax, show=False)
    assert plt.get_fignums() == [fig.number]


def test_embedding_names_what_it_cannot_draw_and_what_there_is():
    """scanpy's words: KeyError: 'cnts' for a misspelled layer, IndexError for a basis of one
    column, only the first of two missing colours, and a gene drawn from raw hinted at."""
    adata = _cells()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(KeyError, match=r"layer='cnts' is not in adata.layers; .*\['counts'\]"):
        dv.pl.embedding(adata, color="g0", layer="cnts", show=False)
    adata.obsm["X_one"] = adata.obsm["X_umap"][:, :1]
    with pytest.raises(ValueError, match=r"obsm\['X_one'\] has shape \(60, 1\); .*2 columns"):
        dv.pl.embedding(adata, basis="X_one", color="cluster", show=False)
    with pytest.raises(KeyError, match=r"color \['nope', 'g9'\] not found in adata.obs columns"):
        dv.pl.embedding(adata, color=["cluster", "nope", "g9"], show=False)
    adata.raw = adata.copy()
    subset = adata[:, ["g0", "g1"]].copy()  # g2 is drawn from raw (use_raw by default)
    with pytest.raises(KeyError, match=r"color \['nope'\] not found .* adata.raw.var_names\.\W*$"):
        dv.pl.embedding(subset, color=["g2", "nope"], show=False)
    with pytest.raises(KeyError, match=r"\['g2'\] are in adata.raw: pass use_raw=True"):
        dv.pl.embedding(subset, color="g2", use_raw=False, show=False)
    assert plt.get_fignums() == []
    axes = dv.pl.embedding(subset, color=["g2", "cluster"], show=False)
    assert [ax.get_title() for ax in axes] == ["g2", "cluster"]


def test_embedding_return_fig_returns_the_figure_as_scanpy(tmp_path):
    """return_fig=True went to scanpy, but the figure was then shown and None returned."""
    adata = _cells()
    fig = dv.pl.embedding(adata, color=["cluster", "g0"], return_fig=True)
    assert isinstance(fig, plt.Figure)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["cluster", "g0"]
    fig = dv.pl.embedding(adata, color="cluster", return_fig=True, save=tmp_path / "u.png")
    assert isinstance(fig, plt.Figure) and (tmp_path / "u.png").stat().st_size > 1000


def test_the_elbow_says_how_many_archetypes_merging_kept():
    """The elbow chose 4, similar archetypes merged into 3 (the spatial plot's 3 panels), and
    the legend said only "chosen: 4"."""
    adata = _cells()
    curve = {"n_archetypes": np.arange(2, 7), "explained_variance": [0.4, 0.7, 0.9, 0.92, 0.93]}
    adata.uns["archetypes"] = {"elbow": {**curve, "chosen": 4}, "names": ["A0", "A1", "A2"]}
    ax = dv.pl.archetype_elbow(adata, show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chosen: 4, merged into 3"]
    assert ax.lines[-1].get_xdata()[0] == 4
    adata.uns["archetypes"]["names"] = ["A0", "A1", "A2", "A3"]  # none merged
    ax = dv.pl.archetype_elbow(adata, show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chosen: 4"]


def test_the_elbow_states_its_stopping_rule():
    """The legend said "chosen: 4" and not why: it now states the rule that chose it, or
    that the range ended first (a larger max_archetypes may choose more)."""
    adata = _cells()
    curve = {"n_archetypes": np.arange(2, 7), "explained_variance": [0.4, 0.7, 0.9, 0.92, 0.93]}
    adata.uns["archetypes"] = {"elbow": {**curve, "chosen": 4, "min_gain": 0.07, "stopped": True}}
    ax = dv.pl.archetype_elbow(adata, show=False)
    said = [t.get_text() for t in ax.get_legend().get_texts()]
    assert said == ["chosen: 4\n(the next explains < 7% of what 2 leave)"]
    adata.uns["archetypes"]["elbow"] |= {"chosen": 6, "stopped": False}
    ax = dv.pl.archetype_elbow(adata, show=False)
    said = [t.get_text() for t in ax.get_legend().get_texts()]
    assert said == ["chosen: 6\n(end of range: a larger max_archetypes may add more)"]


def test_a_model_trained_twice_shades_each_warm_up():
    """A second train() warms up again: the band ran from the first warm-up to the end of
    the second, over the full-weight epochs between them."""
    ax = dv.pl.history(_frames([1e-6, 1.0, 1.0, 1e-6, 1.0, 1.0]), show=False)
    spans = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
    assert spans == [(0.0, 1.0), (3.0, 4.0)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training", "KL warm-up"]


def test_embedding_draws_tissue_as_the_spatial_plots_do():
    """basis="spatial" was drawn upside down (y up) and stretched, unlike the same spots in
    dv.pl.spatial_proportions and sc.pl.spatial; colour bars are left as they are."""
    adata = _cells()
    (prop,) = dv.pl.spatial_proportions(adata, columns="Astro", show=False)
    axes = dv.pl.embedding(adata, basis="spatial", color=["cluster", "g0"], show=False)
    for ax in [prop, *axes]:
        assert ax.yaxis_inverted() and ax.get_aspect() == 1.0
    fig = dv.pl.embedding(adata, basis="spatial", color="g0", return_fig=True)
    bar = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert bar and not bar[0].yaxis_inverted()
    assert not dv.pl.embedding(adata, basis="umap", color="g0", show=False).yaxis_inverted()


def test_log_history_ticks_of_one_axis_have_the_same_decimals():
    """A short run on a log axis labelled its ticks "202.5", "202", "201.5"."""
    epochs = np.arange(4)
    values = [202.9, 202.3, 201.8, 201.25]
    frames = {"elbo_train": pd.DataFrame({"e": values}, index=epochs)}
    ax = dv.pl.history(frames, log=True, show=False)
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    texts = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert texts == ["201.5", "202.0", "202.5"]
    # Ticks a quarter apart are written to the quarter (201.25 was written "201.2").
    frames = {"elbo_train": pd.DataFrame({"e": np.linspace(101.0, 100.05, 4)}, index=epochs)}
    ax = dv.pl.history(frames, log=True, show=False)
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert [t.get_text() for t in ticks][:3] == ["100.25", "100.50", "100.75"]


def test_embedding_components_beyond_the_basis_are_named():
    """components="2,3" of a 2-column UMAP raised "IndexError: index 2 is out of bounds"."""
    adata = _cells()
    with pytest.raises(ValueError, match=r"components='2,3' asks for column 3 .* has 2\."):
        dv.pl.embedding(adata, color="cluster", components="2,3", show=False)
    assert plt.get_fignums() == []
    ax = dv.pl.embedding(adata, color="cluster", components="2,1", show=False)
    assert ax.get_xlabel() == "UMAP2"
