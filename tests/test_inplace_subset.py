"""A model's own AnnData subset in place after training (sc.pp.filter_cells): what the fit
recorded by cell position is not read off other cells."""

import numpy as np
import pytest
import scanpy as sc

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}

pytestmark = pytest.mark.filterwarnings("ignore::deltavae.train.NotConvergedWarning")


def test_typicality_after_the_models_cells_were_subset_in_place_is_not_read_off_other_cells():
    """The typicality record is scored at the first predict_labels, at the positions of the
    training cells: after sc.pp.filter_cells on the model's AnnData they named other cells or
    ran past its end ("indices reach cell 199", of indices the user never passed)."""
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["label"] = adata.obs["cluster"].astype(str).where(np.arange(200) % 2 == 0, "u")
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key="condition", labels_key="label", unlabeled_category="u"
    )
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    sc.pp.filter_cells(adata, min_counts=np.median(np.asarray(adata.X.sum(1)).ravel()))
    with pytest.warns(UserWarning, match="subset in place since .* typicality is NaN"):
        labels = model.predict_labels()
    assert len(labels) == adata.n_obs and labels["typicality"].isna().all()
    assert labels["label"].isin(["0", "1", "2"]).all()


def _trained_on_a_split():
    """A CGMDVAE of 200 cells trained on a split whose test cells are 160-199, its AnnData and
    a copy of its control cells."""
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    cells = np.arange(200)
    split = {"external_indexing": [cells[:140], cells[140:160], cells[160:]]}
    model.train(max_epochs=2, datasplitter_kwargs=split, **TRAIN)
    return adata, model, adata[adata.obs["condition"] == "ctrl"].copy()


def test_observed_responses_after_the_models_cells_were_subset_in_place_say_so():
    """translate's default averages in the responses observed in the model's training cells,
    and nearest_response and latent_shift read them too: after adata._inplace_subset_obs they
    read the cells left without a word (the positions of the test split, cells 160-199, ran
    past the end of the 100 left: "index 160 is out of bounds"). Each says so, as
    predict_labels' typicality does; response_weight=0, which reads no training cell, does
    not."""
    adata, model, ctrl = _trained_on_a_split()
    adata._inplace_subset_obs(np.arange(200) < 100)
    told = r"holds 100 cells, 200 when it was trained: it was subset in place .* 100 cells left"
    with pytest.warns(UserWarning, match=told + r".*response_weight=0.*model.adata ="):
        pred = model.translate(ctrl, "stim", seed=0)
    assert pred.n_obs == ctrl.n_obs and pred.uns["response_weight"] == 0.5
    for method in ("nearest_response", "latent_shift"):
        with pytest.warns(UserWarning, match=rf"{told}.*Predict before subsetting"):
            model.predict_perturbation(ctrl, "stim", method=method)
    alone = model.translate(ctrl, "stim", response_weight=0, seed=0)  # reads no training cell
    assert np.isfinite(alone.X).all()


def test_other_cells_set_as_the_models_adata_are_not_read_at_its_splits_positions():
    """model.adata = adata[:100] kept the split of the 200 cells it trained on: translate and
    nearest_response read its test split's positions on the 100 ("index 160 is out of bounds
    for axis 0 with size 100"). The setter forgets a split of other cells, as load does; the
    training cells set back keep it."""
    adata, model, ctrl = _trained_on_a_split()
    model.adata = adata
    assert list(model.test_indices) == list(range(160, 200))  # its own cells: kept
    model.adata = adata[:100]
    assert model.train_indices is None and model.test_indices is None
    assert model.translate(ctrl, "stim", seed=0).uns["response_weight"] == 0.5
    pred = model.predict_perturbation(ctrl, "stim", method="nearest_response")
    assert np.isfinite(pred.X).all()


def test_a_model_loaded_onto_its_training_cells_says_they_were_subset_in_place_since(tmp_path):
    """The record of the fit's cells was the fitted model's alone: loaded onto the cells it
    trained on (its split kept), then subset in place, translate read the cells left without
    a word."""
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    model.save(tmp_path / "m")
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata)
    assert loaded.train_indices is not None  # the split's cells: kept
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    adata._inplace_subset_obs(np.arange(200) < 120)
    with pytest.warns(UserWarning, match=r"holds 120 cells, 200 when it was trained"):
        loaded.translate(ctrl, "stim", seed=0)
