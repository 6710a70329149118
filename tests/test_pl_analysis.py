"""deltavae.pl cluster_probabilities and perturbation_scatter: values drawn, axes, PNGs, errors."""

import matplotlib

matplotlib.use("Agg")

import warnings  # noqa: E402

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import deltavae as dv  # noqa: E402
from deltavae.pl._utils import label_points  # noqa: E402


@pytest.fixture
def clustered():
    """200 cells, 4 clusters: the first half certain, the second half uniform."""
    rng = np.random.default_rng(0)
    n, k = 200, 4
    probs = np.zeros((n, k), dtype=np.float32)
    probs[np.arange(100), rng.integers(0, k, 100)] = 1.0
    probs[100:] = 1.0 / k
    adata = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    adata.obsm["cgmdvae_cluster_probs"] = probs
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.uns["cgmdvae"] = {"cluster_names": np.array(["B", "T", "NK", "novel_0"], dtype=object)}
    return adata


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_entropy_values():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(dv.pl.cluster_entropy(probs), [0.0, 1.0, np.log(2) / np.log(3)])
    np.testing.assert_allclose(dv.pl.cluster_entropy(probs, normalize=False)[1], np.log(3))
    with pytest.raises(ValueError, match="rows summing to 1"):
        dv.pl.cluster_entropy(np.array([[0.2, 0.2]]))
    with pytest.raises(ValueError, match="cells x clusters"):
        dv.pl.cluster_entropy(np.ones(3))


def test_cluster_entropy_reads_an_anndata_like_the_plots():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    adata = ad.AnnData(np.zeros((2, 1)), obsm={"cgmdvae_cluster_probs": probs, "p": probs[::-1]})
    np.testing.assert_allclose(dv.pl.cluster_entropy(adata), [0.0, 1.0])
    np.testing.assert_allclose(dv.pl.cluster_entropy(adata, probs_key="p"), [1.0, 0.0])
    with pytest.raises(KeyError, match="probs_key='q' is not in adata.obsm.*write_to_adata"):
        dv.pl.cluster_entropy(adata, probs_key="q")
    # cluster_probabilities takes probs_key second, cluster_entropy normalize: "p" there was
    # read as normalize=True, and the default key's entropies came back, [0, 1].
    with pytest.raises(ValueError, match=r"got 'p' \(the second argument\): pass probs_key='p'"):
        dv.pl.cluster_entropy(adata, "p")
    with pytest.raises(ValueError, match=r"^normalize must be True or False, got 'no'\.$"):
        dv.pl.cluster_entropy(probs, "no")
    np.testing.assert_allclose(dv.pl.cluster_entropy(probs, np.False_), [0.0, np.log(3)])
    # Written with key_added="run2": the default key is missing, the written one is named.
    adata.obsm["run2_cluster_probs"] = adata.obsm.pop("cgmdvae_cluster_probs")
    with pytest.raises(KeyError, match=r"wrote \['run2_cluster_probs'\].*: pass probs_key='run2_"):
        dv.pl.cluster_entropy(adata)


def test_cluster_probabilities_colours_cells_by_entropy(clustered, tmp_path):
    ax = dv.pl.cluster_probabilities(clustered, show=False)
    assert isinstance(ax, Axes)
    colours = np.asarray(ax.collections[0].get_array())
    # Certain cells have entropy 0, uniform ones 1; plotted in increasing order.
    assert colours.shape == (200,)
    np.testing.assert_allclose(np.sort(colours), [0.0] * 100 + [1.0] * 100, atol=1e-6)
    assert np.all(np.diff(colours) >= 0)
    assert ax.get_title() == "Cluster entropy" and ax.get_xlabel() == "UMAP1"
    out = tmp_path / "entropy.png"
    axes = dv.pl.cluster_probabilities(clustered, clusters=["NK", 0], save=out)
    assert isinstance(axes, list) and len(axes) == 3
    assert [a.get_title() for a in axes[1:]] == ["P(cluster NK)", "P(cluster B)"]
    nk = np.asarray(axes[1].collections[0].get_array())
    np.testing.assert_allclose(
        np.sort(nk), np.sort(clustered.obsm["cgmdvae_cluster_probs"][:, 2]), atol=1e-6
    )
    _assert_png(out)
    fig, own = plt.subplots()
    assert dv.pl.cluster_probabilities(clustered, ax=own, show=False) is own
    assert own.get_title() == "Cluster entropy"
    with pytest.raises(ValueError, match="ax draws one panel, and this plot has 2"):
        dv.pl.cluster_probabilities(clustered, clusters=["NK"], ax=own, show=False)
    plt.close(fig)


