"""Every model's write_to_adata writes into a backed file (model/_backed.py, writes_backed).

The writing itself is tested on a backed .h5ad in tests/test_scale.py; here, that no model
class misses the decorator.
"""

import pytest
from _stores import read_store

import deltavae as dv


@pytest.mark.parametrize("name", dv.model.__all__)
def test_every_model_decorates_its_write_to_adata(name):
    cls = getattr(dv.model, name)
    assert "write_to_adata" in vars(cls), f"{name} has no write_to_adata of its own"
    assert getattr(cls.write_to_adata, "writes_backed", False), f"{name} lacks @writes_backed"


def test_write_into_a_file_anndata_closed(tmp_path):
    """SpatialImputer.from_reference on spots opened backed="r+" read them with anndata's
    to_memory, which closes their file: write_to_adata(spots) then failed with h5py's
    'Unable to synchronously open object'."""
    import anndata as ad

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=80, n_clusters=2, seed=0)
    data.obs["cluster"] = data.obs["cluster"].astype(str)
    data[60:, :60].copy().write_h5ad(tmp_path / "spots.h5ad")
    spots = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r+")
    imputer = dv.model.SpatialImputer.from_reference(
        spots, reference=data[:60].copy(), labels_key="cluster", profiles="type"
    )
    assert spots.file.is_open  # deltavae reads the spots without closing their file
    imputer.train(max_epochs=2, enable_progress_bar=False, enable_model_summary=False)
    keys = ["obsm/imputed", "obsm/proportions", "obs/cell_abundance"]
    assert imputer.write_to_adata(spots) == keys
    spots.file.close()
    back = ad.read_h5ad(tmp_path / "spots.h5ad")
    assert back.obsm["imputed"].shape == (60, 20) and back.obsm["proportions"].shape == (60, 2)
    assert back.obs["cell_abundance"].gt(0).all()


def test_reading_leaves_the_users_backed_file_open(tmp_path):
    """anndata's to_memory closes a backed AnnData's file (also the file of the AnnData a view
    views): reading a subset's latent, cells in another order, or a backed reference's
    signatures closed the user's file: adata.file["X"] failed, "X" in adata.file was False,
    and training again said the file was closed."""
    import anndata as ad

    data = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    data.obs["cluster"] = data.obs["cluster"].astype(str)
    data.write_h5ad(tmp_path / "cells.h5ad")
    cells = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    held = cells.file["X"]  # a handle the user keeps: it stays readable
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    model.get_latent_representation(cells[:10])
    model.get_latent_representation(indices=[5, 1, 2])
    model.differential_expression(groupby="cluster")
    dv.model.NMFDeconv.signatures_from_reference(cells[:30], "cluster")
    assert cells.file.is_open and "X" in cells.file
    assert held["indptr"].shape == (61,)
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    cells.file.close()
    dv.model.NMFDeconv.signatures_from_reference(cells, "cluster")  # found closed: stays so
    assert not cells.file.is_open


def test_imputer_from_and_onto_a_subset_of_backed_spots(tmp_path):
    """SpatialImputer.from_reference (and load) on some spots of a backed file, spots[mask],
    failed with anndata's "you cannot make a view of a view" when it took the shared genes."""
    import anndata as ad

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=80, n_clusters=2, seed=0)
    data.obs["cluster"] = data.obs["cluster"].astype(str)
    data[60:, :60].copy().write_h5ad(tmp_path / "spots.h5ad")
    spots = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    imputer = dv.model.SpatialImputer.from_reference(
        spots[:40], reference=data[:60].copy(), labels_key="cluster", profiles="type"
    )
    imputer.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    imputer.save(tmp_path / "imputer")
    loaded = dv.model.SpatialImputer.load(tmp_path / "imputer", adata=spots[:40])
    assert loaded.adata.n_obs == 40 and spots.file.is_open


