"""Spatial plots drawn the way users draw them (over an image, with empty or missing
columns, with unlabelled cells), and the convergence note of a fit without a KL warm-up."""

import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.train._convergence import NotConvergedWarning, still_improving


def _spots(n=40):
    rng = np.random.default_rng(0)
    spots = ad.AnnData(np.ones((n, 2)))
    spots.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    values = pd.DataFrame(rng.dirichlet([1, 1, 1], n), index=spots.obs_names)
    values.columns = ["T1", "T2", "T3"]
    values["T2"] = 0.0
    values.iloc[:5, 0] = np.nan
    spots.obsm["proportions"] = values
    return spots


def test_spatial_proportions_sets_the_orientation_instead_of_toggling_it():
    """An Axes already in image orientation (sc.pl.spatial, an H&E image) was flipped back."""
    spots = _spots()
    _, ax = plt.subplots()
    ax.imshow(np.zeros((100, 100)))  # an image: y already inverted
    assert ax.yaxis_inverted()
    dv.pl.spatial_proportions(spots, columns=["T3"], ax=ax, show=False)
    assert ax.yaxis_inverted()
    dv.pl.spatial_proportions(spots, columns=["T3"], ax=ax, show=False)  # drawn twice
    assert ax.yaxis_inverted()
    plt.close("all")


def test_spatial_proportions_finds_the_basis_as_scanpy_does():
    """basis="spatial" missed obsm["X_spatial"] and basis="X_spatial" missed obsm["spatial"]."""
    for stored, asked in [("X_spatial", "spatial"), ("spatial", "X_spatial")]:
        spots = _spots()
        spots.obsm[stored] = spots.obsm.pop("spatial")
        (ax,) = dv.pl.spatial_proportions(spots, columns=["T3"], basis=asked, show=False)
        assert ax.yaxis_inverted()  # image coordinates either way
        plt.close("all")


def test_spatial_proportions_scale_starts_at_zero_and_shows_missing_spots(tmp_path):
    spots = _spots()
    axes = dv.pl.spatial_proportions(spots, show=False, save=tmp_path / "p.png")
    t1, t2, _ = axes
    zeros = t2.collections[-1]
    assert (zeros.norm.vmin, zeros.norm.vmax) == (0.0, 1.0)  # was -0.1 .. 0.1
    grey, values = t1.collections
    assert grey.get_offsets().shape == (5, 2)  # the NaN spots are drawn, in light grey
    np.testing.assert_allclose(grey.get_facecolor()[0][:3], 0.827, atol=0.01)
    assert values.get_offsets().shape == (35, 2) and values.norm.vmin == 0
    plt.close("all")
    with pytest.raises(ValueError, match="vmax must be above 0"):
        dv.pl.spatial_proportions(spots, vmax=0, show=False)
    assert plt.get_fignums() == []  # refused before a figure was made


def test_spatial_proportions_takes_vmin_as_scanpy_does():
    """vmin was missing (the scale always started at 0) and vmax took 'p99' only."""
    spots = _spots()
    spots.obsm["scores"] = np.c_[np.linspace(-1, 2, spots.n_obs), np.linspace(0.2, 0.4, 40)]

    def scales(axes):
        return [(ax.collections[-1].norm.vmin, ax.collections[-1].norm.vmax) for ax in axes]

    wide, narrow = dv.pl.spatial_proportions(spots, "scores", vmin=-0.5, vmax=1.5, show=False)
    assert scales([wide, narrow]) == [(-0.5, 1.5), (-0.5, 1.5)]
    assert [ax.collections[-1].colorbar.extend for ax in (wide, narrow)] == ["both", "neither"]
    axes = dv.pl.spatial_proportions(spots, "scores", vmin="p10", vmax="p90.5", show=False)
    expected = [np.percentile(spots.obsm["scores"][:, j], (10, 90.5)) for j in (0, 1)]
    np.testing.assert_allclose(scales(axes), expected)
    axes = dv.pl.spatial_proportions(spots, "scores", vmin=np.min, show=False)
    np.testing.assert_allclose(scales(axes), [(-1, 2), (0.2, 0.4)])
    # a lower end above every value of a panel: all in the lowest colour, not a reversed scale
    (_, above) = dv.pl.spatial_proportions(spots, "scores", vmin=0.5, show=False)
    assert scales([above]) == [(0.5, pytest.approx(0.55))]
    plt.close("all")
    with pytest.raises(ValueError, match=r"vmax must be above vmin; got vmin=0.5, vmax=0.2"):
        dv.pl.spatial_proportions(spots, vmin=0.5, vmax=0.2, show=False)
    with pytest.raises(ValueError, match=r"vmin must be a number, 'p1' or None; got 'q1'"):
        dv.pl.spatial_proportions(spots, vmin="q1", show=False)
    # one per panel, as scanpy's
    axes = dv.pl.spatial_proportions(spots, "scores", vmin=[-1, "p50"], vmax=(3, None), show=False)
    assert scales(axes) == [(-1, 3), (pytest.approx(0.3), pytest.approx(0.4))]
    plt.close("all")
    with pytest.raises(ValueError, match=r"vmax holds 2 values, and the plot has 3 panels"):
        dv.pl.spatial_proportions(spots, vmax=[1, 1], show=False)
    assert plt.get_fignums() == []


