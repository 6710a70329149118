"""Tests for deltavae.datasets: embedded data, shared-folder loaders, synthetic generators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

import deltavae as dv
from deltavae import datasets
from deltavae.metrics import ari

PBMC_CELL_TYPES = {
    "Naive CD4 T": 697,
    "Memory CD4 T": 483,
    "CD14+ Mono": 480,
    "B": 344,
    "CD8 T": 271,
    "FCGR3A+ Mono": 162,
    "NK": 155,
    "DC": 32,
    "Platelet": 14,
}
KANG_CELL_TYPES = {
    "B cells": 298,
    "CD14+ Monocytes": 400,
    "CD4 T cells": 400,
    "CD8 T cells": 209,
    "FCGR3A+ Monocytes": 249,
}


def _assert_raw_counts(adata):
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    data = adata.X.data
    assert data.size > 0
    assert data.min() >= 0
    np.testing.assert_array_equal(data, np.round(data))


def _load_or_skip(loader, *args, **kwargs):
    try:
        return loader(*args, **kwargs)
    except FileNotFoundError as err:
        pytest.skip(f"shared data folder not available: {err}")


def _shared_file(relpath):
    """Path of a shared data file, found through the loaders' own search; skip if absent."""
    from deltavae.datasets._data_files import _resolve_file

    try:
        return _resolve_file(relpath, None)
    except FileNotFoundError as err:
        pytest.skip(f"shared data folder not available: {err}")


# ---------------------------------------------------------------------- embedded datasets


@pytest.fixture(scope="module")
def pbmc():
    return datasets.pbmc3k()


