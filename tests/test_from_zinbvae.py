"""CGMDVAE.from_zinbvae: a CGMDVAE started from a trained ZINBVAE (SCANVI.from_scvi_model's
counterpart): weights carried, registry inherited, bad starts refused, save and load."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from _anndata_state import assert_unchanged, state

import deltavae as dv
import deltavae.model._cgmdvae as cgmdvae_module
import deltavae.train._mixture_init as mixture_init

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
SMALL = {"n_latent": 4, "n_hidden": 32}


def _counts(n_cells=240, seed=0):
    adata = dv.datasets.synthetic_counts(n_cells, 60, 3, 2, seed=seed)
    rng = np.random.default_rng(seed)
    # Categories in an order that is not sorted: the one-hot columns are matched by name.
    adata.obs["condition"] = pd.Categorical(
        adata.obs["condition"].astype(str),
        categories=sorted(set(adata.obs["condition"].astype(str)), reverse=True),
    )
    adata.obs["donor"] = pd.Categorical(rng.choice(["d2", "d0", "d1"], adata.n_obs))
    adata.obs["cluster"] = adata.obs["cluster"].astype(str)
    return adata


def _zinbvae(adata, epochs=20, setup=None, **kwargs):
    scvi.settings.seed = 0
    dv.model.ZINBVAE.setup_anndata(adata, **(setup or {}))
    vae = dv.model.ZINBVAE(adata, **{**SMALL, **kwargs})
    vae.train(max_epochs=epochs, **TRAIN)
    return vae


def _latent_means(model) -> np.ndarray:
    """Posterior means of z over the model's cells, read from the module (an untrained
    CGMDVAE's read-outs refuse)."""
    module = model.module
    module.eval()
    adata = model._validate_anndata(model.adata)  # its registration, taken back
    loader = model._make_data_loader(adata=adata, batch_size=1000)
    with torch.no_grad():
        return np.concatenate(
            [
                module.inference(**module._get_inference_input(t), draw=False)["qz"].loc.numpy()
                for t in loader
            ]
        )


@pytest.fixture(scope="module")
def trained():
    adata = _counts()
    vae = _zinbvae(adata, setup={"batch_key": "condition", "categorical_covariate_keys": "donor"})
    return vae, adata


def test_weights_carried_and_zinbvae_unchanged(trained):
    vae, adata = trained
    before = {k: v.clone() for k, v in vae.module.state_dict().items()}
    z = vae.get_latent_representation()
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    # The encoder of z, with batch and covariate columns matched by category name.
    np.testing.assert_allclose(_latent_means(model), z, atol=1e-5)
    assert model.module.n_latent == 4 and model.pretrained_from_ == "ZINBVAE"
    # The decoder: the same expression and dispersion at the same z and library.
    tensors = next(iter(model._make_data_loader(adata=adata, batch_size=50)))
    cats = tensors["extra_categorical_covs"]
    zz = torch.randn(50, 4)
    library = torch.log(tensors["X"].sum(-1, keepdim=True))
    with torch.no_grad():
        new = model.module.decode(zz, cats, library)
        # The ZINBVAE's registration taken back (the CGMDVAE's setup rewrote the columns).
        own = vae._validate_anndata(adata)
        own_tensors = next(iter(vae._make_data_loader(adata=own, batch_size=50)))
        old = vae.module._decode(
            zz, library, own_tensors["batch"], own_tensors["extra_categorical_covs"]
        )
    for key in ("scale", "mu", "theta", "zi_logits"):
        torch.testing.assert_close(new[key], old[key])
    # No tensor shared, nothing changed: training the CGMDVAE leaves the ZINBVAE as it was.
    model.train(max_epochs=2, **TRAIN)
    after = vae.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    np.testing.assert_array_equal(vae.get_latent_representation(), z)


def test_registry_inherited(trained):
    vae, adata = trained
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    setup = model.registry_["setup_args"]
    assert model.adata is adata
    assert setup["layer"] is None and setup["labels_key"] is None
    assert model.condition_keys == ["condition", "donor"]
    assert "CGMDVAE: 3 clusters, n_latent 4" in str(model)


def _reconstruction(model, adata) -> float:
    """Mean -log p(x | z) per cell at the posterior means of z, from the module."""
    adata = model._validate_anndata(adata)  # its registration, taken back
    module = model.module
    module.eval()
    out = []
    with torch.no_grad():
        for t in model._make_data_loader(adata=adata, batch_size=1000):
            x, cats = t["X"], t["extra_categorical_covs"]
            qz, _ = module.encode(x, cats)
            params = module.decode(qz.loc, cats, module.observation.log_library(x))
            out.append(-module.observation.log_prob(params, x))
    return torch.cat(out).mean().item()


