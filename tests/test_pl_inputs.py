"""deltavae.pl called the way a scanpy user calls plots: one name where a list is taken,
arrays, DataFrames, empty selections, numeric columns, and figures saved with plt.savefig
after show=False."""

import matplotlib

matplotlib.use("Agg")

import warnings  # noqa: E402

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import deltavae as dv  # noqa: E402


def _cells(n=120, k=12):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    probs = rng.dirichlet(np.ones(k), n)
    adata.obsm["cgmdvae_cluster_probs"] = probs
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    adata.obsm["proportions"] = pd.DataFrame(
        rng.dirichlet([1, 1, 1], n), index=adata.obs_names, columns=["Astro", "Neuron", "Oligo"]
    )
    adata.obs["cluster"] = pd.Categorical(rng.integers(0, 4, n).astype(str))
    adata.obs["cell_type"] = pd.Categorical(rng.choice(["B", "T", "NK"], n))
    adata.obs["n_counts"] = rng.integers(500, 5000, n)
    return adata


def _history():
    epochs = np.arange(30)
    elbo = 2000 + 500 * np.exp(-epochs / 5)
    return {
        "elbo_train": pd.DataFrame({"elbo_train": elbo}, index=epochs),
        "kl_weight": pd.DataFrame({"kl_weight": np.minimum(1, epochs / 10)}, index=epochs),
    }


def _gene_means():
    rng = np.random.default_rng(1)
    genes = ["ISG15", "IFI6", "CD3E", *(f"g{i}" for i in range(30))]
    observed = pd.DataFrame(rng.gamma(2.0, 1.0, (50, len(genes))), columns=genes)
    return observed * 1.1, observed


def test_one_name_where_a_list_is_taken_is_that_name():
    """A string was read a letter at a time: clusters="12" drew clusters 1 and 2."""
    adata = _cells()
    axes = dv.pl.cluster_probabilities(adata, clusters="11", show=False)
    assert [ax.get_title() for ax in axes] == ["Cluster entropy", "P(cluster 11)"]
    axes = dv.pl.cluster_probabilities(adata, clusters=np.array([0, 1]), show=False)
    assert [ax.get_title() for ax in axes][1:] == ["P(cluster 0)", "P(cluster 1)"]
    ax = dv.pl.history(_history(), keys="elbo_train", show=False)
    assert [line.get_label() for line in ax.get_lines()] == ["training"]
    (ax,) = dv.pl.spatial_proportions(adata, columns="Neuron", show=False)
    assert ax.get_title() == "Neuron"
    predicted, observed = _gene_means()
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight="ISG15", show=False)
    assert ax.collections[1].get_offsets().shape == (1, 2)


def test_a_gene_in_other_case_is_named():
    """highlight=['isg15'] (a mouse-style name for a human gene) was refused with no hint:
    difflib's ratio is case-sensitive, so did_you_mean found nothing close."""
    predicted, observed = _gene_means()
    with pytest.raises(KeyError, match="'isg15': did you mean 'ISG15'\\?"):
        dv.pl.perturbation_scatter(predicted, observed, highlight=["isg15"], show=False)
    adata = _cells()
    with pytest.raises(KeyError, match="did you mean 'cell_type'\\?"):
        dv.pl.cluster_composition(adata, "cluster", "CELL_TYPE", show=False)


def test_gene_means_from_dataframes_keep_their_gene_names():
    """get_normalized_expression returns cells x genes DataFrames; highlight needs names."""
    predicted, observed = _gene_means()
    ax = dv.pl.perturbation_scatter(predicted, observed, highlight=["ISG15", "IFI6"], show=False)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "other genes" and labels[1].startswith("highlighted (2)")
    assert ax.get_legend()._loc == 0  # "best": the legend moves off the points


def test_empty_selections_are_refused_not_drawn_blank():
    adata = _cells()
    with pytest.raises(ValueError, match="no cells"):
        dv.pl.cluster_probabilities(adata[:0], show=False)
    with pytest.raises(ValueError, match="no spots"):
        dv.pl.spatial_proportions(adata[:0], show=False)
    with pytest.raises(ValueError, match="columns is empty"):
        dv.pl.spatial_proportions(adata, columns=[], show=False)
    adata.obs["unlabelled"] = pd.Categorical([np.nan] * adata.n_obs, categories=["x"])
    with pytest.raises(ValueError, match="No cell has both a 'cluster' and a 'unlabelled'"):
        dv.pl.cluster_composition(adata, "cluster", "unlabelled", show=False)


