"""pandas 3 reads every string column, index and category as its own string dtype (pandas
2.x users opt in with ``future.infer_string``): what the models write from such an AnnData
must be what anndata writes."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import deltavae as dv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _pandas3_strings():
    """pandas 3's string dtype: the default there, an opt-in in pandas 2.x."""
    try:
        return pd.option_context("future.infer_string", True)
    except (KeyError, pd.errors.OptionError):  # pandas 3: the default, no option
        pytest.skip("no future.infer_string option")


def test_cgmdvae_with_labels_writes_results_under_pandas_string_dtype(tmp_path):
    """write_to_adata failed with numpy's "Cannot interpret '<StringDtype(...)>' as a data
    type": the cluster names (the label names) were copied into a numpy array of their
    categories' dtype, which is pandas' string dtype in pandas 3."""
    with _pandas3_strings():
        adata = dv.datasets.synthetic_counts(
            n_cells=60, n_genes=12, n_clusters=3, n_conditions=2, seed=0
        )
        adata.obs["cell_type"] = [f"T{c}" for c in adata.obs["cluster"]]
        assert adata.obs["cell_type"].dtype != object  # pandas' string dtype
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
        model = dv.model.CGMDVAE(adata, n_latent=2, n_latent_w=2, n_hidden=8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # one epoch: too few, it says
            model.train(**TRAIN)
        model.write_to_adata(adata)
        names = adata.uns["cgmdvae"]["cluster_names"]
        assert isinstance(names, np.ndarray) and names.tolist() == ["T0", "T1", "T2"]
        assert set(adata.obs["cgmdvae_cluster"]) <= {"T0", "T1", "T2"}
        with ad.settings.override(allow_write_nullable_strings=True):  # anndata's own opt-in
            adata.write_h5ad(tmp_path / "a.h5ad")
        back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert back.uns["cgmdvae"]["cluster_names"].tolist() == ["T0", "T1", "T2"]