def test_pbmc3k_shape_counts_and_labels(pbmc):
    assert pbmc.shape == (2638, 13714)
    _assert_raw_counts(pbmc)
    assert pbmc.X.data.max() == 419
    assert pbmc.X.nnz == 2_238_732
    assert int(pbmc.X.sum()) == 6_254_880
    assert isinstance(pbmc.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert pbmc.obs["cell_type"].value_counts().to_dict() == PBMC_CELL_TYPES
    assert {"seurat_clusters", "nCount_RNA", "percent.mt"} <= set(pbmc.obs.columns)
    np.testing.assert_array_equal(np.asarray(pbmc.X.sum(axis=1)).ravel(), pbmc.obs["nCount_RNA"])
    assert pbmc.obsm["X_umap"].shape == (2638, 2)
    assert len(pbmc.uns) == 0


def test_pbmc3k_returns_a_fresh_object(pbmc):
    first = datasets.pbmc3k()
    first.X.data[:] = -1
    first.obs["cell_type"] = "changed"
    second = datasets.pbmc3k()
    assert second.X.data.min() >= 0
    assert second.obs["cell_type"].value_counts()["Naive CD4 T"] == 697
    assert second.obs_names.equals(pbmc.obs_names)


def test_kang_ifnb_shape_and_covariates():
    adata = datasets.kang_ifnb()
    assert adata.shape == (1556, 1267)
    _assert_raw_counts(adata)
    assert adata.X.data.max() == 1891
    assert adata.obs["condition"].value_counts().to_dict() == {"ctrl": 750, "stim": 806}
    assert adata.obs["cell_type"].value_counts().to_dict() == KANG_CELL_TYPES
    assert sorted(adata.obs["donor"].unique()) == ["101", "107"]
    assert set(adata.obs["sample"]) == {"ctrl101", "ctrl107", "stim101", "stim107"}
    for key in ("cell_type", "condition", "donor", "sample"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype), key
    assert {"SYMBOL", "ENSEMBL"} <= set(adata.var.columns)
    assert adata.var["ENSEMBL"].str.startswith("ENSG").all()


def test_embedded_files_are_small():
    from importlib.resources import files

    folder = files("deltavae.datasets") / "data"
    sizes = {name: (folder / name).stat().st_size for name in ("pbmc3k.h5ad", "kang_ifnb.h5ad")}
    assert sizes["pbmc3k.h5ad"] < 7e6
    assert sizes["kang_ifnb.h5ad"] < 2e6


# ---------------------------------------------------------------------- shared loaders


def test_kang_8donors():
    adata = _load_or_skip(datasets.kang_ifnb_8donors)
    assert adata.shape == (12261, 1287)
    _assert_raw_counts(adata)
    assert adata.obs["donor"].nunique() == 8
    assert adata.obs["cell_type"].value_counts()["CD4 T cells"] == 5154
    assert set(adata.obs["condition"]) == {"ctrl"}


def test_kang_scgen_condition_renamed():
    adata = _load_or_skip(datasets.kang_scgen)
    assert adata.shape == (1975, 6998)
    _assert_raw_counts(adata)
    assert adata.obs["condition"].value_counts().to_dict() == {"ctrl": 936, "stim": 1039}
    assert adata.obs["cell_type"].nunique() == 7
    assert "n_counts_all_genes" in adata.obs


def test_kang_harmony_partial_labels():
    adata = _load_or_skip(datasets.kang_harmony)
    assert adata.shape == (2000, 9015)
    _assert_raw_counts(adata)
    assert adata.obs["condition"].value_counts().to_dict() == {"ctrl": 1000, "stim": 1000}
    labelled = adata.obs["cell_type"].notna()
    assert labelled.sum() == 954
    assert set(adata.obs.loc[labelled, "condition"]) == {"ctrl"}


def test_mesc_condition_and_batch():
    adata = _load_or_skip(datasets.mesc)
    assert adata.shape == (200, 1047)
    _assert_raw_counts(adata)
    assert adata.obs["condition"].value_counts().to_dict() == {"a2i": 73, "lif": 67, "2i": 60}
    assert adata.obs["batch"].value_counts().to_dict() == {"batch2": 100, "batch3": 100}
    assert "culture_condition" not in adata.obs


def test_mob_spatial():
    adata = _load_or_skip(datasets.mob_spatial)
    assert adata.shape == (262, 15928)
    _assert_raw_counts(adata)
    assert adata.obsm["spatial"].shape == (262, 2)
    assert adata.obs["layer"].nunique() == 5
    assert adata.obs["layer"].isna().sum() == 2


@pytest.mark.parametrize(
    ("name", "spatial_shape", "reference_shape", "n_types"),
    [
        ("cerebellum", (100, 378), (475, 384), 19),
        ("hippocampus", (313, 276), (510, 307), 17),
        ("hypothalamus", (750, 134), (1308, 134), 14),
        ("lymphnode", (1000, 2000), (330, 10237), 11),
    ],
)
def test_spatial_reference_pairs(name, spatial_shape, reference_shape, n_types):
    spatial, reference = _load_or_skip(datasets.spatial_reference_pair, name)
    assert spatial.shape == spatial_shape
    assert reference.shape == reference_shape
    _assert_raw_counts(spatial)
    _assert_raw_counts(reference)
    assert spatial.obsm["spatial"].shape == (spatial_shape[0], 2)
    assert reference.obs["cell_type"].nunique() == n_types
    assert "nUMI_all_genes" in reference.obs
    assert len(spatial.var_names.intersection(reference.var_names)) > 100


def test_spatial_reference_pair_rejects_unknown_name():
    with pytest.raises(ValueError, match="'cortex'.*cerebellum"):
        datasets.spatial_reference_pair("cortex")
    # A list (as for the several names a benchmark loops over) failed: "unhashable type".
    with pytest.raises(ValueError, match=r"\['hippocampus'\].*cerebellum"):
        datasets.spatial_reference_pair(["hippocampus"])


@pytest.mark.parametrize(
    ("name", "file"), [("Hippocampus", "hippocampus"), ("Lymph_Node", "lymph")]
)
def test_spatial_reference_pair_names_are_read_in_any_case(name, file, tmp_path):
    """A name in another case ("Hippocampus") was refused as unknown while the error listed
    "hippocampus"; here it is looked for (an empty data_dir: the file is not found, by its name)."""
    with pytest.raises(FileNotFoundError, match=f"'{file}[a-z]*_visium_spatial.h5ad'"):
        datasets.spatial_reference_pair(name, data_dir=tmp_path)
    with pytest.raises(ValueError, match="'hipocampus'; did you mean 'hippocampus'"):
        datasets.spatial_reference_pair("hipocampus", data_dir=tmp_path)


def test_mnist_shape_range_and_labels():
    adata = _load_or_skip(datasets.mnist)
    assert adata.shape == (10000, 784)
    assert adata.X.dtype == np.float32
    assert adata.X.min() == 0.0 and adata.X.max() == 1.0
    counts = adata.obs["digit"].value_counts().reindex([str(d) for d in range(10)])
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    small = datasets.mnist(n=25)
    assert small.shape == (25, 784)
    np.testing.assert_array_equal(small.X, adata.X[:25])
    with pytest.raises(ValueError, match="n=0"):
        datasets.mnist(n=0)


def test_data_dir_as_file_folder_root_and_env(tmp_path, monkeypatch):
    path = _shared_file("mesc_kolodziejczyk2015/mesc_2batches_scmerge_example.h5ad")
    root = path.parent.parent
    for data_dir in (path, path.parent, root, str(root)):
        assert datasets.mesc(data_dir=data_dir).shape == (200, 1047)
    monkeypatch.setenv("DELTAVAE_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    assert datasets.mesc().shape == (200, 1047)


def test_data_variable_may_name_the_datasets_folder_and_kang_scgen_keeps_other_values(
    tmp_path, monkeypatch
):
    """$DELTAVAE_DATA set to the dataset's own folder (as data_dir takes it) was not looked
    in; kang_scgen made condition values other than control/stimulated NaN, silently."""
    folder = tmp_path / "mine"
    folder.mkdir()
    data = datasets.synthetic_counts(n_cells=6, n_genes=4, n_clusters=1, seed=0)
    data.obs["condition"] = ["control", "stimulated", "washout", "control", None, "washout"]
    data.write_h5ad(folder / "kang_ctrl_stim_scgen_valid_counts.h5ad")
    monkeypatch.setenv("DELTAVAE_DATA", str(folder))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"other than control/stimulated, \['washout'\], kept"):
        adata = datasets.kang_scgen()
    condition = adata.obs["condition"]
    assert list(condition.cat.categories) == ["ctrl", "stim", "washout"]
    assert condition.astype(str).tolist() == ["ctrl", "stim", "washout", "ctrl", "nan", "washout"]


def test_a_data_variable_pointing_nowhere_is_named(tmp_path, monkeypatch):
    """$DELTAVAE_DATA with a typo fell back to other folders without a word."""
    monkeypatch.setenv("DELTAVAE_DATA", str(tmp_path / "typo"))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"\$DELTAVAE_DATA is .*typo.*not a folder") as record:
        try:
            datasets.mesc()
        except FileNotFoundError:  # no shared/data above the checkout either
            pass
    assert [w.filename for w in record] == [__file__]  # not mesc's line in deltavae
    # A file (the dataset's own, as data_dir takes it): warned as "not a folder", then
    # another folder's file was read, or the file was listed among the folders looked in.
    (tmp_path / "counts.h5ad").write_text("x")
    monkeypatch.setenv("DELTAVAE_DATA", str(tmp_path / "counts.h5ad"))
    with pytest.raises(
        NotADirectoryError,
        match=r"\$DELTAVAE_DATA is '.*counts\.h5ad', a file; .* Set it to a folder, e\.g\. "
        r"'.*', or pass the file itself: data_dir='.*counts\.h5ad'\.",
    ):
        datasets.mesc()


