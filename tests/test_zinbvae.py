"""ZINBVAE: training, latents, covariates, save/load, param-store isolation, early stopping."""

import warnings

import numpy as np
import pyro
import pytest
import torch
from _torch_elbo import assert_torch_elbo_is_pyros
from pyro import poutine
from sklearn.cluster import KMeans

import deltavae as dv
from deltavae.metrics import ari

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _fit(adata, epochs=30, train=None, **model_kwargs):
    model = dv.model.ZINBVAE(adata, n_latent=5, n_hidden=32, **model_kwargs)
    model.train(max_epochs=epochs, batch_size=64, **(train or {}), **TRAIN)
    return model


def _params(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def trained():
    """One model trained long enough to learn the synthetic structure, shared by read-only tests."""
    adata = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=60, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    return _fit(adata, epochs=100), adata


def test_latent_library_size_of_the_observed_library_says_so(trained):
    """scvi-tools' RuntimeError spoke of "the module" not computing a posterior. Its type is
    kept beside the ValueError: code written for SCVI's (except RuntimeError) missed it."""
    model, adata = trained
    with pytest.raises(ValueError, match="observed library size.*total counts.*give_mean=False"):
        model.get_latent_library_size()
    with pytest.raises(RuntimeError, match="observed library size"):
        model.get_latent_library_size(give_mean=True)
    observed = model.get_latent_library_size(give_mean=False).ravel()
    np.testing.assert_allclose(observed, np.asarray(adata.X.sum(1)).ravel(), rtol=1e-4)


def test_loss_falls_and_latent_separates_clusters(trained):
    model, adata = trained
    train = model.history["elbo_train"]["elbo_train"].to_numpy(float)
    val = model.history["elbo_validation"]["elbo_validation"].to_numpy(float)
    assert len(train) == len(val) == 100
    assert np.isfinite(train).all() and np.isfinite(val).all()
    assert train[-1] < 0.9 * train[0]
    assert val[-1] < val[0]
    keys = model.write_to_adata()
    assert keys == ["obsm/X_zinbvae"]
    target = adata.copy()
    assert model.write_to_adata(target, key_added="zinbvae_b") == ["obsm/X_zinbvae_b"]
    np.testing.assert_array_equal(target.obsm["X_zinbvae_b"], adata.obsm["X_zinbvae"])
    with pytest.raises(ValueError, match="key_added"):
        model.write_to_adata(target, key_added="a/b")
    # scvi-tools' tutorials name the obsm key itself ("X_scVI"): here the prefix is the name.
    with pytest.raises(ValueError, match=r"would write obsm\['X_X_scVI'\].*key_added='scVI'"):
        model.write_to_adata(target, key_added="X_scVI")
    assert "X_X_scVI" not in target.obsm
    z = adata.obsm["X_zinbvae"]
    assert z.shape == (adata.n_obs, 5)
    from sklearn.cluster import KMeans

    pred = KMeans(3, n_init=10, random_state=0).fit_predict(z)
    assert ari(adata.obs["cluster"], pred) > 0.9


def test_inference_is_deterministic(trained):
    model, _ = trained
    np.testing.assert_array_equal(
        model.get_latent_representation(), model.get_latent_representation()
    )


def test_differential_expression_between_clusters(trained):
    model, adata = trained
    de = model.differential_expression(groupby="cluster", group1="0", group2="1", mode="change")
    assert set(de.index) == set(adata.var_names)
    marker_of = adata.var.loc[de.index, "marker_of"]
    # Cluster 0's markers go up, cluster 1's go down, in the 0-vs-1 comparison.
    assert de.loc[marker_of == "0", "lfc_mean"].mean() > 1.0
    assert de.loc[marker_of == "1", "lfc_mean"].mean() < -1.0
    top = de.sort_values("proba_de", ascending=False).index[:20]
    assert marker_of[top].isin(["0", "1"]).mean() > 0.8
    # A group no cell belongs to is named (scvi-tools divided by zero cells).
    with pytest.raises(ValueError, match=r"group1='O': no cell of adata.obs\['cluster'\] is 'O'"):
        model.differential_expression(groupby="cluster", group1="O")
    with pytest.raises(ValueError, match="group2=\\['1', '7'\\]: .* is '7'; its groups"):
        model.differential_expression(adata, groupby="cluster", group1="0", group2=["1", "7"])
    with pytest.raises(KeyError, match="groupby='clusters' is not a column"):
        model.differential_expression(groupby="clusters", group1="0")


def test_groupby_of_a_copy_names_the_anndata_read(trained):
    """Leiden clusters added to a copy, then differential_expression(groupby=...) without the
    copy: the KeyError said 'not a column of adata.obs' of the user's adata, which has it."""
    model, adata = trained
    copy = adata.copy()
    copy.obs["leiden"] = copy.obs["cluster"].astype(str)
    passing = r"model's AnnData \(model.adata: no adata was passed\).*pass it: "
    with pytest.raises(KeyError, match=passing + r"model.differential_expression\(adata, group"):
        model.differential_expression(groupby="leiden", group1="0")
    with pytest.raises(KeyError, match=passing + r"model.differential_abundance\(adata, sample"):
        model.differential_abundance(sample_key="leiden")
    with pytest.raises(KeyError, match=r"groupby='leid' is not a column of adata.obs; avail"):
        model.differential_expression(copy, groupby="leid", group1="0")
    de = model.differential_expression(copy, groupby="leiden", group1="0", group2="1")
    assert set(de.index) == set(adata.var_names) and "leiden" not in adata.obs


def test_covariates_reach_encoder_and_decoder(counts_adata):
    counts_adata.obs["donor"] = np.tile(["d1", "d2", "d3"], counts_adata.n_obs // 3)
    # One covariate named by a string, as the batch key is (it failed deep in anndata).
    dv.model.ZINBVAE.setup_anndata(
        counts_adata, batch_key="condition", categorical_covariate_keys="donor"
    )
    model = _fit(counts_adata, epochs=5)
    assert model.registry_["setup_args"]["categorical_covariate_keys"] == ["donor"]
    first = model.module.decoder.px_decoder.fc_layers[0][0]
    assert first.in_features == 5 + 2 + 3  # latent + batch one-hot + donor one-hot
    enc = model.module.z_encoder.encoder.fc_layers[0][0]
    assert enc.in_features == 60 + 2 + 3
    ctrl = model.get_normalized_expression(transform_batch="ctrl")
    stim = model.get_normalized_expression(transform_batch="stim")
    assert ctrl.shape == (300, 60)
    np.testing.assert_allclose(ctrl.sum(1), 1.0, rtol=1e-4)
    assert np.abs(ctrl.to_numpy() - stim.to_numpy()).max() > 1e-4
    # Cells without the batch or covariate column are refused, the column named as what it
    # is (the batch column was "a condition column", a term of CGMDVAE's).
    for key, role in [
        ("condition", r"the batch column \(batch_key\)"),
        ("donor", "a categorical covariate"),
    ]:
        cells = counts_adata[:20].copy()
        del cells.obs[key]
        with pytest.raises(KeyError, match=f"lacks {key!r}, {role}.* the model was trained"):
            model.get_latent_representation(cells)


def test_the_batch_key_as_a_covariate_too_is_refused(counts_adata):
    # transform_batch changed the batch's one-hot only: the covariate kept each cell's own.
    with pytest.raises(ValueError, match="also in categorical_covariate_keys"):
        dv.model.ZINBVAE.setup_anndata(
            counts_adata, batch_key="condition", categorical_covariate_keys=["condition"]
        )


def test_pyro_model_matches_torch_likelihood(trained):
    """The Pyro program and scvi-tools' torch side compute the same log p(x | z)."""
    model, adata = trained
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata, batch_size=50)))
    inf = module.inference(**module._get_inference_input(tensors))
    gen = module.generative(**module._get_generative_input(tensors, inf))
    torch_ll = gen["px"].log_prob(tensors["X"]).sum(-1)
    args, kwargs = module._get_fn_args_from_batch(tensors)
    conditioned = poutine.condition(module.model, data={"latent": inf["z"]})
    trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
    pyro_ll = trace.nodes["obs"]["fn"].log_prob(tensors["X"])
    torch.testing.assert_close(pyro_ll, torch_ll, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"likelihood": "nb", "dispersion": "gene-batch"},
        {"use_observed_lib_size": False},
    ],
)
def test_torch_elbo_is_pyros_trace_elbo(kwargs):
    """Training's torch-side loss is Pyro's Trace_ELBO of model and guide: same draws, same value
    and same gradients, KL warm-up weight and cell-plate scaling included."""
    from deltavae.module import ZINBVAEModule

    torch.manual_seed(0)
    library = {"library_log_means": [[2.0, 2.5]], "library_log_vars": [[0.5, 0.4]]}
    module = ZINBVAEModule(n_input=30, n_batch=2, n_hidden=16, **library, **kwargs)
    module.n_obs = 500  # the plate's size: 16 of 500 training cells
    x = torch.poisson(torch.rand(16, 30) * 5)
    args = (x, torch.randint(0, 2, (16, 1)), None, None)
    _, terms, _ = assert_torch_elbo_is_pyros(module, args, kl_weight=0.3)
    assert set(terms) == {"reconstruction_loss", "kl_divergence_z", "kl_divergence_l"}
    assert all(t.shape == (16,) for t in terms.values())
    assert (terms["kl_divergence_l"] == 0).all() == module.use_observed_lib_size


