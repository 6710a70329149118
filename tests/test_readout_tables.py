"""Read-outs as a scverse user holds them beside scvi-tools': tables indexed by the cells'
names with the clusters (labels, cell types) as columns, for a view, a subset by ``indices=``
and new cells; and spot models built from a view of the spots."""

import numpy as np
import pandas as pd
import pytest

import deltavae as dv

SMALL = {"n_hidden": 16, "n_latent": 4}
FAST = {"enable_progress_bar": False, "mixture_init": "kmeans"}


@pytest.fixture(scope="module")
def labelled():
    """A semi-supervised CGMDVAE (labels T0-T2 and a novel cluster) after one epoch."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["type"] = "T" + adata.obs["cluster"].astype(str)
    adata.obs.loc[adata.obs_names[::3], "type"] = "Unknown"
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="type")
    model = dv.model.CGMDVAE(adata, n_clusters=4, **SMALL)
    with pytest.warns(UserWarning):  # one epoch: not converged, clusters empty
        model.train(max_epochs=1, **FAST)
    return model, adata


def test_predict_labels_soft_is_scanvis_table_of_probabilities_by_cell_and_cluster(labelled):
    """predict_clusters(soft=True) gave an unnamed array, where SCANVI.predict(soft=True)
    gives a DataFrame of label names by obs_names: predict_labels(soft=True) gives that, for
    the model's cells, a view, a subset by indices= (in their order) and new cells."""
    model, adata = labelled
    soft = model.predict_labels(soft=True)
    assert list(soft.columns) == model.cluster_names == ["T0", "T1", "T2", "novel_0"]
    assert soft.index.equals(adata.obs_names)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(soft.to_numpy(), model.predict_clusters(soft=True), atol=1e-6)
    hard = model.predict_labels()
    assert (soft.idxmax(axis=1) == hard["label"].astype(str)).all()
    np.testing.assert_allclose(soft.max(axis=1), hard["confidence"], atol=1e-6)
    view = adata[adata.obs["condition"] == adata.obs["condition"].cat.categories[0]]
    on_view = model.predict_labels(view, soft=True)
    assert view.is_view and on_view.index.equals(view.obs_names)
    pd.testing.assert_frame_equal(on_view, soft.loc[view.obs_names])
    picked = model.predict_labels(indices=[5, 2, 9], soft=True)
    pd.testing.assert_frame_equal(picked, soft.iloc[[5, 2, 9]])
    three = hard.iloc[[5, 2, 9]]  # their label's categories: the clusters they hold
    three = three.assign(label=three["label"].cat.remove_unused_categories())
    pd.testing.assert_frame_equal(model.predict_labels(indices=[5, 2, 9]), three)
    mask = np.arange(adata.n_obs) % 4 == 0
    assert model.predict_labels(indices=mask, soft=True).index.equals(adata.obs_names[mask])
    np.testing.assert_array_equal(
        model.predict_clusters(indices=[5, 2, 9]), model.predict_clusters()[[5, 2, 9]]
    )
    new = adata[:6].copy()
    new.obs_names = [f"new_{i}" for i in range(6)]
    fresh = model.predict_labels(new, soft=True)
    assert fresh.index.tolist() == [f"new_{i}" for i in range(6)]
    np.testing.assert_allclose(fresh.to_numpy(), soft.iloc[:6].to_numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"indices selects no cell"):
        model.predict_labels(indices=[], soft=True)


