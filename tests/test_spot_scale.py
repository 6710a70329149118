"""Spot models at scale: NMFDeconv and Archetypes trained from backed files, new spots mapped
without refitting, results written into the file in blocks of rows."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

import deltavae as dv
from deltavae.metrics import deconvolution_scores, matched_profile_correlation
from deltavae.model import _backed

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
#: Labelled cells with known types, and how spots are summed from them.
CELLS = {"n_cells": 600, "n_genes": 80, "n_clusters": 4, "n_conditions": 1, "seed": 1}
SPOTS = {"labels_key": "cluster", "cells_per_spot": (2, 8)}


@pytest.fixture(scope="module")
def cells():
    return dv.datasets.synthetic_counts(**CELLS)


@pytest.fixture(scope="module")
def split(cells):
    """200 spots with their true proportions, and the held-out reference."""
    return dv.datasets.pseudo_spots(cells, n_spots=200, seed=3, **SPOTS)


@pytest.fixture(scope="module")
def spots_files(split, tmp_path_factory):
    """The spots as an .h5ad file and a zarr store (sparse X)."""
    spots, _ = split
    folder = tmp_path_factory.mktemp("spots")
    on_disk = spots.copy()
    del on_disk.uns["pseudo_spots"]  # its sparse membership matrix is not needed here
    on_disk.X = sparse.csr_matrix(on_disk.X)
    on_disk.write_h5ad(folder / "spots.h5ad")
    with ad.settings.override(zarr_write_format=3):
        on_disk.write_zarr(folder / "spots.zarr")
    return folder / "spots.h5ad", folder / "spots.zarr"


def _deconv(spots, ref, epochs=5, batch_size=64, **kwargs):
    scvi.settings.seed = 0
    model = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster", **kwargs)
    model.train(max_epochs=epochs, batch_size=batch_size, **TRAIN)
    return model


@pytest.mark.parametrize(
    ("inference", "store"), [("amortized", "h5ad"), ("amortized", "zarr"), ("per_spot", "h5ad")]
)
def test_nmfdeconv_backed_gives_the_in_memory_proportions(split, spots_files, inference, store):
    _, ref = split
    path = spots_files[0] if store == "h5ad" else spots_files[1]
    backed = dv.read_lazy(path)
    assert not sparse.issparse(backed.X) and not isinstance(backed.X, np.ndarray)
    on_disk = _deconv(backed, ref, inference=inference)
    in_memory = _deconv(ad.read_h5ad(spots_files[0]), ref, inference=inference)
    # Same seed, same minibatches in file order: the same numbers up to float32 summation.
    np.testing.assert_allclose(
        on_disk.history["elbo_train"].to_numpy(float),
        in_memory.history["elbo_train"].to_numpy(float),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        on_disk.get_proportions().to_numpy(), in_memory.get_proportions().to_numpy(), atol=1e-5
    )


def test_new_spots_map_without_refitting(cells, split):
    spots, ref = split
    model = _deconv(spots.copy(), ref, epochs=50, batch_size=50)  # 200 steps
    before = model.get_proportions()
    # Other spots summed from the same kind of cells, never seen in training.
    new, _ = dv.datasets.pseudo_spots(cells, n_spots=120, seed=9, **SPOTS)
    mapped = model.get_proportions(adata=new)
    assert mapped.index.equals(new.obs_names) and len(model.history["elbo_train"]) == 50
    scores = deconvolution_scores(new.obsm["proportions_true"], mapped)
    assert scores["pcc"].min() > 0.9, scores
    pd.testing.assert_frame_equal(model.get_proportions(), before)  # nothing was refitted
    keys = model.write_to_adata(new)
    np.testing.assert_allclose(new.obsm["proportions"].to_numpy(), mapped.to_numpy())
    assert keys == ["obsm/proportions", "obs/cell_abundance"]
    assert np.corrcoef(new.obs["cell_abundance"], new.obs["n_cells"])[0, 1] > 0.8


def test_per_spot_inference_refuses_what_it_cannot_do(cells, split):
    spots, ref = split
    model = _deconv(spots.copy(), ref, epochs=2, inference="per_spot")
    new, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=20, seed=9)
    new.obs_names = "new_" + new.obs_names
    with pytest.raises(ValueError, match="spots only.*has 20 spots, 20 of them not.*amort"):
        model.get_proportions(adata=new)
    some = spots[[5, 1, 3]]  # some of the training spots: theirs, by name
    pd.testing.assert_frame_equal(
        model.get_proportions(adata=some), model.get_proportions().iloc[[5, 1, 3]]
    )
    # The training spots in another order are the same spots: matched by name.
    reversed_spots = spots[::-1].copy()
    model.write_to_adata(reversed_spots)
    expected = model.get_proportions().loc[reversed_spots.obs_names]
    pd.testing.assert_frame_equal(reversed_spots.obsm["proportions"], expected)
    np.testing.assert_allclose(
        reversed_spots.obs["cell_abundance"], model.get_abundance()[reversed_spots.obs_names]
    )
    with pytest.raises(ValueError, match="every spot must train.*train_size=0.9"):
        model.train(max_epochs=1, train_size=0.9, **TRAIN)
    with pytest.raises(ValueError, match=r"train_size must lie in \(0, 1\].*only train_size=1.0"):
        model.train(max_epochs=1, train_size=0, **TRAIN)
    # Early stopping needs held-out spots: refused here, not sent on to ask for train_size < 1.
    with pytest.raises(ValueError, match="none is left to validate; got early_stopping"):
        model.train(max_epochs=1, early_stopping=True, **TRAIN)
    plain = spots.copy()
    dv.model.NMFDeconv.setup_anndata(plain)
    with pytest.raises(ValueError, match="spot_index=True"):
        dv.model.NMFDeconv(plain, n_components=3, inference="per_spot")
    with pytest.raises(ValueError, match="inference must be one of"):
        dv.model.NMFDeconv(plain, n_components=3, inference="both")
    with pytest.raises(
        ValueError, match="prior_concentration must be a finite number > 0; got nan"
    ):
        dv.model.NMFDeconv(plain, n_components=3, prior_concentration=float("nan"))
    # More factors than the spots read or the genes: scikit-learn's "init = 'nndsvda' can
    # only be used when n_components <= min(n_samples, n_features)".
    refusal = r"n_components=4 is more factors .* \(start_spots=3 of the 200\).*start_spots=4 or"
    with pytest.raises(ValueError, match=refusal):
        dv.model.NMFDeconv(plain, n_components=4, start_spots=3)
    narrow = plain[:, :2].copy()
    dv.model.NMFDeconv.setup_anndata(narrow)
    with pytest.raises(ValueError, match="200 spots x 2 genes: at most 2"):
        dv.model.NMFDeconv(narrow, n_components=3)


def test_amortized_model_set_up_with_spot_index_maps_new_spots(cells, split):
    spots, ref = split
    own = spots.copy()
    dv.model.NMFDeconv.setup_anndata(own, spot_index=True)
    sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    model = dv.model.NMFDeconv(own, signatures=sig)  # every gene of both: no "share only"
    model.train(max_epochs=2, batch_size=100, **TRAIN)
    new, _ = dv.datasets.pseudo_spots(cells, n_spots=10, seed=9, **SPOTS)
    columns = list(new.obs.columns)
    mapped = model.get_proportions(adata=new)  # the encoder never reads the spot index
    assert mapped.index.equals(new.obs_names) and list(new.obs.columns) == columns
    np.testing.assert_allclose(mapped.sum(axis=1), 1.0, rtol=1e-6)


def test_amortized_validation_split(split):
    spots, ref = split
    scvi.settings.seed = 0
    model = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    model.train(max_epochs=4, train_size=0.8, batch_size=80, **TRAIN)
    elbo = model.history["elbo_validation"].to_numpy(float).ravel()
    assert len(elbo) == 4 and np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    assert model.get_proportions().shape == (200, 4)  # held-out spots get proportions too


def test_results_are_written_into_the_file_in_blocks(split, spots_files, tmp_path, monkeypatch):
    _, ref = split
    model = _deconv(dv.read_lazy(spots_files[0]), ref, epochs=2)
    expected = model.get_proportions()
    path = tmp_path / "results.h5ad"  # a copy of the spots, opened for writing
    path.write_bytes(spots_files[0].read_bytes())
    monkeypatch.setattr(_backed, "_ROWS_PER_WRITE", 64)  # 200 spots: 4 blocks
    writable = ad.read_h5ad(path, backed="r+")
    assert model.write_to_adata(writable) == ["obsm/proportions", "obs/cell_abundance"]
    writable.file.close()
    saved = ad.read_h5ad(path)
    np.testing.assert_allclose(saved.obsm["proportions"], expected.to_numpy(), atol=1e-6)
    assert np.isfinite(saved.obs["cell_abundance"]).all()
    assert "_indices" not in saved.obs  # amortised: no spot index is registered


def test_archetypes_train_backed_on_a_candidate_set(spots_files, tmp_path):
    mix = dv.datasets.convex_mixtures(n_spots=300, n_genes=60, n_archetypes=3, n_markers=8, seed=0)
    path = tmp_path / "mix.h5ad"
    mix.write_h5ad(path)
    fits = {}
    for name, adata in (("backed", dv.read_lazy(path)), ("memory", ad.read_h5ad(path))):
        scvi.settings.seed = 0
        dv.model.Archetypes.setup_anndata(adata)
        model = dv.model.Archetypes(adata, n_archetypes=3, max_candidates=80)
        model.train(max_epochs=10, batch_size=100, **TRAIN)
        fits[name] = model
    backed, memory = fits["backed"], fits["memory"]
    # 80 k-means++ candidates out of a pool of all 300 spots; the same ones either way.
    assert len(backed.candidate_rows_) == 80 and backed.module.B_logits.shape == (3, 80)
    np.testing.assert_array_equal(backed.candidate_rows_, memory.candidate_rows_)
    np.testing.assert_allclose(
        backed.get_archetype_weights().to_numpy(),
        memory.get_archetype_weights().to_numpy(),
        atol=1e-5,
    )
    profiles = backed.get_archetype_profiles().to_numpy().T
    matched = matched_profile_correlation(mix.varm["profiles_true"].T, profiles)
    assert matched["correlation"].min() > 0.9, matched


def test_candidate_spots_are_read_as_float32_without_float64_copies():
    """Archetypes' pool of candidate spots (up to 10,000 spots by every gene) was read dense
    in float64, cast to float32 and concatenated: 4 times the pool at the peak, 2.9 GB for
    18,000 genes. The pool is the same."""
    import tracemalloc

    spots = dv.datasets.synthetic_counts(
        n_cells=2000, n_genes=400, n_conditions=1, seed=0, library_size=100
    )
    spots.X = sparse.csr_matrix(spots.X, dtype=np.float32)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=3, max_candidates=100)
    tracemalloc.start()
    try:
        pool = model._read_rows(np.arange(spots.n_obs), dtype=np.float32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pool.dtype == np.float32
    assert peak < 1.5 * pool.nbytes
    np.testing.assert_array_equal(pool, spots.X.toarray())
