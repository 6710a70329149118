"""A SpatialImputer reads its own copy of the spots given to from_reference (their shared
genes), and writes into the spots given. Read-outs without an AnnData read that copy: after
the user subset or reordered the spots in place, or replaced their data, they returned rows
of the spots as given (60 for 49 spots left; a latent array in the old order, silently
misaligned with spots.obs_names) and read the old data."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import deltavae as dv

TRAIN = {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def data():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=40, cells_per_spot=(2, 6), seed=3
    )
    return spots[:, :30].copy(), ref


def _imputer(data, design):
    spots, ref = data
    spots = spots.copy()
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=ref, labels_key="cluster", design=design
    )
    model.train(**TRAIN)
    return model, spots


@pytest.mark.parametrize("design", ["deconvolution", "latent"])
def test_read_outs_follow_spots_subset_and_reordered_in_place(data, design):
    model, spots = _imputer(data, design)
    imputed = model.impute()
    totals = np.asarray(spots.X.sum(axis=1)).ravel()
    sc.pp.filter_cells(spots, min_counts=np.sort(totals)[5] + 1)  # some spots left out
    spots._inplace_subset_obs(np.arange(spots.n_obs)[::-1])  # and the rest reordered
    kept = spots.obs_names
    assert 0 < len(kept) < len(imputed)
    now = model.impute()
    assert now.index.equals(kept)
    np.testing.assert_allclose(now.to_numpy(), imputed.loc[kept].to_numpy())
    if design == "latent":
        latent = model.get_latent_representation()
        whole = model.get_latent_representation(adata=model.adata)
        np.testing.assert_allclose(latent, whole[model.adata.obs_names.get_indexer(kept)])
    else:
        assert model.get_proportions().index.equals(kept)
        assert model.get_abundance().index.equals(kept)
    model.write_to_adata()
    assert spots.obsm["imputed"].index.equals(kept)


def test_read_outs_refuse_spots_whose_data_were_replaced(data):
    model, spots = _imputer(data, "latent")
    spots.X = spots.X[::-1].copy()  # other counts under the same names
    with pytest.raises(ValueError, match="hold other counts than it read"):
        model.get_latent_representation()
    with pytest.raises(ValueError, match="hold other counts than it read"):
        model.impute()


def test_training_after_the_spots_were_subset_in_place_says_it_fits_them_all(data):
    spots, ref = data
    spots = spots.copy()
    model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    spots._inplace_subset_obs(np.arange(spots.n_obs) % 4 != 0)
    with pytest.warns(UserWarning, match=r"subset in place since .* hold 30 of its 40 spots"):
        model.train(**TRAIN)
    assert model.get_proportions().index.equals(spots.obs_names)


def test_training_after_the_spots_were_reordered_or_made_sparse_says_nothing(data):
    from scipy import sparse

    spots, ref = data
    spots = spots.copy()
    model = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    spots._inplace_subset_obs(np.arange(spots.n_obs)[::-1])
    spots.X = sparse.csr_matrix(spots.X)  # the same counts, replaced
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*in place")
        model.train(**TRAIN)
    assert model.get_proportions().index.equals(spots.obs_names)


def test_archetype_weights_follow_counts_replaced_in_place():
    """Archetypes' weights of the training spots are kept for every result; after spots.X =
    other they were still the weights of the counts replaced, while the same counts in
    another AnnData gave others."""
    spots = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=3, merge_threshold=1.0, min_spots=1)
    model.train(max_epochs=3, enable_progress_bar=False, enable_model_summary=False)
    before = model.get_archetype_weights()
    spots.X = spots.X[::-1].copy()  # other counts under the same names
    now = model.get_archetype_weights()
    fresh = model.get_archetype_weights(spots.copy())  # the spots as they are, not cached
    assert not np.allclose(now.to_numpy(), before.to_numpy())
    np.testing.assert_allclose(now.to_numpy(), fresh.to_numpy())


def test_per_spot_proportions_of_counts_replaced_since_training_are_refused(data, tmp_path):
    """A per-spot NMFDeconv's proportions are parameters of the counts it trained on: after
    spots.X = other they were returned for the new counts without a word. Normalised and
    log-transformed in place, the same counts still read; trained again, the new ones."""
    spots, ref = data
    spots = spots.copy()
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot", n_markers=None
    )
    model.train(**TRAIN)
    fitted = model.get_proportions()
    model.save(tmp_path / "m")
    counts = spots.X.copy()
    sc.pp.normalize_total(spots)
    sc.pp.log1p(spots)
    np.testing.assert_allclose(model.get_proportions().to_numpy(), fitted.to_numpy())
    spots.X = counts[::-1].copy()  # other counts under the same names
    for read in (model.get_proportions, model.get_abundance, model.write_to_adata):
        with pytest.raises(ValueError, match="hold other counts than it read"):
            read()
    model.train(**TRAIN)  # fits the counts they hold now
    assert not np.allclose(model.get_proportions().to_numpy(), fitted.to_numpy())
    spots.X = counts
    loaded = dv.model.NMFDeconv.load(tmp_path / "m", spots)
    np.testing.assert_allclose(loaded.get_proportions().to_numpy(), fitted.to_numpy())


def test_per_spot_model_set_up_on_the_spots_refuses_counts_replaced_since_training(data):
    spots, ref = data
    spots = spots.copy()
    signatures = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    dv.model.NMFDeconv.setup_anndata(spots, spot_index=True)
    model = dv.model.NMFDeconv(spots, signatures=signatures, inference="per_spot")
    model.train(**TRAIN)
    fitted = model.get_proportions()
    counts = spots.X.copy()
    spots.X = counts[::-1].copy()
    with pytest.raises(ValueError, match="hold other counts than when it was trained"):
        model.get_proportions()
    spots.X = counts
    np.testing.assert_allclose(model.get_proportions().to_numpy(), fitted.to_numpy())


def test_a_per_spot_model_leaves_the_spots_obs_as_it_was(data, tmp_path):
    """from_reference(inference="per_spot") and its load wrote each spot's row,
    obs["_indices"], into the user's spots; the model keeps it in an obs of its own, writes
    its results into the spots, and trains on them as they are (subset in place: those left,
    each at its own row)."""
    spots, ref = data
    spots = spots.copy()
    columns = list(spots.obs.columns)
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot", n_markers=None
    )
    assert list(spots.obs.columns) == columns
    model.train(**TRAIN)
    fitted = model.get_proportions()
    model.write_to_adata()
    np.testing.assert_allclose(spots.obsm["proportions"].to_numpy(), fitted.to_numpy())
    model.save(tmp_path / "m")
    again = spots.copy()
    loaded = dv.model.NMFDeconv.load(tmp_path / "m", again)
    assert "_indices" not in again.obs
    np.testing.assert_allclose(loaded.get_proportions().to_numpy(), fitted.to_numpy())
    kept = spots.obs_names[::2]
    spots._inplace_subset_obs(np.arange(spots.n_obs)[::2][::-1])  # subset and reordered
    model.train(max_epochs=1, lr=1e-9, enable_progress_bar=False, enable_model_summary=False)
    now = model.get_proportions()
    assert now.index.equals(spots.obs_names) and model.adata.n_obs == len(kept)
    np.testing.assert_allclose(now.to_numpy(), fitted.loc[spots.obs_names].to_numpy(), atol=1e-6)


def test_per_spot_proportions_of_spots_named_by_numbers_keep_their_names(data):
    """The model's own AnnData (each spot's row in its obs) names spots by text; the read-outs
    named spots 0, 1, ... '0', '1', so spots.obs.join(proportions) matched none."""
    spots, ref = data
    spots = spots.copy()
    spots.obsm.clear()  # anndata reads no obsm table of text index under numbered spots
    spots.obs.index = pd.Index(np.arange(spots.n_obs))
    model = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot", n_markers=None
    )
    model.train(**TRAIN)
    assert model.get_proportions().index.equals(spots.obs_names)
    assert model.get_abundance().index.equals(spots.obs_names)