def test_missing_data_dir_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        datasets.kang_scgen(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        datasets.mnist(data_dir=tmp_path)


def test_a_size_given_as_data_dir_is_named():
    """mnist(500), as synthetic_counts(500) takes its size first, said only Path's 'expected
    str, bytes or os.PathLike object, not int', naming no argument."""
    with pytest.raises(TypeError, match=r"^data_dir must be .* got 500\. .* pass n: mnist\(n=500"):
        datasets.mnist(500)
    with pytest.raises(TypeError, match=r"^data_dir must be a folder or file path .*, got 5\.$"):
        datasets.mesc(5)


def test_data_dir_as_another_loaders_file_is_refused(tmp_path):
    """mesc(data_dir=<the MOB file>) returned the MOB spots as if they were mESC cells."""
    other = tmp_path / "mob_rep_stdeconvolve.h5ad"
    datasets.synthetic_counts(n_cells=5, n_genes=4, n_clusters=1, seed=0).write_h5ad(other)
    with pytest.raises(ValueError, match=r"file of dv\.datasets\.mob_spatial\(\)"):
        datasets.mesc(data_dir=other)
    with pytest.raises(ValueError, match="spatial_reference_pair"):
        datasets.kang_scgen(data_dir=other.rename(tmp_path / "cerebellum_snrna_reference.h5ad"))
    pbmc = (tmp_path / "cerebellum_snrna_reference.h5ad").rename(
        tmp_path / "pbmc3k_seurat_counts.h5ad"
    )
    with pytest.raises(ValueError, match=r"file of dv\.datasets\.pbmc3k\(\)"):
        datasets.mob_spatial(data_dir=pbmc)
    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    with pytest.raises(OSError, match="notes.txt"):
        datasets.mesc(data_dir=notes)


# ---------------------------------------------------------------------- synthetic data


def test_synthetic_counts_structure():
    adata = datasets.synthetic_counts(n_cells=400, n_genes=120, n_clusters=4, seed=3)
    assert adata.shape == (400, 120)
    _assert_raw_counts(adata)
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert adata.obs["cluster"].cat.categories.tolist() == ["0", "1", "2", "3"]
    assert adata.obs["condition"].cat.categories.tolist() == ["ctrl", "stim"]
    assert (adata.obs["library_size"] > 0).all()
    truth = adata.uns["synthetic"]
    assert truth["expression"].shape == (4, 2, 120)
    np.testing.assert_allclose(truth["expression"].sum(axis=-1), 1.0)
    assert truth["condition_effect"].shape == (2, 4, 120)
    assert np.all(truth["condition_effect"][0] == 0)
    assert truth["marker_genes"].shape == (4, 15)
    assert (adata.var["marker_of"] != "none").sum() == 60
    assert datasets.synthetic_counts(n_cells=20, n_conditions=3).obs[
        "condition"
    ].cat.categories.tolist() == ["c0", "c1", "c2"]


def test_synthetic_counts_library_size_and_dropout():
    adata = datasets.synthetic_counts(n_cells=2000, n_genes=100, seed=0, dropout=0.0)
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    assert abs(totals.mean() / 1000.0 - 1) < 0.05
    assert np.corrcoef(totals, adata.obs["library_size"])[0, 1] > 0.8
    inflated = datasets.synthetic_counts(n_cells=2000, n_genes=100, seed=0, dropout=0.5)
    assert inflated.X.nnz < 0.6 * adata.X.nnz


def test_synthetic_counts_reproducible_and_seed_dependent():
    a = datasets.synthetic_counts(n_cells=200, n_genes=50, n_clusters=3, seed=7)
    b = datasets.synthetic_counts(n_cells=200, n_genes=50, n_clusters=3, seed=7)
    c = datasets.synthetic_counts(n_cells=200, n_genes=50, n_clusters=3, seed=8)
    assert (a.X != b.X).nnz == 0
    assert a.obs["cluster"].equals(b.obs["cluster"])
    assert (a.X != c.X).nnz > 0


def test_synthetic_counts_clusters_are_separable():
    adata = datasets.synthetic_counts(n_cells=1000, n_genes=200, n_clusters=5, seed=0)
    counts = adata.X.toarray()
    logged = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e3)
    pcs = PCA(n_components=10, random_state=0).fit_transform(logged)
    predicted = KMeans(n_clusters=5, n_init=5, random_state=0).fit_predict(pcs)
    assert ari(adata.obs["cluster"], predicted) > 0.9


