"""What every model writes into a user's AnnData survives the scverse round trip: h5ad and
zarr write it without converting anything (anndata warns where it must, and warnings are
errors here), read it back equal (categories and their order, DataFrame columns, uns, dtypes),
and writing again replaces the results of the earlier fit and their colours, leaving the
user's own keys alone."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
import zarr

import deltavae as dv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}
SMALL = {"n_latent": 3, "n_latent_w": 2, "n_hidden": 8}


def _cells(n_cells=90, seed=0):
    cells = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=24, n_clusters=3, n_conditions=2, seed=seed
    )
    cells.obs["cell_type"] = cells.obs["cluster"].map(lambda c: f"T{c}").astype("category")
    return cells


def _mine(adata):
    """The user's own keys, which no model may touch."""
    adata.obs["user_note"] = np.where(np.arange(adata.n_obs) % 2, "a", "b").astype(object)
    adata.obsm["X_user"] = np.ones((adata.n_obs, 2), dtype=np.float32)
    adata.uns["user"] = {"kept": np.arange(3)}
    return adata


def _cgmdvae():
    cells = _mine(_cells())
    dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(cells, **SMALL)
    model.train(**TRAIN)
    return model, cells


def _spots():
    cells = _cells(150, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=40, cells_per_spot=(2, 4))
    return _mine(spots), ref


@pytest.fixture(scope="module")
def written():
    """Tiny models (one epoch), each with its results written into the user's AnnData twice
    (default keys, then key_added), and the AnnData the read-outs return."""
    scvi.settings.seed = 0
    out = {}
    model, cells = _cgmdvae()
    for key in (None, "again"):
        model.write_to_adata(**({} if key is None else {"key_added": key}))
    out["cgmdvae"], out["cgmdvae.model"] = cells, model
    out["cgmdvae.sample"] = model.sample(10, seed=0)
    ctrl = cells[cells.obs["condition"] == "ctrl"].copy()
    out["cgmdvae.translate"] = model.translate(ctrl, "stim", seed=0)
    out["cgmdvae.nearest_response"] = model.predict_perturbation(
        ctrl, "stim", method="nearest_response"
    )
    query = _mine(_cells(40, seed=2))
    query.obs["cell_type"] = "Unknown"
    query.obs["condition"] = "new"  # a condition the query model learns
    q = dv.model.CGMDVAE.load_query_data(query, model)
    q.train(**TRAIN)
    q.write_to_adata()
    out["cgmdvae.query"] = query

    cells = _mine(_cells())
    dv.model.ZINBVAE.setup_anndata(cells, batch_key="condition")
    vae = dv.model.ZINBVAE(cells, n_latent=2, n_hidden=8)
    vae.train(**TRAIN)
    vae.write_to_adata()
    vae.write_to_adata(key_added="again")
    out["zinbvae"] = cells

    for inference in ("amortized", "per_spot"):
        spots, ref = _spots()
        d = dv.model.NMFDeconv.from_reference(spots, ref, "cell_type", inference=inference)
        d.train(**TRAIN)
        d.write_to_adata(spots)
        d.write_to_adata(spots, key_added="again")
        out[f"nmfdeconv.{inference}"] = spots

    for design in ("deconvolution", "latent"):
        spots, ref = _spots()
        spots = spots[:, :18].copy()
        imputer = dv.model.SpatialImputer.from_reference(spots, ref, "cell_type", design=design)
        imputer.train(**TRAIN)
        imputer.write_to_adata(spots)
        imputer.write_to_adata(spots, key_added="again")
        out[f"spatialimputer.{design}"] = spots

    mix = _mine(dv.datasets.convex_mixtures(n_spots=60, n_genes=40, n_archetypes=2, seed=0))
    dv.model.Archetypes.setup_anndata(mix)
    arch = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1)
    arch.train(**{**TRAIN, "max_epochs": 100})  # each archetype some spot's largest weight
    with warnings.catch_warnings():  # whether a signature matches no archetype: either way
        warnings.simplefilter("ignore", UserWarning)
        arch.match_signatures({"s1": list(mix.var_names[:3]), "s2": list(mix.var_names[3:6])})
    arch.write_to_adata(n_anchors=5)
    arch.write_to_adata(n_anchors=5, key_added="again")
    out["archetypes"] = mix
    return out