def test_cluster_probabilities_reads_cluster_names_of_a_table(clustered):
    """Probabilities stored as a DataFrame (obsm takes one) name their clusters by column."""
    adata = clustered.copy()
    probs = adata.obsm["cgmdvae_cluster_probs"]
    adata.obsm["mine"] = pd.DataFrame(probs, index=adata.obs_names, columns=["w", "x", "y", "z"])
    axes = dv.pl.cluster_probabilities(adata, probs_key="mine", clusters=["z"], show=False)
    assert axes[1].get_title() == "P(cluster z)"
    shown = np.asarray(axes[1].collections[0].get_array())
    np.testing.assert_allclose(np.sort(shown), np.sort(probs[:, 3]), atol=1e-6)


def test_cluster_probabilities_names_clusters_after_a_concat(clustered):
    """ad.concat leaves uns behind: the panels of a model with labels were titled by column
    numbers ("P(cluster 2)" for NK) and its names were refused; the cluster column written
    beside the probabilities still names them."""
    probs = clustered.obsm["cgmdvae_cluster_probs"]
    names = clustered.uns["cgmdvae"]["cluster_names"]
    clustered.obs["cgmdvae_cluster"] = pd.Categorical(names[probs.argmax(1)], categories=names)
    both = ad.concat([clustered[:150], clustered[150:]])
    assert "cgmdvae" not in both.uns
    axes = dv.pl.cluster_probabilities(both, clusters=["NK", 0], show=False)
    assert [a.get_title() for a in axes[1:]] == ["P(cluster NK)", "P(cluster B)"]
    shown = np.asarray(axes[1].collections[0].get_array())
    np.testing.assert_allclose(np.sort(shown), np.sort(probs[:, 2]), atol=1e-6)
    del both.obs["cgmdvae_cluster"]  # nothing names them: their numbers
    axes = dv.pl.cluster_probabilities(both, clusters=[2], show=False)
    assert axes[1].get_title() == "P(cluster 2)"


def test_cluster_probabilities_bad_keys(clustered):
    with pytest.raises(KeyError, match="probs_key='nope'"):
        dv.pl.cluster_probabilities(clustered, probs_key="nope", show=False)
    with pytest.raises(KeyError, match="basis='X_tsne'"):
        dv.pl.cluster_probabilities(clustered, basis="X_tsne", show=False)
    with pytest.raises(KeyError, match="'Mono'"):
        dv.pl.cluster_probabilities(clustered, clusters=["Mono"], show=False)


@pytest.fixture
def perturbation():
    rng = np.random.default_rng(1)
    genes = [f"g{i}" for i in range(50)]
    observed = ad.AnnData(rng.gamma(2.0, 1.0, size=(80, 50)).astype(np.float32))
    observed.var_names = genes
    predicted = ad.AnnData(
        (observed.X[:60] * 1.1 + rng.normal(0, 0.05, (60, 50))).astype(np.float32)
    )
    predicted.var_names = genes
    return predicted, observed


def test_perturbation_scatter_draws_gene_means_and_r2(perturbation, tmp_path):
    predicted, observed = perturbation
    ax = dv.pl.perturbation_scatter(predicted, observed, show=False)
    assert isinstance(ax, Axes)
    points = ax.collections[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], observed.X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(points[:, 1], predicted.X.mean(0), rtol=1e-5)
    r2 = dv.metrics.mean_expression_r2(predicted, observed)
    assert ax.get_title() == f"R² = {r2:.3f} (all genes)"
    assert ax.get_ylabel() == "predicted mean expression"

    out = tmp_path / "r2.png"
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight=["g1", "g2", "g3"], save=out)
    assert len(ax.collections) == 2
    assert len(ax.collections[1].get_offsets()) == 3
    assert len(ax.texts) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1].startswith("highlighted (3), R² = ")
    _assert_png(out)


def test_perturbation_scatter_labels_of_close_genes_do_not_overlap(perturbation):
    predicted, observed = perturbation
    predicted, observed = predicted.copy(), observed.copy()
    # three genes with almost the same means, labels at one offset from their points would
    # be drawn on top of each other; two more a little apart, whose labels fit side by side
    # at the figure's size but not once it has shrunk
    close = ["g1", "g2", "g3", "g4", "g5"]
    observed_means = [5.0, 5.001, 5.002, 4.0, 4.0]
    predicted_means = [5.0, 5.001, 5.002, 4.0, 4.15]
    for gene, x, y in zip(close, observed_means, predicted_means, strict=True):
        j = observed.var_names.get_loc(gene)
        observed.X[:, j] = x
        predicted.X[:, j] = y
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight=close, show=False)
    assert sorted(t.get_text() for t in ax.texts) == close
    # placed when drawn: also after the figure shrank (a layout change after plotting)
    for size in (None, (2.5, 2.5)):
        if size is not None:
            ax.figure.set_size_inches(*size)
        ax.figure.canvas.draw()
        renderer = ax.figure.canvas.get_renderer()
        # the words' boxes (an Annotation's own extent includes its leader line)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                names = (ax.texts[a].get_text(), ax.texts[b].get_text())
                assert not boxes[a].overlaps(boxes[b]), (size, names)
    # every label stays tied to its own gene's point
    for text in ax.texts:
        j = observed.var_names.get_loc(text.get_text())
        assert text.xy == pytest.approx((observed.X[:, j].mean(), predicted.X[:, j].mean()))
    plt.close(ax.figure)