def test_reconstruction_the_zinbvaes_before_training(trained):
    vae, adata = trained
    started = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    own = vae._validate_anndata(adata)
    with torch.no_grad():
        t = next(iter(vae._make_data_loader(adata=own, batch_size=1000)))
        inference = vae.module.inference(**vae.module._get_inference_input(t))
        z = inference["qz"].loc
        library = inference["library"]
        params = vae.module._decode(z, library, t["batch"], t["extra_categorical_covs"])
        zinbvae = -vae.module.observation.log_prob(params, t["X"]).mean().item()
    fresh_data = adata.copy()
    dv.model.CGMDVAE.setup_anndata(fresh_data, condition_key=["condition", "donor"])
    scvi.settings.seed = 0
    fresh = dv.model.CGMDVAE(fresh_data, 3, **SMALL)
    pretrained = _reconstruction(started, started.adata)
    assert pretrained == pytest.approx(zinbvae, rel=1e-5)
    assert pretrained < _reconstruction(fresh, fresh_data) - 5


def test_mixture_starts_on_the_pretrained_latent_without_warm_up(trained, monkeypatch):
    vae, _ = trained
    z = vae.get_latent_representation()
    seen = []
    place = mixture_init.initialize_mixture

    def spy(module, points, *args, **kwargs):
        seen.append(points.detach().cpu().numpy().copy())
        return place(module, points, *args, **kwargs)

    epochs = []
    start = cgmdvae_module.mixture_start

    def record(model, epoch, *args):
        epochs.append(epoch)
        return start(model, epoch, *args)

    monkeypatch.setattr(mixture_init, "initialize_mixture", spy)
    monkeypatch.setattr(cgmdvae_module, "mixture_start", record)
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    model.train(max_epochs=3, **TRAIN)
    assert epochs == [0] and len(seen) == 1
    # Before any step, every clustered cell's z is its ZINBVAE latent, but for the BatchNorm
    # statistics that scvi-tools' guide warm-up (PyroJitGuideWarmup) moves on one minibatch.
    nearest = np.abs(seen[0][:, None, :] - z[None]).max(-1).min(1)
    assert nearest.max() < 0.05 < np.abs(z).max()
    assert (model.history["kl_weight"].to_numpy(float) == 1.0).all()
    # Trained: a second call neither starts the mixture again nor warms up.
    model.train(max_epochs=2, **TRAIN)
    assert epochs == [0] and (model.history["kl_weight"].to_numpy(float) == 1.0).all()


def test_semi_supervised_labels(trained):
    vae, adata = trained
    rng = np.random.default_rng(1)
    labels = adata.obs["cluster"].astype(object).to_numpy().copy()
    hidden = rng.random(adata.n_obs) < 0.7
    labels[hidden] = "Unknown"
    adata.obs["some_labels"] = pd.Categorical(labels)
    scvi.settings.seed = 0
    model = dv.model.CGMDVAE.from_zinbvae(vae, "Unknown", labels_key="some_labels")
    assert model.registry_["setup_args"]["labels_key"] == "some_labels"
    assert sorted(model.label_names) == sorted(set(adata.obs["cluster"]))
    model.train(max_epochs=15, **TRAIN)
    predicted = model.predict()
    truth = adata.obs["cluster"].to_numpy()
    # A fresh model after as many epochs: 0.76 and 0.64 (seed 0).
    assert np.mean(predicted[~hidden] == truth[~hidden]) > 0.85
    assert np.mean(predicted[hidden] == truth[hidden]) > 0.85


def test_saved_and_loaded_exactly(trained, tmp_path):
    vae, adata = trained
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3, n_latent_w=3)
    model.save(tmp_path / "untrained")
    loaded = dv.model.CGMDVAE.load(tmp_path / "untrained", adata=adata)
    assert loaded.pretrained_from_ == "ZINBVAE" and loaded.module.n_latent_w == 3
    state, again = model.module.state_dict(), loaded.module.state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    model.train(max_epochs=2, **TRAIN)
    model.save(tmp_path / "trained")
    loaded = dv.model.CGMDVAE.load(tmp_path / "trained", adata=adata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    np.testing.assert_array_equal(loaded.predict_clusters(), model.predict_clusters())
    assert loaded.pretrained_from_ == "ZINBVAE"


def test_untrained_refused():
    adata = _counts(60)
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, **SMALL)
    with pytest.raises(ValueError, match="has not been trained.*Train it first"):
        dv.model.CGMDVAE.from_zinbvae(vae)
    with pytest.raises(TypeError, match="trained deltavae.model.ZINBVAE; got str"):
        dv.model.CGMDVAE.from_zinbvae("vae")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_latent": 8}, "n_latent=8 differs from the ZINBVAE's n_latent=4"),
        ({"n_hidden": 64}, "n_hidden=64 differs from the ZINBVAE's n_hidden=32"),
        ({"likelihood": "normal"}, "likelihood='normal' differs from the ZINBVAE's"),
        ({"unlabeled_category": "Unknown"}, "name it with labels_key"),
    ],
)
def test_contradicting_settings_refused(trained, kwargs, message):
    vae, _ = trained
    with pytest.raises(ValueError, match=message):
        dv.model.CGMDVAE.from_zinbvae(vae, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_clusters": "3"}, ValueError, "n_clusters must be an integer, got '3'"),
        (
            {"n_clusters": 3, "labels_kay": "cluster"},
            TypeError,
            r"^CGMDVAE.from_zinbvae\(\) got .*'labels_kay': did you mean 'labels_key'",
        ),
    ],
)
def test_a_refused_start_leaves_the_zinbvaes_anndata_as_it_was(trained, kwargs, error, match):
    """from_zinbvae set the ZINBVAE's AnnData up for the CGMDVAE (obs["_scvi_labels"],
    uns["_scvi_manager_uuid"]) before the constructor refused an argument, and left it so;
    labels_kay reached the constructor, which named no close name ("CGMDVAE() got ...")."""
    vae, adata = trained
    before = state(adata)
    with pytest.raises(error, match=match):
        dv.model.CGMDVAE.from_zinbvae(vae, **kwargs)
    assert_unchanged(before, adata)