def test_synthetic_counts_condition_effect_visible():
    adata = datasets.synthetic_counts(n_cells=2000, n_genes=100, seed=1, condition_fold=3.0)
    truth = adata.uns["synthetic"]
    genes = truth["condition_genes"][0]
    true_lfc = truth["condition_effect"][1, 0, genes]
    counts = adata.X.toarray()
    normalised = counts / counts.sum(axis=1, keepdims=True)
    stim = (adata.obs["condition"] == "stim").to_numpy()
    observed_lfc = np.log(normalised[stim].mean(0) + 1e-6) - np.log(
        normalised[~stim].mean(0) + 1e-6
    )
    assert np.all(np.sign(observed_lfc[genes]) == np.sign(true_lfc))
    unaffected = np.setdiff1d(np.arange(100), genes)
    assert np.abs(observed_lfc[genes]).mean() > 3 * np.abs(observed_lfc[unaffected]).mean()


def test_synthetic_counts_cluster_specific_effect():
    adata = datasets.synthetic_counts(n_clusters=3, seed=2, condition_specific=True)
    effect = adata.uns["synthetic"]["condition_effect"][1]
    assert not np.array_equal(effect[0], effect[1])
    shared = datasets.synthetic_counts(n_clusters=3, seed=2)
    shared_effect = shared.uns["synthetic"]["condition_effect"][1]
    np.testing.assert_array_equal(shared_effect[0], shared_effect[2])


