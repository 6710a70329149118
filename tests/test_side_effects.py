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
    small.obsm["spatial"] = small.obsm["X_umap"]
    small.obsm["tsne"] = small.obsm["X_umap"]
    assert dv.pl.embedding(small, basis="spatial", color="kind", show=False) is not None
    assert dv.pl.embedding(small, basis="tsne", color="kind", show=False) is not None