def test_a_numeric_column_is_no_grouping():
    """n_counts as labels made a 5 x 1736 table in a 1044-inch figure."""
    adata = _cells()
    with pytest.raises(ValueError, match=r"'n_counts' is a numeric column with \d+ distinct"):
        dv.pl.cluster_composition(adata, "cluster", "n_counts", show=False)
    adata.obs["leiden_codes"] = adata.obs["cluster"].astype(int)  # few values: groups
    ax = dv.pl.cluster_composition(adata, "leiden_codes", "cell_type", show=False)
    assert np.asarray(ax.images[0].get_array()).shape == (4, 3)


def test_a_misspelled_history_key_warns():
    with pytest.warns(UserWarning, match="no \\['elbo_vaildation'\\]"):
        dv.pl.history(_history(), keys=["elbo_train", "elbo_vaildation"], show=False)
    ax = dv.pl.history(_history(), keys=["kl_weight"], show=False)
    assert ax.get_ylabel() == "KL weight"  # not "per cell (nats)"


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    whole = fig.bbox
    return box.x0 >= whole.x0 - 1 and box.y0 >= whole.y0 - 1 and box.x1 <= whole.x1 + 1


@pytest.mark.parametrize("plot", ["history", "cluster_composition", "perturbation_scatter"])
def test_plt_savefig_after_show_false_keeps_the_labels(plot):
    """scanpy's usual workflow; the figure was cut below the x label (tick labels lost)."""
    adata = _cells()
    if plot == "history":
        ax = dv.pl.history(_history(), log=True, show=False)
    elif plot == "cluster_composition":
        ax = dv.pl.cluster_composition(adata, "cluster", "cell_type", show=False)
    else:
        ax = dv.pl.perturbation_scatter(*_gene_means(), show=False)
    fig = ax.figure
    fig.canvas.draw()
    assert _inside(fig, ax.xaxis.label) and _inside(fig, ax.yaxis.label)
    low, high = sorted(ax.get_xlim())
    ticks = zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
    assert all(_inside(fig, label) for x, label in ticks if low <= x <= high and label.get_text())


def test_spatial_panels_label_their_bars_and_only_tissue_is_flipped():
    adata = _cells()
    (ax,) = dv.pl.spatial_proportions(adata, columns="Astro", show=False)
    assert ax.yaxis_inverted() and ax.figure.axes[-1].get_ylabel() == "proportion"
    (ax,) = dv.pl.spatial_proportions(adata, columns="Astro", basis="X_umap", show=False)
    assert not ax.yaxis_inverted()  # a UMAP upside down is another picture


def test_gene_means_compare_genes_by_name_and_say_how_to_reorder():
    predicted, observed = _gene_means()
    shuffled = observed[observed.columns[::-1]]
    with pytest.raises(ValueError, match=r"same genes in another order.*observed\[predicted"):
        dv.metrics.mean_expression_r2(predicted, shuffled)
    with pytest.raises(ValueError, match="same genes in another order"):
        dv.pl.perturbation_scatter(predicted, shuffled, show=False)
    renamed = observed.rename(columns={"CD3E": "CD3D"})
    with pytest.raises(ValueError, match=r"2 in one only, e.g. \['CD3D', 'CD3E'\]"):
        dv.metrics.mean_expression_r2(predicted, renamed)
    top = dv.metrics.mean_expression_r2(predicted, observed, genes=["ISG15", "IFI6", "CD3E"])
    assert top == pytest.approx(1.0)


def test_an_incomplete_elbow_curve_says_what_it_lacks():
    adata = _cells()
    adata.uns["archetypes"] = {"elbow": {"n_archetypes": np.arange(2, 6), "chosen": 3}}
    with pytest.raises(ValueError, match=r"lacks \['explained_variance'\]; write it again"):
        dv.pl.archetype_elbow(adata, show=False)


def test_an_elbow_written_under_a_prefix_is_found_by_its_key():
    """write_to_adata(key_added="run1") stores uns["run1_archetypes"]; the plot read
    uns["archetypes"] only and asked for what the user had done."""
    adata = _cells()
    curve = {"n_archetypes": np.arange(2, 6), "explained_variance": [0.5, 0.7, 0.8, 0.85]}
    adata.uns["run1_archetypes"] = {"elbow": {**curve, "chosen": 3}}
    with pytest.raises(ValueError, match=r"under \['run1_archetypes'\]: pass key='run1_"):
        dv.pl.archetype_elbow(adata, show=False)
    ax = dv.pl.archetype_elbow(adata, key="run1_archetypes", show=False)
    assert ax.get_xlabel() == "number of archetypes"
    ticks = ax.get_xticks()  # whole numbers of archetypes only (2.5 was a tick)
    np.testing.assert_array_equal(ticks, np.round(ticks))


