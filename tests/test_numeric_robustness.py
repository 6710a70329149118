"""Numbers a user's data and settings reach: precisions, counts near a type's limit,
read-outs on the documented scale."""

import warnings

import pytest
import torch

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _counts(n_cells=60, seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=20, n_clusters=2, n_conditions=1, seed=seed
    )


@pytest.fixture(scope="module")
def trained():
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, **TRAIN)
    return model


@pytest.mark.parametrize(
    "precision, dtype",
    [("bf16-true", "bfloat16"), ("16-true", "float16"), ("64-true", "float64"), (64, "float64")],
)
def test_a_precision_that_casts_the_parameters_is_refused_and_leaves_them(
    trained, precision, dtype
):
    """precision='bf16-true' (Lightning's advice for speed on a recent GPU) cast the module to
    bfloat16, then failed in the first step with torch's "mat1 and mat2 must have the same
    dtype", and left a trained model's weights rounded to 16 bits, its next train refused
    as if the user had called module.double(). Refused now before anything is cast, naming
    the mixed precision that trains."""
    before = {k: v.clone() for k, v in trained.module.state_dict().items()}
    with pytest.raises(ValueError, match=rf"casts the model's parameters to {dtype}.*bf16-mixed"):
        trained.train(max_epochs=1, precision=precision, **TRAIN)
    after = trained.module.state_dict()
    for key, value in before.items():
        assert after[key].dtype == value.dtype, key
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)


def test_a_half_precision_plugin_is_refused_as_its_name_is(trained):
    from lightning.pytorch.plugins.precision import HalfPrecision

    with pytest.raises(ValueError, match=r"plugins=HalfPrecision\(\.\.\.\) casts"):
        trained.train(max_epochs=1, plugins=[HalfPrecision("bf16-true")], **TRAIN)
    assert {p.dtype for p in trained.module.parameters()} == {torch.float32}


def _log_values(offset=0.0, sparse_x=False):
    import numpy as np
    import scipy.sparse as sp

    adata = _counts(n_cells=80)
    x = np.log1p(adata.X.toarray()).astype(np.float32) + offset
    adata.X = sp.csr_matrix(x) if sparse_x else x
    return adata


@pytest.mark.parametrize("sparse_x", [False, True])
def test_features_far_from_zero_for_a_normal_likelihood_are_warned_with_the_fix(sparse_x):
    """Log-normalised pbmc3k features plus 25 (where log2 proteomics intensities sit)
    trained CGMDVAE(likelihood='normal') to 3 of 8 clusters empty and a cluster ARI of 0.14
    against 0.44 (an ELBO of 548 against 209; _real_values' docstring), in silence: the
    decoder starts at 0 and the encoder reads the offsets. Warned now, with a line that
    centres the features, after which nothing is warned."""
    import numpy as np

    adata = _log_values(offset=25.0, sparse_x=sparse_x)
    dv.model.CGMDVAE.setup_anndata(adata)
    with pytest.warns(UserWarning, match=r"sit far from 0 .*Centre each feature first") as got:
        dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal")
    fix = str(next(w.message for w in got if "far from 0" in str(w.message)))
    line = fix.split("Centre each feature first: ")[1].split(" (or sc.pp.scale")[0]
    exec(line, {"adata": adata, "np": np})
    assert abs(float(np.asarray(adata.X).mean(axis=0).max())) < 1e-3
    dv.model.CGMDVAE.setup_anndata(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal")


def test_log_normalised_features_are_not_warned_as_off_centre():
    adata = _log_values()
    dv.model.CGMDVAE.setup_anndata(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal")


def test_a_normal_models_first_loss_not_finite_names_centring_not_counts():
    """Features at 1,000 (raw intensities) gave NaN in the first validation pass of a
    CGMDVAE(likelihood='normal'), told as 'counts so large that they overflow, e.g. above
    1e30': no count, nothing near 1e30. It names the centring now."""
    from deltavae.train import TrainingDivergedError

    adata = _log_values(offset=1000.0)
    dv.model.CGMDVAE.setup_anndata(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning of features far from 0
        model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal")
        with pytest.raises(TrainingDivergedError, match=r"features far from 0.*centre each"):
            model.train(max_epochs=3, **TRAIN)
