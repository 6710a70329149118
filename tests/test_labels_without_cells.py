"""A label category no cell carries names a cluster that learns no labelled cell: cells
predicted as it are said to be a cluster given that name, not cells matched to the label."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scvi

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "train_size": 1.0}


def test_cells_predicted_as_a_label_no_cell_carries_are_warned():
    """pd.Categorical(labels, categories=every type) with no labelled cell of 'C' (pbmc3k,
    5% labelled, NK's cells unlabelled: 57 of 800 cells predicted 'DC', no DC labelled):
    setup said the label's cluster would "stay empty", training said nothing, and the
    cells came back as 'C' as if matched to it."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=30, n_clusters=3, seed=0)
    truth = adata.obs["cluster"].map({"0": "A", "1": "B", "2": "C"}).astype(str).to_numpy()
    labels = np.where((np.arange(150) % 5 == 0) & (truth != "C"), truth, "Unknown")
    adata.obs["type"] = pd.Categorical(labels, categories=["A", "B", "C", "Unknown"])
    with pytest.warns(UserWarning, match="no cell carries") as record:
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")
    assert not any("stay empty" in str(w.message) for w in record)  # they need not
    scvi.settings.seed = 0
    model = dv.model.CGMDVAE(adata, n_latent=4, n_latent_w=2, n_hidden=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=3, **TRAIN)
    predicted = model.predict()
    n_c = int((predicted == "C").sum())
    assert n_c  # the category's cluster takes cells: named by the column's order alone
    said = [str(w.message) for w in caught if "no labelled cell" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert f"{n_c} cells are predicted as 'C'" in said[0]
    assert "remove_unused_categories" in said[0]
