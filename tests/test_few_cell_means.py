"""Means of one or two cells read as a group's (model/_few_cell_means.py): latent_shift's
condition means and differential_abundance's samples said nothing of being those cells',
where differential_expression warns of a side of fewer than 3 cells."""

import warnings

import numpy as np
import pytest
import scvi

import deltavae as dv


@pytest.fixture(scope="module")
def model():
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=2, seed=0
    )
    adata.obs["type"] = np.where(np.arange(adata.n_obs) < 60, "A", "B")
    condition = np.full(adata.n_obs, "ctrl", dtype=object)
    condition[:2] = "stim"  # two cells of type A
    condition[60:80] = "stim"  # twenty of type B
    adata.obs["condition"] = condition
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged
        vae.train(max_epochs=1, batch_size=64, train_size=1.0)
    return vae, adata


def test_latent_shift_from_two_cells_is_warned_of(model):
    """predict_perturbation(method='latent_shift') with balance_key: type A's shift is the mean
    of its 2 cells under 'stim', and nothing was said."""
    vae, adata = model
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    told = r"fewer than 3 training cells .*'A': 58 cells under 'ctrl', 2 cells under 'stim' \(1 of"
    with pytest.warns(UserWarning, match=told):
        out = vae.predict_perturbation(
            ctrl, "stim", method="latent_shift", condition_key="condition", balance_key="type"
        )
    assert out.n_obs == ctrl.n_obs  # the prediction still comes
    # Without balance_key the means read 98 and 22 cells: said nothing (warnings are errors).
    b = adata.obs["type"] == "B"
    ctrl_b = adata[b & (adata.obs["condition"] == "ctrl")].copy()
    vae.predict_perturbation(ctrl_b, "stim", method="latent_shift", condition_key="condition")


def test_differential_abundance_of_a_one_cell_sample_is_warned_of(model):
    vae, adata = model
    data = adata.copy()
    data.obs["sample"] = np.where(np.arange(data.n_obs) % 2, "s1", "s2").astype(object)
    vae.differential_abundance(data, sample_key="sample")  # 60 cells each: nothing said
    data.obs.loc[data.obs_names[5], "sample"] = "s3"
    with pytest.warns(UserWarning, match=r"samples of fewer than 3 cells .*: 's3' \(1 cell\)"):
        vae.differential_abundance(data, sample_key="sample")
    assert list(data.obsm["da_log_probs"].columns) == ["s2", "s1", "s3"]
    data.obs["sample"] = np.where(np.arange(data.n_obs) % 2, "s1", "s2")
    with pytest.warns(UserWarning, match=r"num_cells_posterior=2 reads .* from 2 cells"):
        vae.differential_abundance(data, sample_key="sample", num_cells_posterior=2)