def test_synthetic_counts_validation():
    with pytest.raises(ValueError, match="n_markers"):
        datasets.synthetic_counts(n_genes=10, n_clusters=5, n_markers=5)
    with pytest.raises(ValueError, match="dropout"):
        datasets.synthetic_counts(dropout=1.0)
    with pytest.raises(ValueError, match="n_cells"):
        datasets.synthetic_counts(n_cells=0)
    with pytest.raises(ValueError, match="cluster_weights"):
        datasets.synthetic_counts(n_clusters=3, cluster_weights=[1.0, 1.0])


def test_synthetic_clusters_no_cell_drew_are_said():
    """Very few cells kept clusters without cells as categories, in silence."""
    with pytest.warns(UserWarning, match=r"No cell of the 3 drew cluster '.*remove_unused"):
        adata = datasets.synthetic_counts(n_cells=3, n_genes=20, n_clusters=5, n_conditions=1)
    assert len(adata.obs["cluster"].cat.categories) == 5  # index uns['synthetic']'s rows
    weights = [1.0, 0.0]  # asked for: not said
    adata = datasets.synthetic_counts(n_cells=20, n_genes=20, n_clusters=2, cluster_weights=weights)
    assert adata.obs["cluster"].value_counts().tolist() == [20, 0]


def test_synthetic_outputs_save_to_h5ad(tmp_path):
    import anndata as ad

    adata = datasets.synthetic_counts(n_cells=50, n_genes=30, n_clusters=2, seed=0)
    adata.write_h5ad(tmp_path / "toy.h5ad")
    back = ad.read_h5ad(tmp_path / "toy.h5ad")
    np.testing.assert_array_equal(
        back.uns["synthetic"]["condition_effect"], adata.uns["synthetic"]["condition_effect"]
    )
    datasets.synthetic_blobs(n_cells=30, counts=True).write_h5ad(tmp_path / "blobs.h5ad")


def test_synthetic_blobs_gaussian():
    adata = datasets.synthetic_blobs(n_cells=600, n_features=16, n_clusters=5, seed=0)
    assert adata.shape == (600, 16)
    assert adata.X.dtype == np.float32
    centers = adata.uns["synthetic"]["centers"]
    gaps = np.linalg.norm(centers[:, None] - centers[None], axis=-1)[np.triu_indices(5, 1)]
    assert gaps.min() >= 4.0
    predicted = KMeans(n_clusters=5, n_init=5, random_state=0).fit_predict(adata.X)
    assert ari(adata.obs["cluster"], predicted) > 0.9
    shift = adata.uns["synthetic"]["condition_shift"]
    stim = (adata.obs["condition"] == "stim").to_numpy()
    residual = adata.X - centers[adata.obs["cluster"].cat.codes.to_numpy()]
    np.testing.assert_allclose(residual[stim].mean(0) - residual[~stim].mean(0), shift[1], atol=0.3)


def test_synthetic_blobs_counts_and_seed():
    adata = datasets.synthetic_blobs(n_cells=300, n_features=10, counts=True, seed=4)
    _assert_raw_counts(adata)
    assert adata.obsm["X_blob"].shape == (300, 10)
    same = datasets.synthetic_blobs(n_cells=300, n_features=10, counts=True, seed=4)
    other = datasets.synthetic_blobs(n_cells=300, n_features=10, counts=True, seed=5)
    assert (adata.X != same.X).nnz == 0
    assert (adata.X != other.X).nnz > 0
    nb = datasets.synthetic_blobs(n_cells=300, n_features=10, counts=True, dispersion=2.0)
    _assert_raw_counts(nb)


