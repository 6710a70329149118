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