def test_predict_labels_holds_the_categories_write_to_adata_writes(labelled):
    """predict_labels' label kept every cluster as a category (novel_0 and labels no cell of
    these took), where write_to_adata's obs column drops them: the same cells gave a column
    with empty groups (a legend entry without cells; rank_genes_groups refuses it) or not,
    depending on the read-out. Both now hold the clusters with cells, in the labels' order."""
    model, adata = labelled
    hard = model.predict_labels()["label"]
    held = hard.value_counts()
    one = held.index[held.argmax()]
    cells = np.flatnonzero((hard == one).to_numpy())
    assert model.predict_labels(indices=cells)["label"].cat.categories.tolist() == [one]
    written = adata[cells].copy()
    model.write_to_adata(written)
    pd.testing.assert_series_equal(
        written.obs["cgmdvae_cluster"],
        model.predict_labels(indices=cells)["label"],
        check_names=False,
    )
    order = [c for c in model.cluster_names if c in set(hard)]
    assert hard.cat.categories.tolist() == order  # the clusters' order, without empty ones
    everything = hard.cat.set_categories(model.predict_labels(soft=True).columns)
    assert everything.cat.categories.tolist() == model.cluster_names


def test_predict_labels_soft_names_integer_labels_as_the_label_column_does():
    """Integer labels: the columns are the integers that predict_labels' label holds."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=12, n_clusters=2, seed=0)
    codes = adata.obs["cluster"].cat.codes.to_numpy().astype(int) + 1
    adata.obs["semi"] = np.where(np.arange(adata.n_obs) % 3 == 0, -1, codes)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="semi", unlabeled_category=-1)
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.is_trained_ = True  # probabilities of the starting weights serve
    soft = model.predict_labels(soft=True)
    assert soft.columns.tolist() == [1, 2]
    held = model.predict_labels()["label"].cat.categories
    assert held.tolist() == [c for c in soft.columns if c in held]  # integers, same order


@pytest.fixture(scope="module")
def spots_and_reference():
    data = dv.datasets.synthetic_counts(n_cells=300, n_genes=60, n_clusters=3, seed=0)
    spots, ref = dv.datasets.pseudo_spots(data, "cluster", n_spots=40)
    return spots[:, :40].copy(), ref


@pytest.mark.parametrize("inference", ["amortized", "per_spot"])
def test_nmfdeconv_from_reference_takes_a_view_of_the_spots_as_spatialimputer_does(
    spots_and_reference, inference
):
    """NMFDeconv.from_reference(spots[mask]) was refused ("adata is a view ... setup_anndata,
    load and load_query_data write ...", none of which the user called) where
    SpatialImputer.from_reference took the same view; both now build on a copy of it, and
    the spots and their parent stay as they were."""
    spots, ref = spots_and_reference
    parent = spots.copy()
    view = parent[np.arange(parent.n_obs) % 2 == 0]
    kwargs = {"labels_key": "cluster", "n_markers": None, "inference": inference}
    model = dv.model.NMFDeconv.from_reference(view, reference=ref, **kwargs)
    assert not model.adata.is_view and model.adata.obs_names.equals(view.obs_names)
    assert view.is_view and list(parent.obs.columns) == list(spots.obs.columns)
    assert list(parent.uns) == list(spots.uns)  # no setup written into the parent
    model.is_trained_ = True  # the starting proportions serve
    proportions = model.get_proportions()
    assert proportions.index.equals(view.obs_names) and list(proportions.columns) == [
        "0",
        "1",
        "2",
    ]
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0)
    imputer = dv.model.SpatialImputer.from_reference(view, ref, labels_key="cluster")
    assert imputer.adata.obs_names.equals(model.adata.obs_names)


def test_impute_given_the_spots_says_it_takes_gene_names(spots_and_reference):
    """imputer.impute(spots), as NMFDeconv.get_proportions(spots) is called, read the AnnData
    row by row as gene names: "40 requested genes are not reference genes: ['View of AnnData
    object with n_obs x n_vars = 1 x 40 ...', ...]"."""
    spots, ref = spots_and_reference
    imputer = dv.model.SpatialImputer.from_reference(spots, ref, labels_key="cluster")
    imputer.is_trained_ = True
    with pytest.raises(TypeError, match=r"genes takes gene names; got AnnData\. impute\(\) gi"):
        imputer.impute(spots)
    with pytest.raises(TypeError, match=r"got DataFrame\..*write_to_adata\(spots\)"):
        imputer.impute(spots.to_df())
    assert imputer.impute(["gene_45"]).index.equals(spots.obs_names)