@pytest.mark.parametrize("store", ["cells.h5ad", "cells.zarr"])
def test_results_leave_the_files_other_obs_columns_as_they_were(tmp_path, store):
    """obs was written whole: a column deleted, renamed or added in memory only (a scratch
    column, categories renamed for a plot) was deleted, renamed or added in the file too."""
    import anndata as ad
    import numpy as np

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=20, n_clusters=2, seed=0)
    path = tmp_path / store
    data.write_h5ad(path) if store.endswith(".h5ad") else data.write_zarr(path)
    adata = read_store(path)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    del adata.obs["library_size"]
    adata.obs["scratch"] = 1.0
    adata.obs["condition"] = adata.obs["condition"].cat.rename_categories(["a", "b"])
    if adata.isbacked:
        adata.file.close()
        adata.file.open(filemode="r+")
        keys = model.write_to_adata()
        adata.file.close()
    else:
        with pytest.warns(UserWarning, match="in memory only"):
            keys = model.write_to_adata()
        dv.write_results_to_store(adata, keys, path)
    stored = ad.read_h5ad(path) if store.endswith(".h5ad") else ad.read_zarr(path)
    assert list(stored.obs.columns) == [*data.obs.columns, "cgmdvae_cluster"]
    assert list(stored.obs["condition"].cat.categories) == ["ctrl", "stim"]
    np.testing.assert_array_equal(stored.obs["library_size"], data.obs["library_size"])
    np.testing.assert_array_equal(stored.obs["cgmdvae_cluster"], adata.obs["cgmdvae_cluster"])


def test_results_go_into_a_file_written_without_obsm_or_uns(tmp_path):
    """An .h5ad without obsm or uns groups (other writers, older anndata: read as empty)
    failed with h5py's "object 'obsm' doesn't exist" when results were written into it."""
    import anndata as ad
    import h5py
    import numpy as np

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=20, n_clusters=2, seed=0)
    data.write_h5ad(tmp_path / "cells.h5ad")
    with h5py.File(tmp_path / "cells.h5ad", "r+") as f:
        del f["obsm"], f["uns"]
    adata = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    z = model.get_latent_representation()
    adata.file.close()
    adata.file.open(filemode="r+")
    model.write_to_adata()
    adata.file.close()
    stored = ad.read_h5ad(tmp_path / "cells.h5ad")
    np.testing.assert_allclose(stored.obsm["X_cgmdvae"], z, atol=1e-6)
    assert list(stored.uns["cgmdvae"]["cluster_names"]) == model.cluster_names


def test_a_highly_variable_gene_model_writes_into_the_whole_file(tmp_path):
    """The whole atlas opened backed="r+" for a model of its highly variable genes: refused
    ("genes it does not know"), and the gene view that advised was refused with advice to
    pass the whole: a circle. Its model genes are read into memory and the results written
    into the file."""
    import anndata as ad
    import numpy as np

    data = dv.datasets.synthetic_counts(n_cells=60, n_genes=30, n_clusters=2, seed=0)
    data.layers.pop("counts", None)
    data.write_h5ad(tmp_path / "whole.h5ad")
    hvg = data[:, :20].copy()
    dv.model.ZINBVAE.setup_anndata(hvg)
    model = dv.model.ZINBVAE(hvg, n_latent=3, n_hidden=8)
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    whole = ad.read_h5ad(tmp_path / "whole.h5ad", backed="r+")
    assert model.write_to_adata(whole) == ["obsm/X_zinbvae"]
    assert whole.file.is_open and whole.n_vars == 30
    whole.file.close()
    written = ad.read_h5ad(tmp_path / "whole.h5ad").obsm["X_zinbvae"]
    np.testing.assert_allclose(written, model.get_latent_representation(), atol=1e-6)


def test_results_are_refused_for_a_file_rewritten_with_other_spots(tmp_path):
    """SpatialImputer reads a copy of its spots, so a backed spots file rewritten at the same
    path (spots in another order) after from_reference was not noticed: write_to_adata wrote
    the results row by row into the new file, proportions indexed by the old spots' names,
    and the file could no longer be read ('value.index does not match parent's obs names')."""
    import anndata as ad

    data = dv.datasets.synthetic_counts(n_cells=120, n_genes=80, n_clusters=2, seed=0)
    data.obs["cluster"] = data.obs["cluster"].astype(str)
    path = tmp_path / "spots.h5ad"
    data[60:, :60].copy().write_h5ad(path)
    spots = ad.read_h5ad(path, backed="r")
    imputer = dv.model.SpatialImputer.from_reference(
        spots, reference=data[:60].copy(), labels_key="cluster", profiles="type"
    )
    imputer.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    spots.file.close()
    data[60:, :60][::-1].copy().write_h5ad(path)  # the same spots, in reverse
    spots.file.open(filemode="r+")
    with pytest.raises(ValueError, match=r"in another order .*: it was rewritten since"):
        imputer.write_to_adata()
    spots.file.close()
    back = ad.read_h5ad(path)  # readable, and untouched
    assert "proportions" not in back.obsm and back.obs_names[0] == data.obs_names[-1]