def test_pseudo_spots_refuse_log_normalized_cells():
    """Log-normalized cells were summed into spot 'counts' (and down-sampled into integers)."""
    import scanpy as sc

    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=2, seed=0)
    logged = cells.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    with pytest.raises(ValueError, match=r"reference\.X must hold raw counts .*layer='counts'"):
        dv.datasets.pseudo_spots(logged, "cluster", n_spots=10)
    spots, _ = dv.datasets.pseudo_spots(logged, "cluster", n_spots=10, layer="counts")
    assert spots.n_obs == 10


def test_generator_arguments_a_user_might_pass_are_read_or_named():
    """seed=None failed at the end (int(None) while writing uns); one number for a range
    failed inside ("'int' object is not iterable"); fractional cells per spot were truncated
    silently; a negative marker fold failed in numpy; repeated cell names made the recorded
    pool meaningless."""
    first = dv.datasets.synthetic_counts(n_cells=20, n_genes=30, n_clusters=2, seed=None)
    again = dv.datasets.synthetic_counts(
        n_cells=20, n_genes=30, n_clusters=2, seed=first.uns["synthetic"]["seed"]
    )
    np.testing.assert_array_equal(first.X.toarray(), again.X.toarray())
    cells = dv.datasets.synthetic_counts(n_cells=300, n_genes=60, n_clusters=3, seed=0)
    spots, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=20, cells_per_spot=4)
    assert set(spots.obs["n_cells"]) == {4}
    with pytest.raises(ValueError, match=r"cells_per_spot=\(2.9, 3.9\) must be .* whole"):
        dv.datasets.pseudo_spots(cells, "cluster", n_spots=20, cells_per_spot=(2.9, 3.9))
    mix = dv.datasets.convex_mixtures(n_spots=20, n_genes=30, n_archetypes=2, library_size=500)
    assert mix.n_obs == 20
    with pytest.raises(ValueError, match="marker_fold=-2 must be a finite number > 0"):
        dv.datasets.convex_mixtures(n_spots=20, n_genes=30, n_archetypes=2, marker_fold=-2)
    twins = cells.copy()
    twins.obs_names = ["x"] * twins.n_obs
    with pytest.raises(ValueError, match=r"repeats cell names \(e.g. \['x'\]\)"):
        dv.datasets.pseudo_spots(twins, "cluster", n_spots=20)


def test_pseudo_spots_keep_to_max_types_per_spot():
    """A type whose pool ran short handed its extra cells to absent types: up to 3 types in a
    spot asked to hold 1."""
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=20, n_clusters=4, seed=0, cluster_weights=[0.85, 0.1, 0.03, 0.02]
    )
    spots, _ = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=200, cells_per_spot=(5, 10), max_types_per_spot=1, seed=0
    )
    counts = np.asarray(spots.obsm["cell_counts"])
    assert ((counts > 0).sum(axis=1) == 1).all()
    np.testing.assert_array_equal(counts.sum(axis=1), spots.obs["n_cells"])
    # A short pool (5 cells of type 3 outside the reference) gives a smaller spot instead.
    assert counts[:, 3].max() == 5 and (spots.obs["n_cells"] == 5).any()


def test_generator_settings_that_are_not_numbers_are_named():
    """A setting of None or a string failed in numpy ("ufunc 'isfinite' not supported", "'<='
    not supported") without naming it; NaN cluster weights and an infinite library size
    failed inside numpy's sampling."""
    small = {"n_cells": 10, "n_genes": 10, "n_clusters": 2}
    for setting in ({"dispersion": None}, {"library_log_sd": "0.3"}, {"dropout": None}):
        (name,) = setting
        with pytest.raises(ValueError, match=f"^{name}="):
            datasets.synthetic_counts(**small, **setting)
    with pytest.raises(ValueError, match="cluster_weights"):
        datasets.synthetic_counts(**small, cluster_weights=[float("nan"), 1.0])
    with pytest.raises(ValueError, match="^concentration="):
        datasets.convex_mixtures(n_spots=5, n_genes=20, n_archetypes=2, concentration="1")
    with pytest.raises(ValueError, match="^library_size="):
        datasets.convex_mixtures(
            n_spots=5, n_genes=20, n_archetypes=2, n_markers=2, library_size=(1, np.inf)
        )
    with pytest.raises(ValueError, match="^condition_shift="):
        datasets.synthetic_blobs(n_cells=5, condition_shift="2")


