"""differential_expression(key_added=...): scvi-tools' DE table in scanpy's rank_genes_groups
layout, read by sc.get.rank_genes_groups_df and scanpy's rank_genes_groups plots. Before it,
nothing connected them: the table had to be rebuilt by hand into scanpy's record arrays."""

import matplotlib
import numpy as np
import pytest
import scanpy as sc

import deltavae as dv

matplotlib.use("Agg")

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def trained():
    """A CGMDVAE of 3 clusters on log-normalized X (counts in a layer), as scanpy users
    set up: its ``cgmdvae_cluster`` column is the grouping compared."""
    adata = dv.datasets.synthetic_counts(
        n_cells=150, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.X = adata.X.toarray()  # scanpy's dendrogram of < 50 genes fails on a sparse X
    dv.model.CGMDVAE.setup_anndata(adata, layer="counts")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=3, batch_size=64, **TRAIN)
    # The clusters of the model drawn, as write_to_adata would; the synthetic truth keeps
    # three groups with cells whatever three epochs learn.
    adata.obs["cgmdvae_cluster"] = adata.obs["cluster"].astype(str).astype("category")
    return model, adata


def _scanpy_layout(adata, **kwargs):
    view = adata.copy()
    sc.tl.rank_genes_groups(view, "cgmdvae_cluster", key_added="scanpy", **kwargs)
    return view.uns["scanpy"]


def _same_layout(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    assert set(ours["params"]) == set(theirs["params"])
    for key in ("groupby", "reference", "use_raw", "layer"):
        assert ours["params"][key] == theirs["params"][key], key
    for field in set(theirs) - {"params", "pts", "pts_rest"}:
        assert type(ours[field]) is type(theirs[field]), field
        assert ours[field].dtype.names == theirs[field].dtype.names, field
        kinds = {ours[field].dtype[name].kind for name in ours[field].dtype.names}
        assert kinds == {theirs[field].dtype[0].kind}, field
        assert ours[field].dtype[0].itemsize == theirs[field].dtype[0].itemsize, field


def test_key_added_writes_scanpys_layout_in_the_table_s_order(trained, tmp_path):
    model, adata = trained
    de = model.differential_expression(
        groupby="cgmdvae_cluster", mode="change", key_added="rank_genes_groups", silent=True
    )
    written = adata.uns["rank_genes_groups"]
    theirs = _scanpy_layout(adata, pts=True)
    _same_layout(written, theirs)
    assert written["params"]["reference"] == "rest"
    # pts and pts_rest, the shares of cells with a count (scvi-tools' non_zeros_proportion),
    # are scanpy's: its log-normalized X is non-zero where the counts are.
    for field in ("pts", "pts_rest"):
        assert written[field].index.equals(theirs[field].index)
        assert list(written[field].columns) == list(theirs[field].columns)
        np.testing.assert_allclose(written[field], theirs[field], rtol=1e-6)
    listed = sc.get.rank_genes_groups_df(adata, "0")
    assert listed["pct_nz_group"].between(0, 1).all() and "pct_nz_reference" in listed
    filtered = sc.tl.filter_rank_genes_groups(adata, min_in_group_fraction=0.9, key_added="f")
    assert filtered is None and adata.uns.pop("f")["names"].dtype.names == ("0", "1", "2")
    for group in ("0", "1", "2"):
        table = de[de["group1"] == group]
        listed = sc.get.rank_genes_groups_df(adata, group)
        assert list(listed["names"]) == list(table.index)
        np.testing.assert_allclose(listed["scores"], table["proba_de"], rtol=1e-6)
        np.testing.assert_allclose(listed["logfoldchanges"], table["lfc_mean"], rtol=1e-5)
        assert listed["pvals"].isna().all() and listed["pvals_adj"].isna().all()
    # scanpy's displays read it unchanged.
    dotplot = sc.pl.rank_genes_groups_dotplot(adata, n_genes=4, show=False, return_fig=True)
    dotplot.savefig(tmp_path / "dotplot.png")
    assert (tmp_path / "dotplot.png").stat().st_size > 0
    sc.pl.rank_genes_groups(adata, n_genes=5, show=False)
    sc.pl.rank_genes_groups_heatmap(adata, n_genes=3, show=False)
    matplotlib.pyplot.close("all")
    # And survive an .h5ad round trip as scanpy's do.
    adata.write_h5ad(tmp_path / "de.h5ad")
    back = sc.read_h5ad(tmp_path / "de.h5ad")
    assert list(sc.get.rank_genes_groups_df(back, "1")["names"]) == list(
        de[de["group1"] == "1"].index
    )


def test_key_added_against_group2_is_scanpys_reference(trained):
    model, adata = trained
    de = model.differential_expression(
        groupby="cgmdvae_cluster", group2="1", key_added="against_1", silent=True
    )
    written = adata.uns["against_1"]
    theirs = _scanpy_layout(adata, reference="1", pts=True)
    _same_layout(written, theirs)
    assert written["names"].dtype.names == ("0", "2")
    assert "pts_rest" not in written  # as scanpy: no rest against a group
    assert list(written["pts"].columns) == ["0", "1", "2"]  # the reference's too
    np.testing.assert_allclose(written["pts"], theirs["pts"], rtol=1e-6)
    table = de[de["group1"] == "2"]
    listed = sc.get.rank_genes_groups_df(adata, "2", key="against_1")
    assert list(listed["names"]) == list(table.index)
    np.testing.assert_allclose(listed["scores"], table["bayes_factor"], rtol=1e-6)
    lfc = np.log2(table["scale1"] / table["scale2"])
    np.testing.assert_allclose(listed["logfoldchanges"], lfc, rtol=1e-5)
    sc.pl.rank_genes_groups_dotplot(adata, key="against_1", n_genes=3, show=False)
    matplotlib.pyplot.close("all")
    # One group against another: one field.
    model.differential_expression(
        groupby="cgmdvae_cluster", group1="0", group2="2", key_added="against_1", silent=True
    )
    assert adata.uns["against_1"]["names"].dtype.names == ("0",)  # replaced, as scanpy does
    assert adata.uns["against_1"]["params"]["reference"] == "2"


def test_key_added_is_refused_before_any_draw(trained):
    model, adata = trained
    with pytest.raises(KeyError, match="did you mean 'cgmdvae_cluster'"):
        model.differential_expression(groupby="cgmdvae_clusters", key_added="de")
    with pytest.raises(ValueError, match="pass groupby="):
        model.differential_expression(idx1=np.arange(10), key_added="de")
    with pytest.raises(ValueError, match="key_added="):
        model.differential_expression(groupby="cgmdvae_cluster", key_added="a/b")
    adata.uns["kept"] = {"note": 1}
    with pytest.raises(ValueError, match=r"uns\['kept'\] holds a dict, not a rank_genes"):
        model.differential_expression(groupby="cgmdvae_cluster", key_added="kept")
    assert adata.uns["kept"] == {"note": 1}
    with pytest.raises(ValueError, match=r"adata is a view.*adata.copy\(\)"):
        model.differential_expression(adata[:100], groupby="cgmdvae_cluster", key_added="de")
    assert "de" not in adata.uns
