"""A public call changes the user's AnnData only in the slots its docstring names: no column
changes dtype, no view is turned into a copy of its subset."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import deltavae as dv


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    n = 60
    adata = ad.AnnData(
        X=rng.poisson(2.0, size=(n, 8)).astype(np.float32),
        obs=pd.DataFrame(
            {
                "kind": np.array(["a", "b", "c"], dtype=object)[np.arange(n) % 3],
                "note": np.array(["x", "y"], dtype=object)[np.arange(n) % 2],
                "group": pd.Categorical(np.array(["g1", "g2"])[np.arange(n) % 2]),
            },
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(
            {"symbol": np.array([f"S{i}" for i in range(8)], dtype=object)},
            index=[f"g{i}" for i in range(8)],
        ),
    )
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    return adata


def test_embedding_keeps_string_columns_as_they_are(small):
    # scanpy made every string column of obs and var categorical (sanitize_anndata).
    small.raw = small.copy()
    dv.pl.embedding(small, color="kind", show=False)
    dv.pl.embedding(small, color="g3", show=False)  # from raw, as scanpy does
    assert small.obs["kind"].dtype == object and small.obs["note"].dtype == object
    assert small.var["symbol"].dtype == object
    # The colours are kept, as scanpy does, so that later plots colour the groups alike.
    assert len(small.uns["kind_colors"]) == 3
    assert "note_colors" not in small.uns


def test_embedding_of_a_view_leaves_it_a_view(small):
    view = small[small.obs["note"] == "x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ad.ImplicitModificationWarning)
        axes = dv.pl.embedding(view, color=["group", "kind"], show=False)
    assert len(axes) == 2
    assert view.is_view
    assert "group_colors" not in small.uns and small.obs["kind"].dtype == object


def test_embedding_of_a_basis_stored_without_its_prefix(small):
    """obsm["spatial"] (squidpy's, scanpy's readers') and obsm["tsne"] are drawn, each at its
    own coordinates (not X_umap's), with scanpy's axis names."""
    rng = np.random.default_rng(1)
    for shift, basis, axis in ((100.0, "spatial", "spatial"), (-50.0, "tsne", "tSNE")):
        small.obsm[basis] = rng.normal(size=(small.n_obs, 2)) + shift
        ax = dv.pl.embedding(small, basis=basis, color="kind", show=False)
        drawn = np.asarray(ax.collections[0].get_offsets())
        np.testing.assert_allclose(np.sort(drawn, 0), np.sort(small.obsm[basis], 0))
        assert ax.get_xlabel() == f"{axis}1" and ax.get_ylabel() == f"{axis}2"


@pytest.fixture(scope="module")
def reference():
    import scvi

    cells = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=12, n_clusters=2, n_conditions=1, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(cells)
    scvi.settings.seed = 0
    model = dv.model.ZINBVAE(cells, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, enable_progress_bar=False)
    return model


@pytest.mark.parametrize("inplace", [True, False])
def test_prepare_query_anndata_keeps_uns_raw_and_matrix_kinds(reference, inplace):
    # Genes missing from the query are padded with zeros (scvi-tools' concat): that dropped
    # the query's uns and raw, made its int32 counts float64 and a dense layer sparse.
    query = dv.datasets.synthetic_counts(
        n_cells=20, n_genes=12, n_clusters=2, n_conditions=1, seed=1
    )[:, 2:].copy()
    query.X = query.X.astype(np.int32)
    query.layers["counts"] = query.layers["counts"].toarray().astype(np.int16)
    query.raw = query.copy()
    query.uns["cluster_colors"] = np.array(["#000000", "#ffffff"], dtype=object)
    with pytest.warns(UserWarning, match="2 of the reference's 12 genes are missing"):
        out = dv.model.ZINBVAE.prepare_query_anndata(query, reference, inplace=inplace)
    ready = query if inplace else out
    assert list(ready.var_names) == list(reference.adata.var_names)
    assert ready.X.dtype == np.int32 and ready.layers["counts"].dtype == np.int16
    assert isinstance(ready.layers["counts"], np.ndarray)  # dense as given, not CSR
    assert ready.raw is not None and ready.raw.n_vars == 10
    assert list(ready.uns["cluster_colors"]) == ["#000000", "#ffffff"]
    assert "synthetic" in ready.uns
    assert np.asarray(ready[:, ["gene_0", "gene_1"]].X.sum()) == 0
    if not inplace:  # the query itself is as it was
        assert query.n_vars == 10 and query.X.dtype == np.int32


def test_prepare_query_anndata_refuses_to_reorder_a_view_in_place(reference):
    cells = dv.datasets.synthetic_counts(
        n_cells=20, n_genes=12, n_clusters=2, n_conditions=1, seed=1
    )
    view = cells[:10, ::-1]
    with pytest.raises(ValueError, match=r"adata is a view .*inplace=False"):
        dv.model.ZINBVAE.prepare_query_anndata(view, reference)
    assert view.is_view
    ready = dv.model.ZINBVAE.prepare_query_anndata(view, reference, inplace=False)
    assert list(ready.var_names) == list(reference.adata.var_names) and view.is_view
    in_order = cells[:10]  # nothing to change: a view in the reference's order is fine
    assert dv.model.ZINBVAE.prepare_query_anndata(in_order, reference) is None
    assert in_order.is_view