def test_an_elbow_asked_for_by_its_key_added_is_pointed_to_its_own_entry():
    """key="k4" (write_to_adata's key_added) was told to pass key='archetypes', another
    fit's curve, because that entry came first in uns."""
    adata = _cells()
    curve = {"n_archetypes": np.arange(2, 6), "explained_variance": [0.5, 0.7, 0.8, 0.85]}
    for entry in ("archetypes", "k4_archetypes", "k5_archetypes"):
        adata.uns[entry] = {"elbow": {**curve, "chosen": 3}}
    with pytest.raises(ValueError, match=r"pass key='k4_archetypes'"):
        dv.pl.archetype_elbow(adata, key="k4", show=False)


def test_an_elbow_of_a_model_with_a_given_number_says_so():
    """A model given n_archetypes=2 was told to call write_to_adata "(or pass the model)"."""
    mix = dv.datasets.convex_mixtures(n_spots=30, n_genes=30, n_archetypes=2, n_markers=5)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=2, n_hidden=8)
    with pytest.raises(ValueError, match="This Archetypes has no .*only n_archetypes='auto'"):
        dv.pl.archetype_elbow(model, show=False)


def test_long_labels_leave_the_table_room():
    """Tutorial 03 (olfactory bulb layers, 3 archetypes): "constrained_layout not applied
    because axes sizes collapsed to zero"."""
    adata = _cells()
    layers = ["1: Granular Cell Layer", "2: Mitral Cell Layer", "3: Outer Plexiform Layer"]
    adata.obs["layer"] = pd.Categorical(np.resize(layers, adata.n_obs))
    adata.obs["three"] = pd.Categorical(np.resize(["A0", "A1", "A2"], adata.n_obs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = dv.pl.cluster_composition(adata, "three", "layer", show=False)
        ax.figure.canvas.draw()
    assert ax.get_position().height > 0.2


def test_cluster_names_as_strings_are_in_scanpys_order():
    """A column of strings "0" ... "11" listed cluster 10 and 11 between 1 and 2; anndata (so
    scanpy's legend of the same column) orders them 0, 1, 2, ..., 11."""
    adata = _cells()
    adata.obs["kmeans"] = (np.arange(adata.n_obs) % 12).astype(str)
    ax = dv.pl.cluster_composition(adata, "kmeans", "cell_type", show=False, show_sizes=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(12)]
    adata.strings_to_categoricals()  # what scanpy's plots do to the column
    assert list(adata.obs["kmeans"].cat.categories) == [str(k) for k in range(12)]


def test_a_history_of_one_epoch_is_drawn():
    """After one epoch each curve is one point: a line through it drew an empty panel, with
    epoch ticks at -0.045 ... 0.045."""
    frames = {
        key: pd.DataFrame({key: [value]}, index=[0])
        for key, value in (("elbo_train", 300.0), ("elbo_validation", 310.0))
    }
    ax = dv.pl.history(frames, show=False)
    assert [line.get_marker() for line in ax.get_lines()] == ["o", "o"]
    ax.figure.canvas.draw()
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0"]


def test_a_model_given_for_an_anndata_is_told_to_write_its_results_first():
    """dv.pl.history takes the model; passed to the plots of its results it raised
    "AttributeError: 'CGMDVAE' object has no attribute 'n_obs'"."""

    class Model:  # any object that is not an AnnData, a trained model above all
        obs = None

    for plot, call in {
        "cluster_probabilities": lambda m: dv.pl.cluster_probabilities(m, show=False),
        "embedding": lambda m: dv.pl.embedding(m, color="cluster", show=False),
        "cluster_composition": lambda m: dv.pl.cluster_composition(m, "a", "b", show=False),
        "spatial_proportions": lambda m: dv.pl.spatial_proportions(m, show=False),
    }.items():
        with pytest.raises(TypeError, match=rf"dv.pl.{plot} takes an AnnData, not Model.*write_to"):
            call(Model())


@pytest.mark.parametrize(
    ("plot", "kwargs", "name"),
    [
        ("cluster_composition", {"annotate": "no"}, "annotate"),
        ("cluster_composition", {"show_sizes": "False"}, "show_sizes"),
        ("history", {"log": "no"}, "log"),
        ("history", {"shade_warmup": 0}, "shade_warmup"),
        ("spatial_proportions", {"bw": "no"}, "bw"),
        ("cluster_probabilities", {"normalize": "no"}, "normalize"),
        ("cluster_probabilities", {"return_fig": "no"}, "return_fig"),
        ("perturbation_scatter", {"return_fig": [1]}, "return_fig"),
    ],
)
def test_flags_that_are_no_bool_are_refused_by_name(plot, kwargs, name):
    """A string was read as a truth value: annotate="no" wrote the numbers, log="no" drew a
    logarithmic axis."""
    args = {
        "cluster_composition": (_cells(), "cluster", "cell_type"),
        "history": (_history(),),
        "spatial_proportions": (_cells(),),
        "cluster_probabilities": (_cells(),),
        "perturbation_scatter": _gene_means(),
    }[plot]
    with pytest.raises(ValueError, match=rf"^{name} must be True or False, got "):
        getattr(dv.pl, plot)(*args, show=False, **kwargs)
    with pytest.raises(ValueError, match=r"^show must be True, False or None, got 'no'"):
        dv.pl.history(_history(), show="no")
    assert not plt.get_fignums()  # refused before a figure was made


@pytest.mark.parametrize("ncols", [0, -2, 2.5, "2", True])
def test_ncols_not_a_whole_number_of_at_least_one_is_refused(ncols):
    """ncols=0 or -2 was read as 1 without a word; 2.5 failed inside matplotlib."""
    adata = _cells()
    for plot in (dv.pl.spatial_proportions, dv.pl.cluster_probabilities):
        with pytest.raises(ValueError, match=r"^ncols must be a whole number of at least 1"):
            plot(adata, ncols=ncols, show=False)
    assert len(dv.pl.spatial_proportions(adata, ncols=np.int64(2), show=False)) == 3


def test_cluster_probabilities_takes_vmin_and_vmax_as_the_other_colour_plots():
    """vmin/vmax were refused as unknown keywords: every panel's scale was fixed."""
    adata = _cells()
    entropy = dv.pl.cluster_entropy(adata)
    axes = dv.pl.cluster_probabilities(
        adata, clusters=["0", "1"], vmin=0.05, vmax=[None, "p50", 0.2], show=False
    )
    probs = adata.obsm["cgmdvae_cluster_probs"]
    scales = [ax.collections[-1].get_clim() for ax in axes]
    assert scales[0] == (0.05, 1.0) and scales[2] == (0.05, 0.2)
    assert scales[1] == pytest.approx((0.05, np.percentile(probs[:, 0], 50)))
    ends = [ax.collections[-1].colorbar.extend for ax in axes]
    assert ends[0] == ("min" if entropy.min() < 0.05 else "neither") and ends[2] == "both"
    ax = dv.pl.cluster_probabilities(adata, show=False)  # the default: 0 to 1, no arrows
    assert ax.collections[-1].get_clim() == (0.0, 1.0)
    assert ax.collections[-1].colorbar.extend == "neither"
    with pytest.raises(ValueError, match="vmax holds 2 values, and the plot has 1 panels"):
        dv.pl.cluster_probabilities(adata, vmax=[1, 2], show=False)


def test_a_gene_named_with_an_identifier_appended_is_named_so():
    """Kang's CD79A is CD79A_ENSG00000105369 in var_names: highlight=['CD79A'] was told 'did
    you mean CD9 or CD7', and mean_expression_r2's genes= and gene_list= named no gene."""
    genes = ["CD9", "CD7", "CD79A_ENSG00000105369", "ISG15", "IFI6", "MX1"]
    rng = np.random.default_rng(0)
    pred, obs = (pd.DataFrame(rng.random((5, 6)), columns=genes) for _ in range(2))
    named = r"'CD79A' is 'CD79A_ENSG00000105369' here"
    with pytest.raises(KeyError, match=named) as err:
        dv.pl.perturbation_scatter(pred, obs, highlight=["CD79A", "ISG15", "IFI6"], show=False)
    assert "CD9" not in str(err.value)
    with pytest.raises(KeyError, match=named + ": pass those names"):
        dv.metrics.mean_expression_r2(pred, obs, genes=["CD79A", "ISG15", "IFI6"])
    plt.close("all")