def test_results_to_its_own_open_file_rewritten_since_are_refused(tmp_path):
    """write_results_to_store into the file of a backed AnnData whose file is open skipped
    the check that the file holds its cells in its order: written over with the cells in
    reverse, cell_0's result went to the row of cell_59, in silence."""
    import anndata as ad
    import numpy as np

    data = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    cells = ad.read_h5ad(path, backed="r")
    cells.obsm["result"] = np.arange(60.0)[:, None]
    cells.file.close()
    data[::-1].copy().write_h5ad(path)
    cells.file.open()
    with pytest.raises(ValueError, match=r"in another order .*: it was rewritten since"):
        dv.write_results_to_store(cells, ["obsm/result"], path)
    cells.file.close()
    assert "result" not in ad.read_h5ad(path).obsm


def test_results_are_refused_for_a_file_whose_anndata_was_renamed_in_memory(tmp_path):
    """obs_names of a backed AnnData changed in memory only: NMFDeconv's proportions, a table
    indexed by the new names, went into the file under the old ones, which anndata then
    refused to read ('value.index does not match parent's obs names')."""
    import anndata as ad

    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=2, seed=0)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=30, seed=3)
    path = tmp_path / "spots.h5ad"
    spots.write_h5ad(path)
    spots = ad.read_h5ad(path, backed="r")
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    spots.file.close()
    spots.file.open(filemode="r+")
    spots.obs_names = [f"renamed_{i}" for i in range(spots.n_obs)]
    with pytest.raises(ValueError, match=r"obs_names were changed in memory only.*to_memory"):
        model.write_to_adata(spots)
    spots.file.close()
    assert "proportions" not in ad.read_h5ad(path).obsm  # readable, untouched


def test_names_made_unique_in_memory_only_are_told_how_to_reach_the_file(tmp_path):
    """Spot models refuse repeated spot names ("make them unique (adata.obs_names_make_
    unique())"); done on a backed AnnData, writing into its file was then refused as names
    'changed in memory only', with advice to reopen the file: whose names repeat."""
    import anndata as ad

    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=2, seed=0)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=30, seed=3)
    spots.obs_names = [f"s{i % 10}" for i in range(spots.n_obs)]
    path = tmp_path / "spots.h5ad"
    with pytest.warns(UserWarning, match="not unique"):
        spots.write_h5ad(path)
        spots = ad.read_h5ad(path, backed="r")
    spots.obs_names_make_unique()
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    model.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    spots.file.close()
    spots.file.open(filemode="r+")
    with pytest.raises(ValueError, match=r"made unique in memory only.*repeats some \('s0'"):
        model.write_to_adata(spots)
    spots.file.close()


def test_results_for_a_store_whose_names_were_made_unique_in_memory_say_so(tmp_path):
    """write_results_to_store said "Write into the file adata was read from", which it was."""
    import anndata as ad
    import numpy as np
    from _stores import write_store

    data = dv.datasets.synthetic_counts(n_cells=30, n_genes=10, n_clusters=2, seed=0)
    data.obs_names = [f"c{i % 10}" for i in range(30)]
    with pytest.warns(UserWarning, match="not unique"):
        path = write_store(data, tmp_path / "cells.zarr")
        lazy = dv.read_lazy(path)
    lazy.obs_names_make_unique()
    lazy.obsm["result"] = np.ones((30, 2))
    with pytest.raises(ValueError, match=r"made unique in memory only: '.*cells.zarr' repeats"):
        dv.write_results_to_store(lazy, ["obsm/result"], path)
    with pytest.warns(UserWarning, match="not unique"):
        assert "result" not in ad.read_zarr(path).obsm