def _equal(a, b, where: str) -> None:
    """``b`` (read back) holds what ``a`` held: anndata reads a list as an array, and strings
    as object (h5ad) or numpy's StringDType (zarr) arrays."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(b), where
        for key, value in a.items():
            _equal(value, b[str(key)], f"{where}/{key}")
    elif isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), where
        pd.testing.assert_frame_equal(a, b, check_index_type=False, obj=where)
    elif isinstance(a, np.ndarray) and a.dtype.names:  # scanpy's rank_genes_groups layout
        assert b.dtype.names == a.dtype.names, where
        for field in a.dtype.names:
            _equal(np.asarray(a[field]), np.asarray(b[field]), f"{where}[{field}]")
    elif hasattr(a, "tocsr"):  # a sparse layer
        assert type(a) is type(b) and a.dtype == b.dtype and (a != b).nnz == 0, where
    elif isinstance(a, np.ndarray | list) and np.asarray(a).dtype.kind in "OUT":
        assert np.asarray(a).tolist() == np.asarray(b).tolist(), where
    elif isinstance(a, np.ndarray | list):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where
    else:
        assert type(a) is type(b) and a == b, where


#: The AnnData models wrote into (the user's, with keys of their own), then those the
#: read-outs return; zarr, whose writes are slow, for those of every kind of result.
WRITTEN_INTO = ["zinbvae", "cgmdvae", "cgmdvae.query", "nmfdeconv.amortized"]
WRITTEN_INTO += ["nmfdeconv.per_spot", "spatialimputer.deconvolution", "spatialimputer.latent"]
WRITTEN_INTO += ["archetypes"]
RETURNED = ["cgmdvae.sample", "cgmdvae.translate", "cgmdvae.nearest_response"]
IN_ZARR = ["cgmdvae", "archetypes"]


@pytest.mark.parametrize("name", WRITTEN_INTO + RETURNED)
def test_results_write_to_h5ad_and_zarr_and_read_back_equal(written, name, tmp_path):
    adata = written[name]
    if name in WRITTEN_INTO:  # the user's keys, untouched (before h5ad makes strings categorical)
        assert adata.obs["user_note"].dtype == object
        assert adata.obsm["X_user"].sum() == 2 * adata.n_obs
        assert list(adata.uns["user"]["kept"]) == [0, 1, 2]
    stores = [tmp_path / "a.h5ad"] + [zarr.storage.MemoryStore()] * (name in IN_ZARR)
    for store in stores:  # any conversion warning fails the test
        in_zarr = isinstance(store, zarr.storage.MemoryStore)
        adata.write_zarr(store) if in_zarr else adata.write_h5ad(store)
        back = ad.read_zarr(store) if in_zarr else ad.read_h5ad(store)
        _equal(adata.obs, back.obs, "obs")
        for slot in ("obsm", "varm", "layers"):
            assert sorted(getattr(adata, slot)) == sorted(getattr(back, slot)), slot
            for key, value in getattr(adata, slot).items():
                _equal(value, getattr(back, slot)[key], f"{slot}/{key}")
        _equal(dict(adata.uns), dict(back.uns), "uns")


def test_writing_again_keeps_colours_by_name_and_drops_a_stale_dendrogram(written, tmp_path):
    """scanpy colours a column's categories by position (uns["<column>_colors"]): written
    again with other clusters, the earlier fit's colours were left, and the clusters drawn in
    the colours of others; the earlier fit's dendrogram (uns["dendrogram_<column>"]) made
    scanpy's next dotplot of the markers fail."""
    model = written["cgmdvae.model"]
    cells = written["cgmdvae"].copy()
    clusters = cells.obs["cgmdvae_cluster"]
    # An earlier fit's column: one cluster more, in another order, coloured by scanpy.
    earlier = ["gone", *clusters.cat.categories[::-1]]
    cells.obs["cgmdvae_cluster"] = clusters.cat.set_categories(earlier)
    colours = ["#000000", "#111111", "#222222", "#333333", "#444444", "#555555"]
    cells.uns["cgmdvae_cluster_colors"] = colours[: len(earlier)]
    cells.uns["dendrogram_cgmdvae_cluster"] = {"categories_ordered": earlier}
    by_name = dict(zip(earlier, colours, strict=False))
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    model.write_to_adata(cells)
    now = cells.obs["cgmdvae_cluster"].cat.categories
    assert list(cells.uns["cgmdvae_cluster_colors"]) == [by_name[c] for c in now]
    assert "dendrogram_cgmdvae_cluster" not in cells.uns
    sc.pl.embedding(cells, basis="X_cgmdvae", color="cgmdvae_cluster", show=False)
    assert list(cells.uns["cgmdvae_cluster_colors"]) == [by_name[c] for c in now]
    # Written into the file too (backed="r+"), as the column is.
    backed = ad.read_h5ad(path, backed="r+")
    model.write_to_adata(backed)
    backed.file.close()
    stored = ad.read_h5ad(path).uns
    assert list(stored["cgmdvae_cluster_colors"]) == [by_name[c] for c in now]
    assert "dendrogram_cgmdvae_cluster" not in stored
    # The same clusters written again: the dendrogram of them stands.
    cells.uns["dendrogram_cgmdvae_cluster"] = {"categories_ordered": list(now)}
    model.write_to_adata(cells)
    assert "dendrogram_cgmdvae_cluster" in cells.uns
    # A cluster the colours lack: they go (scanpy picks new ones), from the file too.
    cells.obs["cgmdvae_cluster"] = cells.obs["cgmdvae_cluster"].cat.rename_categories(
        {now[0]: "other"}
    )
    cells.write_h5ad(path)
    model.write_to_adata(cells)
    assert "cgmdvae_cluster_colors" not in cells.uns
    backed = ad.read_h5ad(path, backed="r+")
    model.write_to_adata(backed)
    backed.file.close()
    assert "cgmdvae_cluster_colors" not in ad.read_h5ad(path).uns
    assert isinstance(ad.read_h5ad(path).obs["cgmdvae_cluster"].dtype, pd.CategoricalDtype)