def test_perturbation_scatter_labels_cover_no_labelled_point(perturbation):
    """A label took the first free spot up-right of its gene even where another labelled
    gene's point lay under it (tutorial 04: B2M's name over a response gene's point), so
    that which name belonged to which point could not be told."""
    predicted, observed = (a.copy() for a in perturbation)
    genes = ["g1", "g2", "g3"]
    for gene, x in zip(genes, [4.0, 4.12, 2.0], strict=True):  # g2 just up-right of g1
        j = observed.var_names.get_loc(gene)
        observed.X[:, j] = x
        predicted.X[:, j] = x
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight=genes, show=False)
    for size in (None, (3.0, 3.0)):
        if size is not None:
            ax.figure.set_size_inches(*size)
        ax.figure.canvas.draw()
        renderer = ax.figure.canvas.get_renderer()
        points = ax.transData.transform([t.xy for t in ax.texts])
        for text in ax.texts:
            box = Text.get_window_extent(text, renderer)
            assert box.count_contains(points) == 0, (size, text.get_text())
    plt.close(ax.figure)
    # nor a highlighted gene's point that has no label (n_labels): given as avoid=
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.set(xlim=(0, 10), ylim=(0, 10))
    (text,) = label_points(ax, [5.0], [5.0], ["GENE"], avoid=[(5.3, 5.3)])
    fig.canvas.draw()
    box = Text.get_window_extent(text, fig.canvas.get_renderer())
    assert box.count_contains(ax.transData.transform([(5.3, 5.3)])) == 0
    plt.close(fig)


def test_perturbation_scatter_errors(perturbation):
    predicted, observed = perturbation
    with pytest.raises(KeyError, match="not_a_gene"):
        dv.pl.perturbation_scatter(predicted, observed, highlight=["not_a_gene"], show=False)
    # Among thousands of genes, the close names are what helps (a case or a letter off).
    with pytest.raises(KeyError, match=r"'G12': did you mean 'g12'"):
        dv.pl.perturbation_scatter(predicted, observed, highlight=["g1", "G12"], show=False)
    with pytest.raises(ValueError, match="gene names"):
        dv.pl.perturbation_scatter(predicted.X, observed.X, highlight=["g1"], show=False)
    with pytest.raises(ValueError, match=r"predicted and observed have different genes \("):
        dv.pl.perturbation_scatter(predicted[:, :10], observed, show=False)


def test_perturbation_scatter_says_a_highlighted_gene_named_twice_counts_once(perturbation):
    """highlight=["g1", "g1", "g2"] drew "highlighted (2)" and no R² (3 names, 2 genes)
    without a word; a list without repeats is drawn without a warning."""
    predicted, observed = perturbation
    with pytest.warns(UserWarning, match=r"highlight names \['g1'\] more than once: .*\(2 genes\)"):
        ax = dv.pl.perturbation_scatter(
            predicted, observed, highlight=["g1", "g1", "g2"], show=False
        )
    assert [t.get_text() for t in ax.get_legend().get_texts()][1] == "highlighted (2)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.pl.perturbation_scatter(predicted, observed, highlight=["g1", "g2"], show=False)
    plt.close("all")


def test_gene_means_as_a_series_are_told_a_way_that_keeps_the_gene_names(perturbation):
    """``df.mean()`` gives the gene means as a Series: the error's advice, ``means[None]``,
    was a KeyError on a Series (and on an array dropped the names that ``highlight`` reads).
    The advice given works and keeps the names."""
    predicted, observed = (a.to_df().mean() for a in perturbation)
    with pytest.raises(ValueError, match=r"Series of \d+ values.*means\.to_frame\(\)\.T"):
        dv.pl.perturbation_scatter(predicted, observed, highlight=["g1"], show=False)
    ax = dv.pl.perturbation_scatter(
        predicted.to_frame().T, observed.to_frame().T, highlight=["g1", "g2", "g3"], show=False
    )
    assert len(ax.collections[1].get_offsets()) == 3
    plt.close("all")