def test_the_latent_librarys_term_is_not_warmed_up_as_in_scvi():
    """scVI weighs only z's KL by the warm-up; free of its prior early on, the latent library
    drifted to 0.25x the observed one (the decoder making up the rest)."""
    from deltavae.module import ZINBVAEModule

    torch.manual_seed(0)
    library = {"library_log_means": [[2.0, 2.5]], "library_log_vars": [[0.5, 0.4]]}
    module = ZINBVAEModule(
        n_input=30, n_batch=2, n_hidden=16, use_observed_lib_size=False, **library
    ).eval()  # no dropout: the two passes below draw the same z and l
    x = torch.poisson(torch.rand(16, 30) * 5)
    batch = torch.randint(0, 2, (16, 1))
    torch.manual_seed(1)
    loss, terms = module.negative_elbo(x, batch, kl_weight=0.0)
    torch.manual_seed(1)
    qz, ql = module._encode(x, batch, None)
    qz.rsample()
    drawn = ql.rsample()
    prior = module._library_prior(batch)
    ratio = (ql.log_prob(drawn) - prior.log_prob(drawn)).sum(-1)
    torch.testing.assert_close(loss, terms["reconstruction_loss"] + ratio)


def test_elbo_train_counts_the_latent_library_once(counts_adata):
    """elbo_train adds back (1 - kl_weight) of the warmed-up terms only: the library's, at
    full weight in the loss, was added again (about 200 nats per cell in the first epoch)."""
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=5, n_hidden=32, use_observed_lib_size=False)
    # 270 training cells in 5 minibatches of 54: steps and cells weigh the epoch alike.
    model.train(max_epochs=2, batch_size=54, **TRAIN)
    h = {k: v.to_numpy(float).ravel() for k, v in model.history.items()}
    full = h["reconstruction_loss_train"] + h["kl_divergence_z_train"] + h["kl_divergence_l_train"]
    assert h["kl_weight"][0] < 0.01 and h["kl_divergence_l_train"][0] > 1.0
    np.testing.assert_allclose(h["elbo_train"], full, rtol=5e-3)