def test_sizes_equal_to_the_zinbvaes_accepted(trained):
    vae, _ = trained
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3, n_latent=4, likelihood="zinb")
    assert model.module.n_latent == 4


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        ({"size_factor_key": "sf"}, {}, "size_factor_key='sf'"),
        ({"batch_key": "condition"}, {"dispersion": "gene-batch"}, "dispersion='gene-batch'"),
    ],
)
def test_other_zinbvaes_refused(setup, kwargs, message):
    adata = _counts(60)
    adata.obs["sf"] = 1.0
    vae = _zinbvae(adata, epochs=1, setup=setup, **kwargs)
    with pytest.raises(ValueError, match=message):
        dv.model.CGMDVAE.from_zinbvae(vae)


def test_other_anndata_needs_the_zinbvaes_genes(trained):
    vae, adata = trained
    reordered = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="another order.*adata\\[:, vae.adata.var_names\\]"):
        dv.model.CGMDVAE.from_zinbvae(vae, adata=reordered)
    fewer = adata[:, adata.var_names[1:]].copy()
    with pytest.raises(ValueError, match="the ZINBVAE's 60 genes: 1 of them missing"):
        dv.model.CGMDVAE.from_zinbvae(vae, adata=fewer)
    other = adata[:100].copy()
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3, adata=other)
    assert model.adata is other and model.adata.n_obs == 100
    np.testing.assert_allclose(
        _latent_means(model), vae.get_latent_representation(other), atol=1e-5
    )


@pytest.mark.parametrize("kwargs", [{"encode_covariates": False}, {"use_observed_lib_size": False}])
def test_zinbvae_variants(trained, kwargs):
    """A ZINBVAE whose encoder reads no covariates (the CGMDVAE's encoder reads them, with
    weights 0 to start), or that learns a latent library (its library encoder is left out):
    the CGMDVAE's z is the ZINBVAE's."""
    adata = trained[1].copy()
    vae = _zinbvae(adata, epochs=3, setup={"batch_key": "condition"}, **kwargs)
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    np.testing.assert_allclose(_latent_means(model), vae.get_latent_representation(), atol=1e-5)


def test_first_train_of_a_started_model_is_short_by_default(trained):
    """restore_best kept epochs 1-9 of 400 on PBMC: a started model's first train defaults to
    PRETRAINED_EPOCHS, a later one (and a fresh model) to scvi-tools' heuristic."""
    from deltavae.model._from_zinbvae import PRETRAINED_EPOCHS, default_max_epochs

    vae, _ = trained
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    assert default_max_epochs(model) == PRETRAINED_EPOCHS == 20
    model.train(**TRAIN)
    assert len(model.history["elbo_train"]) == PRETRAINED_EPOCHS
    assert model.train_args_["max_epochs"] == PRETRAINED_EPOCHS
    assert default_max_epochs(model) == 400  # trained since: the heuristic (240 cells)
    fresh = dv.model.CGMDVAE(model.adata, n_clusters=3, **SMALL)
    assert default_max_epochs(fresh) == 400


def test_a_query_of_a_started_model_trains_as_any_query():
    """load_query_data carries the reference's pretrained_from_; its query model must still
    take the heuristic's epochs and the usual warm-up, not the started model's 20 and none."""
    from deltavae.model._from_zinbvae import default_max_epochs

    adata = dv.datasets.synthetic_counts(200, 40, 3, 2, seed=0)
    first = adata.obs["condition"] == adata.obs["condition"].cat.categories[0]
    reference, query = adata[first].copy(), adata[~first].copy()
    vae = _zinbvae(reference, epochs=3, setup={"batch_key": "condition"})
    one_value = pytest.warns(UserWarning, match="holds one value")
    with one_value:  # the reference holds one condition; the query brings the other
        model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    assert model._auto_warmup(400, {}) is None  # started: no warm-up
    model.train(max_epochs=3, **TRAIN)
    query_model = dv.model.CGMDVAE.load_query_data(query, model)
    assert query_model.pretrained_from_ == "ZINBVAE" and not query_model.is_trained_
    assert default_max_epochs(query_model) == 400
    with pytest.warns(UserWarning, match="holds one value"):
        fresh = dv.model.CGMDVAE(reference, n_clusters=3, **SMALL)
    assert query_model._auto_warmup(400, {}) == fresh._auto_warmup(400, {}) is not None