def test_perturbation_scatter_highlighted_genes_of_equal_means_are_drawn(perturbation):
    # Genes switched on only under the perturbation are 0 in every control cell: the
    # highlighted genes' R² is undefined, the plot is not.
    predicted, observed = perturbation
    predicted = predicted.copy()
    off = ["g1", "g2", "g3", "g4"]
    predicted.X[:, [predicted.var_names.get_loc(g) for g in off]] = 0.0
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight=off, show=False)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1] == "highlighted (4), R² undefined (equal means)"
    assert len(ax.collections[1].get_offsets()) == 4


def test_cells_without_probabilities_are_drawn_grey_not_refused(clustered):
    """ad.concat(join="outer") fills the probabilities of another data set's cells with NaN:
    the plot refused them ("rows summing to 1"); scanpy draws such cells in light grey."""
    other = ad.AnnData(np.zeros((20, 3), dtype=np.float32))
    other.obsm["X_umap"] = np.full((20, 2), 5.0)
    both = ad.concat([clustered, other], join="outer", index_unique="-")
    assert np.isnan(both.obsm["cgmdvae_cluster_probs"][200:]).all()
    entropy = dv.pl.cluster_entropy(both)
    assert np.isnan(entropy[200:]).all() and np.isfinite(entropy[:200]).all()
    for ax in dv.pl.cluster_probabilities(both, clusters=["0"], show=False):
        grey, values = ax.collections
        assert grey.get_offsets().shape == (20, 2) and values.get_offsets().shape == (200, 2)
        np.testing.assert_allclose(grey.get_facecolor()[0][:3], 0.827, atol=0.01)
    with pytest.raises(ValueError, match="rows summing to 1"):
        dv.pl.cluster_entropy(np.array([[0.5, np.nan], [0.5, 0.5]]))


def test_cluster_entropy_of_a_model_says_what_to_pass():
    """A model (the plots' other argument) failed in float() conversion, naming nothing."""

    class Model:  # stands in for a CGMDVAE: what matters is its predict_clusters
        def predict_clusters(self, soft=False):
            return np.array([[1.0, 0.0]])

    with pytest.raises(TypeError, match=r"predict_clusters\(soft=True\)"):
        dv.pl.cluster_entropy(Model())


def test_cluster_probabilities_axes_are_named_as_scanpy_names_them(clustered):
    """X_pca was labelled PCA1 and X_tsne TSNE1 (scanpy: PC1, tSNE1)."""
    clustered.obsm["X_pca"] = clustered.obsm["X_tsne"] = clustered.obsm["X_umap"]
    for basis, label in [("X_pca", "PC1"), ("tsne", "tSNE1"), ("X_umap", "UMAP1")]:
        ax = dv.pl.cluster_probabilities(clustered, basis=basis, show=False)
        assert ax.get_xlabel() == label
        plt.close(ax.figure)
    # Spot coordinates are drawn as spatial_proportions draws them: to scale, rows down.
    clustered.obsm["spatial"] = clustered.obsm["X_umap"]
    ax = dv.pl.cluster_probabilities(clustered, basis="spatial", show=False)
    assert ax.yaxis_inverted() and ax.get_aspect() == 1.0
    plt.close(ax.figure)


def test_perturbation_scatter_of_every_gene_highlighted_lists_no_other_genes(perturbation):
    predicted, observed = perturbation
    ax = dv.pl.perturbation_scatter(
        predicted, observed, highlight=list(observed.var_names), show=False
    )
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 1 and texts[0].startswith("highlighted (50)")


def test_entropy_in_nats_is_drawn_on_its_whole_scale():
    """normalize=False scaled the colours to the largest entropy drawn: cells all 90% sure of
    their cluster (0.43 nats of log 4 = 1.39) took the top colour of the map, as the
    uniform cells of the normalised panel do. The scale is 0 to log K, as 0 to 1 normalised."""
    probs = np.full((50, 4), 0.1 / 3, dtype=np.float64)
    probs[:, 0] = 0.9
    cells = ad.AnnData(np.zeros((50, 1)), obsm={"cgmdvae_cluster_probs": probs})
    cells.obsm["X_umap"] = np.random.default_rng(0).normal(size=(50, 2))
    nats = dv.pl.cluster_probabilities(cells, normalize=False, show=False)
    assert nats.collections[-1].get_clim() == pytest.approx((0.0, np.log(4)))
    assert nats.collections[-1].colorbar.extend == "neither"
    assert nats.collections[-1].colorbar.ax.get_ylabel() == "entropy (nats)"
    share = dv.pl.cluster_probabilities(cells, show=False)
    assert share.collections[-1].get_clim() == (0.0, 1.0)
    # the same colour for the same certainty, in nats and normalised
    np.testing.assert_allclose(
        nats.collections[-1].norm(nats.collections[-1].get_array()),
        share.collections[-1].norm(share.collections[-1].get_array()),
    )
    plt.close("all")