def test_latent_library_prior_of_float16_counts_is_the_float32_one(counts_adata):
    """scvi-tools' library prior summed float16 counts in float16: cells past 65504 counts
    got an infinite library, the prior mean fell (9.90 for 10.12) and scvi-tools warned of
    empty cells there were not."""
    deep = counts_adata[:40].copy()
    # Up to about 120000 counts a cell, each a whole float16 (above 2048 they are even).
    deep.X = np.minimum(deep.X.toarray() * 60, 60000).astype(np.float16)
    priors = {}
    for dtype in (np.float32, np.float16):
        deep.X = deep.X.astype(dtype)
        dv.model.ZINBVAE.setup_anndata(deep, batch_key="condition")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            module = dv.model.ZINBVAE(deep, n_hidden=8, use_observed_lib_size=False).module
        priors[dtype] = (module.library_log_means.numpy(), module.library_log_vars.numpy())
    np.testing.assert_array_equal(priors[np.float16][0], priors[np.float32][0])
    np.testing.assert_array_equal(priors[np.float16][1], priors[np.float32][1])
    assert np.asarray(deep.X.astype(np.float64).sum(1)).max() > 65504


def test_training_uses_the_torch_elbo_and_logs_every_term(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = _fit(counts_adata, epochs=2)
    assert model.module.has_torch_elbo  # the plan trains on the module's negative_elbo
    history = model.history
    for split in ("train", "validation"):
        for term in ("reconstruction_loss", "kl_local", "kl_divergence_z", "kl_divergence_l"):
            values = history[f"{term}_{split}"].to_numpy(float).ravel()
            assert len(values) == 2 and np.isfinite(values).all()
    recon = history["reconstruction_loss_train"].to_numpy(float).ravel()
    kl = history["kl_local_train"].to_numpy(float).ravel()
    elbo = history["elbo_train"].to_numpy(float).ravel()
    assert (recon > 0).all() and (kl > 0).all()
    # In epoch 0 the KL weight is 1e-6: the annealed loss is about the reconstruction term
    # (the same draws; elbo_train weighs steps equally, the terms weigh cells equally).
    assert elbo[0] == pytest.approx(recon[0], rel=5e-3)
    kl_weight = history["kl_weight"].to_numpy(float).ravel()
    assert kl_weight[0] == pytest.approx(1e-6) and 0 < kl_weight[1] <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"likelihood": "nb"},
        {"dispersion": "gene-batch"},
        {"use_observed_lib_size": False},
        {"n_layers": 2, "encode_covariates": False},
    ],
)
def test_model_options_train(counts_adata, kwargs):
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = _fit(counts_adata, epochs=8, **kwargs)
    train = model.history["elbo_train"]["elbo_train"].to_numpy(float)
    assert np.isfinite(train).all() and train[-1] < train[0]
    assert model.get_latent_representation().shape == (300, 5)