@pytest.mark.parametrize(
    ("make", "switch"),
    [
        ("synthetic_counts", {"condition_specific": "False"}),
        ("synthetic_blobs", {"counts": "False"}),
        ("synthetic_blobs", {"counts": None}),
        ("pseudo_spots", {"grid": "no"}),
    ],
)
def test_generator_switches_given_as_text_are_named(make, switch):
    """A switch given as text was read as a truth value: synthetic_blobs(counts="False") drew
    counts, pseudo_spots(grid="no") laid the spots on a grid, synthetic_counts(
    condition_specific="False") drew cluster-specific effects (and recorded True)."""
    small = {
        "synthetic_counts": {"n_cells": 10, "n_genes": 10, "n_clusters": 2},
        "synthetic_blobs": {"n_cells": 10},
        "pseudo_spots": {"n_spots": 4},
    }[make]
    args = ()
    if make == "pseudo_spots":
        args = (datasets.synthetic_counts(n_cells=60, n_genes=10, n_clusters=2, seed=0), "cluster")
    ((name, value),) = switch.items()
    with pytest.raises(ValueError, match=rf"^{name} must be True or False, got {value!r}\.$"):
        getattr(datasets, make)(*args, **small, **switch)
    made = getattr(datasets, make)(*args, **small, **{name: np.bool_(False)})  # numpy's: taken
    assert "spatial" not in (made[0] if make == "pseudo_spots" else made).obsm


def test_pseudo_spots_on_a_grid_of_one_spot_and_bad_settings():
    """One spot on a grid failed in numpy ("Probabilities contain NaN": the abundance field of
    a 1 x 1 grid has no spread); a negative smoothness was taken, a string reference_fraction
    failed on '<'."""
    cells = datasets.synthetic_counts(n_cells=60, n_genes=10, n_clusters=2, seed=0)
    spots, _ = datasets.pseudo_spots(cells, "cluster", n_spots=1, grid=True)
    assert np.isclose(spots.obsm["proportions_true"].to_numpy().sum(), 1.0)
    with pytest.raises(ValueError, match="^smoothness=-1"):
        datasets.pseudo_spots(cells, "cluster", n_spots=4, grid=True, smoothness=-1)
    with pytest.raises(ValueError, match="^reference_fraction='0.5'"):
        datasets.pseudo_spots(cells, "cluster", n_spots=4, reference_fraction="0.5")


def test_loader_arguments_that_are_no_path_or_count_are_named_before_reading():
    """spatial_reference_pair('cerebellum', 5) said only Path's 'expected str, bytes or
    os.PathLike object, not int'; mnist(n=2.0) without the files said they were missing,
    and mnist(data_dir=<the labels file>) 'IDX magic number 2049'."""
    with pytest.raises(TypeError, match=r"^data_dir must be a folder or file path .*got 5\.$"):
        datasets.spatial_reference_pair("cerebellum", 5)
    with pytest.raises(ValueError, match=r"n=2\.0 must be an integer from 1"):
        datasets.mnist(data_dir="/nowhere", n=2.0)
    labels = _shared_file("mnist_t10k/t10k-images-idx3-ubyte.gz").parent
    assert datasets.mnist(data_dir=labels / "t10k-labels-idx1-ubyte.gz", n=3).shape == (3, 784)


def test_pseudo_spots_refuse_cell_types_named_alike():
    """Labels 1 and '1' (an object column) made two proportions_true columns both named '1',
    which every metric then refused as repeated column names."""
    cells = datasets.synthetic_counts(n_cells=40, n_genes=6, n_clusters=2, seed=0)
    cells.obs["mixed"] = [1 if i % 2 else "1" for i in range(cells.n_obs)]
    with pytest.raises(
        ValueError,
        match=r"different labels with the same text \(e\.g\. 1 and '1'\).*\.astype\(str\)",
    ):
        datasets.pseudo_spots(cells, "mixed", n_spots=3)