def test_an_obs_column_as_key_is_sent_to_embedding():
    """key='cell_abundance', which NMFDeconv and SpatialImputer write to obs beside
    obsm['proportions'], was told "not in adata.obsm ... Run the model's write_to_adata
    first", which had written it."""
    spots = _spots()
    spots.obs["cell_abundance"] = np.arange(spots.n_obs, dtype=float)
    said = r"'cell_abundance' is a column of adata.obs.*dv.pl.embedding\(adata, basis='spatial'"
    with pytest.raises(KeyError, match=said):
        dv.pl.spatial_proportions(spots, "cell_abundance", show=False)
    ax = dv.pl.embedding(spots, basis="spatial", color="cell_abundance", show=False)
    assert ax.yaxis_inverted()  # tissue, rows down, as spatial_proportions draws it
    plt.close("all")


def test_colour_bar_label_of_a_prefixed_key():
    spots = _spots()
    spots.obsm["ref2_proportions"] = spots.obsm["proportions"]  # write_to_adata(key_added=)
    for key in ("proportions", "ref2_proportions"):
        (ax,) = dv.pl.spatial_proportions(spots, key=key, columns=["T3"], show=False)
        assert ax.figure.axes[-1].get_ylabel() == "proportion", key
    plt.close("all")
    # SpatialImputer's genes (write_to_adata, key_added too): expected counts, not "imputed".
    spots.obsm["merfish_imputed"] = spots.obsm["proportions"] * 40
    (ax,) = dv.pl.spatial_proportions(spots, "merfish_imputed", columns="T3", show=False)
    assert ax.figure.axes[-1].get_ylabel() == "expected count"
    plt.close("all")


def test_a_type_nearly_absent_everywhere_is_not_drawn_as_abundant():
    """A cell type at most 7e-5 of any spot (a real deconvolution's Interneuron) took its
    panel's brightest colour: a proportions panel's own scale reaches at least 0.05."""
    spots = _spots()
    shares = spots.obsm["proportions"].fillna(0.5)
    shares["T2"] = np.linspace(0, 7e-5, spots.n_obs)
    shares["T3"] = 1 - shares["T1"] - shares["T2"]  # rows sum to 1, as a model writes them
    spots.obsm["proportions"] = shares
    t1, t2, t3 = dv.pl.spatial_proportions(spots, show=False)
    assert t2.collections[-1].norm.vmax == pytest.approx(0.05)
    # Types present keep their own maximum; a number is one scale for all; values that are not
    # proportions (abundances, expression) keep theirs.
    assert t3.collections[-1].norm.vmax == pytest.approx(spots.obsm["proportions"]["T3"].max())
    plt.close("all")
    spots.obsm["abundance"] = spots.obsm["proportions"] * 1e-3
    (t2,) = dv.pl.spatial_proportions(spots, "abundance", columns=["T2"], show=False)
    assert t2.collections[-1].norm.vmax == pytest.approx(7e-8)
    plt.close("all")


def test_spatial_proportions_numbers_the_columns_of_an_array():
    """An array in obsm has no column names: its columns are named by position, as 0 or "0"
    (a DataFrame's names are its own: 0 is not "T1")."""
    spots = _spots()
    weights = spots.obsm["proportions"].fillna(0.0).to_numpy()
    spots.obsm["archetype_weights"] = weights
    for column in (2, "2", np.int64(2)):
        (ax,) = dv.pl.spatial_proportions(spots, "archetype_weights", columns=[column], show=False)
        assert ax.get_title() == "2"
        np.testing.assert_allclose(np.sort(ax.collections[-1].get_array()), np.sort(weights[:, 2]))
    with pytest.raises(KeyError, match=r"\[0\] are not columns"):
        dv.pl.spatial_proportions(spots, columns=[0], show=False)
    plt.close("all")


def test_a_column_not_in_a_wide_table_is_named_without_every_column():
    """obsm['imputed'] (SpatialImputer: spots x genes) with a misspelt gene: the KeyError
    listed every column, tens of kilobytes for a transcriptome."""
    spots = _spots(n=5)
    genes = [f"GENE{i}" for i in range(2000)]
    spots.obsm["imputed"] = pd.DataFrame(np.ones((5, 2000)), index=spots.obs_names, columns=genes)
    with pytest.raises(KeyError, match=r"\['Gene2'\] are not .* \(2000 columns\)") as err:
        dv.pl.spatial_proportions(spots, key="imputed", columns=["Gene2"], show=False)
    assert len(str(err.value)) < 500