def test_size_factor_key(counts_adata):
    counts_adata.obs["sf"] = np.asarray(counts_adata.X.sum(1)).ravel() / 100.0
    dv.model.ZINBVAE.setup_anndata(counts_adata, size_factor_key="sf")
    model = _fit(counts_adata, epochs=3)
    assert model.module.use_observed_lib_size
    assert np.isfinite(model.history["elbo_train"]["elbo_train"].to_numpy(float)).all()
    # New cells' size factors are checked as the training cells' were (NaN, -1 and inf gave
    # NaN ELBOs or a Gamma error deep in torch; 0 a reconstruction loss 4x too large).
    for bad in (0.0, -1.0, np.nan, np.inf):
        other = counts_adata.copy()
        other.obs.loc[other.obs_names[3], "sf"] = bad
        said = "1 missing values" if np.isnan(bad) else "finite, positive numbers; 1 cells hold"
        with pytest.raises(ValueError, match=said):
            model.get_elbo(other)
    assert np.isfinite(model.get_elbo(counts_adata.copy()))


def test_a_latent_library_asked_for_beside_size_factors_is_said_to_be_ignored(counts_adata):
    counts_adata.obs["sf"] = 1.0  # scVI, too, uses the size factor and drops the request
    dv.model.ZINBVAE.setup_anndata(counts_adata, size_factor_key="sf")
    with pytest.warns(UserWarning, match="use_observed_lib_size=False is ignored"):
        model = dv.model.ZINBVAE(counts_adata, n_hidden=8, use_observed_lib_size=False)
    assert model.module.use_observed_lib_size and model.module.l_encoder is None


def test_size_factors_of_mean_one_fit_as_the_observed_library_does(counts_adata):
    # scvi-tools' size factors are on any linear scale (scran's have mean 1): with a softmax
    # decoder they predicted about one count per cell (reconstruction loss 10x scVI's).
    lib = np.asarray(counts_adata.X.sum(1)).ravel()
    counts_adata.obs["sf"] = lib / lib.mean()
    errors = {}
    for key in (None, "sf"):
        adata = counts_adata.copy()
        dv.model.ZINBVAE.setup_anndata(adata, size_factor_key=key)
        model = _fit(adata, epochs=20)
        errors[key] = model.get_reconstruction_error()["reconstruction_loss"]
    assert errors["sf"] < 2 * errors[None], errors  # 15x before


