"""ZINBVAE's and CGMDVAE's read-outs agree with each other: cluster indices and the names
written to obs, category values read by name in every argument, the genes read from an
AnnData with more genes, the advice for data that are not counts, and query checks
(model/_cluster_predictions.py, _registered.py, _de.py, _genes.py, _count_advice.py,
_query_checks.py)."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scvi
import torch

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _cells(seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=2, seed=seed
    )
    first = adata.obs["condition"] == adata.obs["condition"].iloc[0]
    adata.obs["plate"] = np.where(first, 107, 205)  # integer batches
    adata.obs["type"] = np.where(adata.obs["cluster"] == adata.obs["cluster"].iloc[0], 10, 20)
    return adata


@pytest.fixture(scope="module")
def cgmdvae():
    scvi.settings.seed = 0
    adata = _cells()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="plate", labels_key="type")
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=3, n_latent_w=2, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    return model, adata


@pytest.fixture(scope="module")
def zinbvae():
    scvi.settings.seed = 0
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="plate")
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    return model, adata


def test_cluster_indices_name_the_clusters_written_to_obs(cgmdvae):
    """predict_clusters() gives indices, obs["cgmdvae_cluster"] names (scanpy's leiden
    way): compared directly they were all unequal, and neither docstring said how to
    convert; uns' cluster_names, indexed by them, are the obs column (typed: integer labels)."""
    model, adata = cgmdvae
    out = adata.copy()
    model.write_to_adata(out)
    idx = model.predict_clusters()
    assert idx.dtype.kind == "i"
    names = out.uns["cgmdvae"]["cluster_names"]
    assert names.dtype.kind == "i"  # labels 10, 20 as the labels column holds them
    assert (names[idx] == out.obs["cgmdvae_cluster"].to_numpy()).all()
    assert (names[idx] == model.predict_labels()["label"].to_numpy()).all()
    assert (names[idx] == model.predict()).all()
    for doc in (model.predict_clusters.__doc__, model.write_to_adata.__doc__):
        assert 'uns["cgmdvae"]["cluster_names"]' in doc and "leiden" in doc


def test_a_batch_is_named_by_its_name_as_a_condition_is(cgmdvae, zinbvae):
    """transform_batch="107" was refused for an integer column while condition="107" was
    read as 107: every argument naming a category now reads it by name."""
    model, _ = cgmdvae
    torch.manual_seed(0)
    by_value = model.get_normalized_expression(transform_batch=107)
    torch.manual_seed(0)
    by_name = model.get_normalized_expression(transform_batch="107")
    np.testing.assert_allclose(by_name.to_numpy(), by_value.to_numpy())
    z = model.get_latent_representation(condition="107")
    np.testing.assert_allclose(z, model.get_latent_representation(condition=107))
    vae, _ = zinbvae
    torch.manual_seed(0)
    by_value = vae.get_normalized_expression(transform_batch=[107, 205])
    torch.manual_seed(0)
    by_name = vae.get_normalized_expression(transform_batch=["107", "205"])
    np.testing.assert_allclose(by_name.to_numpy(), by_value.to_numpy())
    with pytest.raises(ValueError, match=r"'7' is not a category of adata.obs\['plate'\]"):
        vae.get_normalized_expression(transform_batch="7")


def test_more_genes_are_read_by_name_in_every_read_out(zinbvae):
    """write_to_adata(whole) read the model's genes from an AnnData with more genes, while
    get_latent_representation(whole) refused it ("genes it does not know")."""
    model, adata = zinbvae
    extra = ad.AnnData(np.ones((adata.n_obs, 2), dtype=np.float32))
    extra.obs_names, extra.var_names = adata.obs_names, ["novel_a", "novel_b"]
    whole = ad.concat([extra, adata], axis=1, merge="first")  # another gene order too
    whole.obs = adata.obs[["plate", "type"]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet, as write_to_adata(whole)
        z = model.get_latent_representation(whole)
        expression = model.get_normalized_expression(whole, n_samples=2)
        model.write_to_adata(whole)
    np.testing.assert_allclose(z, model.get_latent_representation(), atol=1e-6)
    np.testing.assert_allclose(whole.obsm["X_zinbvae"], z, atol=1e-6)
    assert list(expression.columns) == list(adata.var_names)
    assert whole.n_vars == adata.n_vars + 2 and "_scvi_batch" not in whole.obs
    with pytest.raises(ValueError, match="1 of them missing"):
        model.get_latent_representation(whole[:, whole.var_names != adata.var_names[0]].copy())


def test_counts_normalized_in_place_are_advised_without_overwriting_x():
    """A model trained on counts in X, X log-normalized since with the counts kept in a
    layer: the advice moved the counts back into X, over the user's log-normalized X."""
    scvi.settings.seed = 0
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    z = model.get_latent_representation()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    logged = adata.X.copy()
    fix = r"To keep adata.X as it is, .*anndata.AnnData\(adata.layers\['counts'\].*model.adata ="
    with pytest.raises(ValueError, match=fix):
        model.get_latent_representation()
    counts = ad.AnnData(adata.layers["counts"], obs=adata.obs.copy(), var=adata.var.copy())
    model.adata = counts  # the advice followed
    np.testing.assert_allclose(model.get_latent_representation(), z, atol=1e-6)
    assert model.write_to_adata() == ["obsm/X_zinbvae"] and "X_zinbvae" in counts.obsm
    np.testing.assert_array_equal(adata.X.toarray(), logged.toarray())


def test_query_with_missing_batches_or_as_a_view_is_told_what_to_do_first(zinbvae):
    """NaN batches of a query got setup_anndata's "fill them with a value of their own", and
    a view was refused by scvi-tools' setup once the model was being built."""
    model, _ = zinbvae
    query = _cells(seed=1)
    query.obs["plate"] = np.where(np.arange(query.n_obs) < 5, np.nan, 301.0)
    fix = r"query.obs\['plate'\] = query.obs\['plate'\].fillna\(-1\).astype\(int\); or drop"
    with pytest.raises(ValueError, match=r"has 5 missing values \(NaN\).*" + fix):
        dv.model.ZINBVAE.load_query_data(query, model)
    query.obs["plate"] = query.obs["plate"].fillna(-1).astype(int)  # the advice followed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scvi-tools' notes on the new categories
        mapped = dv.model.ZINBVAE.load_query_data(query, model)
    assert mapped.query_mapping_["new_categories"]["plate"] == ["-1", "301"]
    columns = list(query.obs)
    # Why, truly: the query model registers a twin of the query, not the query itself.
    refused = r"query is a view .*writes its results into the query.* query\[mask\].copy\(\)"
    with pytest.raises(ValueError, match=refused):
        dv.model.ZINBVAE.load_query_data(query[:50], model)
    assert list(query.obs) == columns