def test_cluster_composition_counts_every_cell_of_a_cluster():
    a = ad.AnnData(np.zeros((6, 1)))
    a.obs["cluster"] = pd.Categorical(["A0"] * 4 + ["A1"] * 2)
    a.obs["layer"] = pd.Categorical(["GCL", "GCL", np.nan, np.nan, "ONL", "ONL"])
    ax = dv.pl.cluster_composition(a, "cluster", "layer", show=False)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["A0 (n=4, 2 without layer)", "A1 (n=2)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GCL (n=2)", "ONL (n=2)"]
    plt.close("all")


def test_not_converged_note_mentions_a_warm_up_only_after_one():
    frame = lambda name, v: pd.DataFrame({name: v}, index=pd.RangeIndex(len(v), name="epoch"))  # noqa: E731
    plain = {
        "elbo_train": frame("elbo_train", [3.0, 2.0]),
        "kl_weight": frame("kl_weight", [1.0, 1.0]),
    }
    assert "warm-up" not in still_improving(plain)
    warmed = {
        "elbo_train": frame("elbo_train", [5.0, 4.0, 3.0, 2.0]),
        "kl_weight": frame("kl_weight", [0.5, 0.8, 1.0, 1.0]),
    }
    assert "(after the KL warm-up)" in still_improving(warmed)


def test_nmfdeconv_not_converged_note_has_no_warm_up():
    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=2, n_conditions=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=30, seed=0)
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=2, enable_progress_bar=False)
    notes = [str(w.message) for w in caught if issubclass(w.category, NotConvergedWarning)]
    assert notes and not any("warm-up" in note for note in notes)


def test_a_measured_gene_asked_of_the_imputed_genes_is_told_it_is_the_spots_own():
    """Hippocampus Visium's measured 'Rpl7', asked of obsm['imputed'] (the genes the spots
    did not measure), was told "did you mean 'Rpl13a'?", another gene."""
    spots = _spots()
    spots.var_names = ["Rpl7", "Acta2"]
    imputed = pd.DataFrame(1.0, index=spots.obs_names, columns=["Rpl13a", "Rpl8"])
    spots.obsm["imputed"] = imputed
    said = r"\['Rpl7'\] are genes of adata.var_names.*dv.pl.embedding\(adata, basis='spatial'"
    with pytest.raises(KeyError, match=said) as error:
        dv.pl.spatial_proportions(spots, key="imputed", columns=["Rpl7"], show=False)
    assert "did you mean" not in str(error.value)
    with pytest.raises(KeyError, match="'Rpl9': did you mean 'Rpl8'"):  # a typo still hinted
        dv.pl.spatial_proportions(spots, key="imputed", columns=["Rpl9"], show=False)


def test_missing_spot_coordinates_are_told_where_they_go_not_to_compute_a_umap():
    """Spots without obsm['spatial'] (a Slide-seq table read with x and y in obs) were told
    "Compute it first, e.g. sc.tl.umap(adata)" by dv.pl.embedding(basis='spatial') and by
    cluster_probabilities, and only the obsm keys there are by spatial_proportions."""
    spots = _spots()
    spots.obs["x"], spots.obs["y"] = spots.obsm.pop("spatial").T
    spots.obsm["cgmdvae_cluster_probs"] = np.full((spots.n_obs, 2), 0.5)
    fix = r"adata.obsm\['spatial'\] = adata.obs\[\['x', 'y'\]\].to_numpy\(\)"
    draws = [
        lambda: dv.pl.spatial_proportions(spots, show=False),
        lambda: dv.pl.embedding(spots, basis="spatial", color="x", show=False),
        lambda: dv.pl.cluster_probabilities(spots, basis="spatial", show=False),
    ]
    for draw in draws:
        with pytest.raises(KeyError, match=fix) as error:
            draw()
        assert "umap" not in str(error.value)
    del spots.obs["x"]  # no columns to take them from: where they go, still
    with pytest.raises(KeyError, match=r"coordinates go in adata.obsm\['spatial'\]"):
        dv.pl.spatial_proportions(spots, show=False)
    with pytest.raises(KeyError, match=r"sc.tl.umap\(adata\)"):  # an embedding: compute it
        dv.pl.embedding(spots, basis="umap", color="y", show=False)


def test_every_imputed_gene_is_not_drawn_without_columns():
    """spatial_proportions(spots, key='imputed') drew a panel per imputed gene: 183 took 10 s
    (hippocampus Visium), the lymph-node pair's 9,679 would take many minutes."""
    spots = _spots()
    genes = [f"g{i}" for i in range(101)]
    spots.obsm["imputed"] = pd.DataFrame(1.0, index=spots.obs_names, columns=genes)
    with pytest.raises(ValueError, match=r"holds 101 columns.*columns=\['g0', 'g1', 'g2', 'g3'\]"):
        dv.pl.spatial_proportions(spots, key="imputed", show=False)
    axes = dv.pl.spatial_proportions(spots, key="imputed", columns=genes[:2], show=False)
    assert len(axes) == 2
    plt.close("all")