def test_save_load_roundtrip_and_continued_training(counts_adata, tmp_path):
    dv.model.ZINBVAE.setup_anndata(counts_adata, batch_key="condition")
    model = _fit(counts_adata, epochs=5)
    z = model.get_latent_representation()
    model.save(tmp_path / "m")
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", adata=counts_adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    assert list(loaded.history["elbo_train"].index) == list(range(5))
    before = _params(loaded)
    loaded.train(max_epochs=2, **TRAIN)
    assert _changed(before, _params(loaded))
    assert not np.allclose(loaded.get_latent_representation(), z, atol=1e-6)


def test_two_models_in_one_process_do_not_interfere(counts_adata):
    other = counts_adata.copy()
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    dv.model.ZINBVAE.setup_anndata(other)
    a = _fit(counts_adata, epochs=2)
    a_before = _params(a)
    b = _fit(other, epochs=2)
    assert not _changed(a_before, _params(a))
    b_before = _params(b)
    a.train(max_epochs=2, **TRAIN)
    assert _changed(a_before, _params(a))
    assert not _changed(b_before, _params(b))
    assert len(pyro.get_param_store()) > 0


def test_early_stopping_stops(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=5, n_hidden=32)
    stop = {
        "early_stopping": True,
        "early_stopping_patience": 2,
        "early_stopping_min_delta": 1e6,  # no epoch counts as an improvement
    }
    model.train(max_epochs=100, n_epochs_kl_warmup=None, **stop, **TRAIN)
    assert len(model.history["elbo_validation"]) <= 4
    # With a KL warm-up (a quarter of the epochs: 25), none of it counts: epoch 25, the
    # first on the full ELBO, sets the best, then the patience's 2 epochs.
    fresh = dv.model.ZINBVAE(counts_adata, n_latent=5, n_hidden=32)
    fresh.train(max_epochs=100, **stop, **TRAIN)
    assert len(fresh.history["elbo_validation"]) == 25 + 1 + 2


def test_training_on_every_cell_without_validation(counts_adata):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=3)
    model.train(max_epochs=3, train_size=1.0, **TRAIN)
    assert "elbo_validation" not in model.history
    assert len(model.history["elbo_train"]) == 3


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_elbo_train_is_the_full_elbo_during_the_warm_up(counts_adata, cls):
    """As in scvi-tools: elbo_train is reconstruction plus KL at full weight; train_loss is
    the annealed loss that was minimised."""
    cls.setup_anndata(counts_adata)
    model = cls(counts_adata, n_hidden=32, n_latent=4)
    model.train(max_epochs=4, n_epochs_kl_warmup=400, batch_size=64)
    h = model.history
    elbo = h["elbo_train"]["elbo_train"].to_numpy()
    loss = h["train_loss"]["train_loss"].to_numpy()
    full = (h["reconstruction_loss_train"].iloc[:, 0] + h["kl_local_train"].iloc[:, 0]).to_numpy()
    assert (h["kl_weight"]["kl_weight"].to_numpy() < 0.02).all()
    assert (elbo > loss).all()  # the KL weighted at 1, not at the warm-up's weight
    if cls is dv.model.ZINBVAE:  # every step's terms logged: the same sum
        np.testing.assert_allclose(elbo, full, rtol=0.01)


# 4-7 s: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_bf16_mixed_precision_trains_as_float32_does(trained):
    """Lightning's ``precision="bf16-mixed"`` (autocast; the count likelihood gets bfloat16
    dropout logits): the loss falls and ends within 5% of the float32 fit of the same data and
    settings (two runs of either differ by a few %), and the latent still separates the
    clusters."""
    reference, data = trained
    adata = data.copy()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = _fit(adata, epochs=100, train={"precision": "bf16-mixed"})
    elbo = model.history["elbo_train"]["elbo_train"].to_numpy()
    assert np.isfinite(elbo).all() and elbo[-1] < 0.9 * elbo[0]
    z = model.get_latent_representation()
    assert np.isfinite(z).all() and z.dtype == np.float32
    pred = KMeans(3, n_init=10, random_state=0).fit_predict(z)
    assert ari(adata.obs["cluster"].to_numpy(), pred) > 0.9
    end32 = reference.history["elbo_train"]["elbo_train"].iloc[-1]
    assert abs(elbo[-1] - end32) < 0.05 * abs(end32)