def test_archetype_markers_read_as_scanpys_rank_genes_groups(written):
    """The markers' params are those scanpy writes, typed as scanpy types them: "layer" was the
    string "None", which names a layer, where scanpy writes None (no layer)."""
    mix = written["archetypes"].copy()
    sc.tl.rank_genes_groups(mix, groupby="archetype_dominant", key_added="scanpys")
    ours, scanpys = mix.uns["archetype_markers"], mix.uns["scanpys"]
    assert set(ours["params"]) == set(scanpys["params"])
    for name, value in scanpys["params"].items():
        assert type(ours["params"][name]) is type(value), name
    assert ours["params"]["layer"] is None
    assert ours["names"].dtype.names == scanpys["names"].dtype.names
    table = sc.get.rank_genes_groups_df(mix, group=None, key="archetype_markers")
    assert set(table["group"]) == set(mix.obs["archetype_dominant"].cat.categories)


def test_archetypes_chosen_by_the_elbow_read_back_their_summary_as_written(tmp_path):
    """n_archetypes="auto" wrote uns["archetypes"]["elbow"]["stopped"] as a numpy bool
    (``n_archetypes < ks[-1]``), which an .h5ad file reads back as a Python bool: the summary
    read back differed in type from the one written."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=40, n_archetypes=2, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    arch = dv.model.Archetypes(mix, n_archetypes="auto", max_archetypes=3, min_spots=1)
    arch.train(**TRAIN)
    with warnings.catch_warnings():  # a one-epoch fit: whatever it says of its archetypes
        warnings.simplefilter("ignore", UserWarning)
        arch.write_to_adata(n_anchors=3)
    elbow = mix.uns["archetypes"]["elbow"]
    assert type(elbow["stopped"]) is bool and type(elbow["chosen"]) is int
    mix.write_h5ad(tmp_path / "mix.h5ad")
    _equal(dict(mix.uns), dict(ad.read_h5ad(tmp_path / "mix.h5ad").uns), "uns")


def test_sampled_cells_hold_the_categories_drawn_in_every_column(written):
    """sample dropped the clusters and labels no cell was drawn from but kept every condition
    of the model: sample(n, condition="stim") held a 'ctrl' category without cells, so that
    scanpy's rank_genes_groups(groupby="condition") of sampled cells failed and legends showed
    an empty entry."""
    model, real = written["cgmdvae.model"], written["cgmdvae"]
    stim = model.sample(12, condition="stim", seed=0)
    drawn = model.sample(60, seed=0)
    for cells in (stim, drawn):
        for key in ("cluster", "cell_type", "condition"):
            counts = cells.obs[key].value_counts(sort=False)
            assert (counts > 0).all(), (key, counts.to_dict())
            order = list(real.obs[key].cat.categories) if key != "cluster" else None
            if order is not None:  # the model's order, of the categories drawn
                assert list(cells.obs[key].cat.categories) == [c for c in order if c in counts]
    assert list(stim.obs["condition"].cat.categories) == ["stim"]
    sc.pp.log1p(drawn)
    sc.tl.rank_genes_groups(drawn, groupby="condition")  # refused an empty category
    both = ad.concat([real, stim], index_unique="-")  # concatenated with the real cells
    assert list(both.obs["condition"].cat.categories) == list(real.obs["condition"].cat.categories)
