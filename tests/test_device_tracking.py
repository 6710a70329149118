"""Every model trained and read out with each tensor's would-be device followed
(:mod:`_device_tracker`): nothing computed on the model's device may meet a tensor left on
the CPU. Unlike the meta-device tests, the whole method runs, past the first value read out
(translate, perturbation prediction and sampling read codes and latents back early)."""

import numpy as np
import pytest
import torch
from _device_tracker import DeviceTracker, on_device

import deltavae as dv

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}


def _counts(seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=seed
    )


def test_a_planted_cpu_tensor_is_caught(tracked, monkeypatch):
    """The check itself: a CPU tensor added inside translate, after the codes were read out
    (where the meta-device test stops), is reported."""
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, mixture_init="kmeans", mixture_init_epoch=0, **TRAIN)
    translation = type(model.module).translation  # what the model's translate calls

    def planted(self, x, *args, **kwargs):
        x = x + torch.as_tensor(np.zeros(x.shape[1], dtype=np.float32))  # no device=
        return translation(self, x, *args, **kwargs)

    monkeypatch.setattr(type(model.module), "translation", planted)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    with pytest.raises(AssertionError, match=r"translate: .*add"):
        tracked(model.module, {"translate": lambda: model.translate(ctrl, "stim")})
    # A result handed back on the device (scvi-tools' per-cell ELBO, before it was moved).
    import deltavae.model._host_results as host_results

    monkeypatch.setattr(host_results, "_on_host", lambda value: value)
    with pytest.raises(AssertionError, match=r"elbo: 1x returned a device tensor at result"):
        tracked(model.module, {"elbo": lambda: model.get_elbo(return_mean=False)})


def test_reads_and_indexing_cuda_refuses_are_caught():
    """The check itself: a device tensor read as numpy without ``.cpu()``, and a host tensor
    indexed with device indices, fail on CUDA without mixing a computation's inputs."""
    layer = torch.nn.Linear(3, 2)
    on_device(layer)
    tracker = DeviceTracker()
    with tracker:
        out = layer(torch.ones(4, 3).to(layer.weight.device))  # moved: on the device
        out.detach().cpu().numpy()  # fine
        torch.zeros(4)[torch.tensor([0, 1])]  # fine: all on the host
        out.detach().numpy()
        torch.zeros(4)[out.argmax(0)]
        kept = out.detach().clone()
        kept[:, 0] = torch.ones(4)  # fine: a copy
        kept[torch.tensor([0, 1])] = 1.0  # fine: a scalar
        kept[torch.tensor([0, 1])] = torch.ones(2, 2)
        out.sum() + torch.tensor(1.0)  # fine: a CPU scalar, elementwise
        torch.stack([out.sum(), torch.tensor(float("nan"))])
    assert set(name for name, _ in tracker.mixes) == {
        "numpy of a device tensor",
        "__getitem__ of a host tensor with device indices",
        "__setitem__ of host values into a device tensor at tensor indices",
        "stack",
    }


def test_float64_and_cpu_generators_on_the_device_are_caught():
    """The check itself: a float64 tensor made on the device (Apple's MPS has no float64:
    ``torch.as_tensor(<float64 numpy>, device=...)`` fails there) and a CPU generator given to
    a draw on the device (CUDA refuses it), neither of which mixes devices."""
    layer = torch.nn.Linear(3, 2)
    on_device(layer)
    generator = torch.Generator().manual_seed(0)
    tracker = DeviceTracker()
    with tracker:
        device = layer.weight.device
        torch.as_tensor(np.zeros(3, dtype=np.float32), device=device)  # fine
        torch.randn(3, generator=generator).to(device)  # fine: drawn on the host, then moved
        torch.sigmoid(layer.weight).detach().cpu().double()  # fine: float64 on the host
        torch.as_tensor(np.zeros(3), device=device)
        torch.randn(3, generator=generator, device=device)
        torch.bernoulli(torch.sigmoid(layer.weight), generator=generator)
    assert dict((name, n) for (name, _), n in tracker.mixes.items()) == {
        "float64 on the device, which MPS has not": 1,
        "a CPU generator drawing on the device": 2,
    }


def test_tensors_made_of_numpy_by_any_constructor_are_on_the_host():
    """The check itself: ``torch.from_numpy`` and ``torch.asarray`` make host tensors as
    ``torch.as_tensor`` does; before, their tensors were followed nowhere and a module on the
    device reading them (CUDA: "Expected all tensors to be on the same device") went
    unreported."""
    layer = torch.nn.Linear(3, 2)
    on_device(layer)
    x = np.ones((4, 3), dtype=np.float32)
    tracker = DeviceTracker()
    with tracker:
        device = layer.weight.device
        layer(torch.from_numpy(x).to(device))  # fine: moved
        layer(torch.asarray(x, device=device))  # fine: made there
        layer(torch.from_numpy(x))
        layer(torch.asarray(x))
        layer(torch.asarray(layer.weight.detach())[:1].expand(4, 3))  # fine: on the device
    assert sum(n for (name, _), n in tracker.mixes.items() if name == "linear") == 2, (
        tracker.report()
    )


def test_zinbvae_and_its_query_stay_on_the_device(tracked):
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, dispersion="gene-batch")
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    pp = {"condition_key": "condition", "balance_key": "cluster"}
    tracked(
        vae.module,
        {
            "latent": lambda: vae.get_latent_representation(give_mean=False),
            "expression": lambda: vae.get_normalized_expression(transform_batch="stim"),
            "elbo": vae.get_elbo,
            "marginal ll": lambda: vae.get_marginal_ll(n_mc_samples=2),
            "differential expression": lambda: vae.differential_expression(
                groupby="cluster", group1="0"
            ),
            "latent shift": lambda: vae.predict_perturbation(
                ctrl, "stim", method="latent_shift", **pp
            ),
            "nearest response": lambda: vae.predict_perturbation(
                ctrl, "stim", method="nearest_response", similarity="latent", **pp
            ),
            "differential abundance": lambda: vae.differential_abundance(sample_key="cluster"),
        },
        train=lambda: vae.train(max_epochs=2, restore_best=True, **TRAIN),
    )
    query = adata[adata.obs["condition"] == "stim"].copy()
    query.obs["condition"] = "new"
    mapped = dv.model.ZINBVAE.load_query_data(query, vae, accelerator="cpu")
    tracked(
        mapped.module,
        {"latent": mapped.get_latent_representation},
        train=lambda: mapped.train(max_epochs=1, plan_kwargs={"weight_decay": 1e-3}, **TRAIN),
    )
    # scvi-tools' custom optimiser: the frozen entries' hook moves its masks all the same.
    sgd = {"optimizer": "Custom", "optimizer_creator": lambda p: torch.optim.SGD(p, lr=1e-3)}
    tracked(mapped.module, {}, train=lambda: mapped.train(max_epochs=1, plan_kwargs=sgd, **TRAIN))


@pytest.mark.parametrize("labels", [False, True])
def test_cgmdvae_stays_on_the_device(tracked, labels):
    """Unlabelled with one condition key; labelled with two (condition and donor), where
    conditions left unnamed are drawn jointly and moves to combinations that never trained
    are counted for a warning."""
    adata = _counts()
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2")
    keys = ["condition", "donor"] if labels else "condition"
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key=keys, labels_key="cell_type" if labels else None
    )
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    stim = {"condition": "stim"}
    pp = {"condition_key": "condition"}
    calls = {
        "z moved": lambda: model.get_latent_representation(condition={"condition": "ctrl"}),
        "w": lambda: model.get_latent_representation(representation="w"),
        "clusters": lambda: model.predict_clusters(soft=True),
        "sample": lambda: model.sample(10, cluster=0, condition=stim, seed=0),
        "sample, conditions drawn": lambda: model.sample(10, seed=1),
        "translate": lambda: model.translate(ctrl, stim, seed=0),
        "translate, not residual": lambda: model.translate(
            ctrl, stim, residual=False, response_weight=0
        ),
        "latent shift": lambda: model.predict_perturbation(
            ctrl, "stim", method="latent_shift", **pp
        ),
        "nearest response": lambda: model.predict_perturbation(
            ctrl, "stim", method="nearest_response", similarity="latent", **pp
        ),
        "nearest response, expression": lambda: model.predict_perturbation(
            ctrl, "stim", method="nearest_response", **pp
        ),
        "marginal ll": lambda: model.get_marginal_ll(n_mc_samples=2),
        "marginal ll per cell": lambda: model.get_marginal_ll(n_mc_samples=2, return_mean=False),
        "differential abundance": lambda: model.differential_abundance(sample_key="cluster"),
    }
    # Unlabelled: the Leiden start and the refit after training run too.
    tracked(model.module, calls, train=lambda: model.train(max_epochs=4, **TRAIN))


def test_cgmdvae_of_real_values_stays_on_the_device(tracked):
    """likelihood='normal' (its own decoder, the data's floor) with diagonal prior
    components, on log-normalized counts."""
    import scanpy as sc

    adata = _counts()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(
        adata, n_clusters=3, n_latent=3, n_hidden=16, likelihood="normal", prior_covariance="diag"
    )
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    tracked(
        model.module,
        {
            "sample": lambda: model.sample(10, seed=0),
            "translate": lambda: model.translate(ctrl, "stim", residual=True, seed=0),
            "latent shift": lambda: model.predict_perturbation(ctrl, "stim", method="latent_shift"),
            "nearest response": lambda: model.predict_perturbation(
                ctrl, "stim", method="nearest_response"
            ),
            "marginal ll": lambda: model.get_marginal_ll(n_mc_samples=2),
            "elbo": model.get_elbo,
        },
        # The mixture's start and refit (the same for every likelihood) run in other tests.
        train=lambda: model.train(
            max_epochs=2, mixture_init_epoch=None, refit_mixture=False, **TRAIN
        ),
    )


def test_spot_models_stay_on_the_device(tracked, monkeypatch):
    """Both inferences of NMFDeconv and one without a reference, both designs of
    SpatialImputer (and type profiles), imputing a few spots at a time, and Archetypes."""
    import deltavae.model._imputer as imputer_model

    monkeypatch.setattr(imputer_model, "_CHUNK", 16)  # 40 spots: three chunks
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    for inference in ("amortized", "per_spot"):
        deconv = dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=ref, labels_key="cluster", inference=inference
        )
        calls = {
            "proportions": deconv.get_proportions,
            "abundance": deconv.get_abundance,
            "signatures": deconv.get_signatures,
            "technology": deconv.get_technology_factor,
            "write": lambda d=deconv: d.write_to_adata(d.adata.copy()),
        }
        if inference == "amortized":  # spots it did not train on
            calls["new spots"] = lambda d=deconv: d.get_proportions(spots[:10].copy())
        tracked(deconv.module, calls, train=lambda d=deconv: d.train(max_epochs=2, **TRAIN))
    free = spots.copy()
    dv.model.NMFDeconv.setup_anndata(free)
    deconv = dv.model.NMFDeconv(free, n_components=3)
    tracked(
        deconv.module,
        {"proportions": deconv.get_proportions, "signatures": deconv.get_signatures},
        train=lambda: deconv.train(max_epochs=2, **TRAIN),
    )
    measured = spots[:, spots.var_names[:100]].copy()
    for design, profiles in (("deconvolution", "neighbours"), ("latent", None), (None, "type")):
        imputer = dv.model.SpatialImputer.from_reference(
            measured.copy(),
            ref,
            labels_key="cluster",
            design=design or "deconvolution",
            **({"profiles": profiles} if profiles else {}),
        )
        calls = {"impute": imputer.impute, "write": lambda m=imputer: m.write_to_adata()}
        if design == "deconvolution":
            calls["measured genes too"] = lambda m=imputer: m.impute(list(ref.var_names[95:105]))
            calls["proportions"] = imputer.get_proportions
        tracked(imputer.module, calls, train=lambda m=imputer: m.train(max_epochs=2, **TRAIN))
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    mix.obs["slide"] = np.repeat(["a", "b"], 30)
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    archetypes = dv.model.Archetypes(mix, n_archetypes=3)
    tracked(
        archetypes.module,
        {
            "weights of new spots": lambda: archetypes.get_archetype_weights(mix[:10].copy()),
            "profiles": archetypes.get_archetype_profiles,
            "sample factors": archetypes.get_sample_factors,
            "anchors": archetypes.get_anchors,
            "markers": archetypes.get_markers,
            "names": archetypes.archetype_names,
            "signatures": lambda: archetypes.match_signatures(
                {"x": list(mix.var_names[:5]), "y": list(mix.var_names[5:10])}
            ),
            "write": lambda: archetypes.write_to_adata(mix.copy()),
        },
        train=lambda: archetypes.train(max_epochs=2, **TRAIN),
    )


def test_refit_mixture_takes_latents_read_back_on_the_host(tracked):
    """``dv.train.refit_mixture`` onto one's own clusters of the latent space, with z and w as
    ``get_latent_representation`` returns them (on the host): on a GPU the module's networks
    refused them ("Expected all tensors to be on the same device")."""
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, mixture_init_epoch=None, refit_mixture=False, **TRAIN)
    z, z_var = model.get_latent_representation(return_dist=True)
    w = model.get_latent_representation(representation="w")
    clusters = np.array(adata.obs["cluster"].cat.codes, dtype=np.int64)
    codes = model.adata_manager.get_from_registry("extra_categorical_covs")
    cats = np.asarray(codes, dtype=np.int64)
    arrays = (z, w, z_var, clusters, cats)
    refit = dv.train.refit_mixture
    # Made inside the call, where the tracker marks them as on the host.
    host = lambda: [torch.as_tensor(v) for v in arrays]  # noqa: E731
    tracked(model.module, {"host tensors": lambda: refit(model.module, *host(), n_steps=5)})
    tracked(model.module, {"arrays": lambda: refit(model.module, *arrays, n_steps=5)})


def test_zinbvae_read_outs_beyond_the_latent_stay_on_the_device(tracked, tmp_path):
    """scvi-tools' other read-outs (posterior predictive draws, whose first call compiles
    for seconds, are in test_device.py), a latent library, validation with early stopping and
    ``restore_best``, results written into the whole AnnData of the model's genes, and a
    model saved and loaded again."""
    whole = _counts()
    adata = whole[:, whole.var_names[:30]].copy()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, use_observed_lib_size=False)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    tracked(
        vae.module,
        {
            "likelihood": vae.get_likelihood_parameters,
            "correlation": lambda: vae.get_feature_correlation_matrix(n_samples=2),
            "library": lambda: vae.get_latent_library_size(give_mean=False),
            "aggregated": vae.get_aggregated_posterior,
            "reconstruction": vae.get_reconstruction_error,
            "importance": lambda: vae.get_normalized_expression(weights="importance"),
            "latent library": lambda: vae.get_normalized_expression(library_size="latent"),
            "abundance": lambda: vae.differential_abundance(sample_key="condition"),
            "write": lambda: vae.write_to_adata(adata.copy()),
            "write into the whole": lambda: vae.write_to_adata(whole.copy()),
            "elbo per cell": lambda: vae.get_elbo(return_mean=False),
            "expression drawn": lambda: vae.get_normalized_expression(n_samples=2),
            "nearest response, expression": lambda: vae.predict_perturbation(
                ctrl,
                "stim",
                method="nearest_response",
                condition_key="condition",
                balance_key="cluster",
            ),
        },
        train=lambda: vae.train(
            max_epochs=3, train_size=0.8, early_stopping=True, restore_best=True, **TRAIN
        ),
    )
    vae.save(tmp_path / "vae")
    loaded = dv.model.ZINBVAE.load(tmp_path / "vae", adata, accelerator="cpu")
    tracked(loaded.module, {"loaded": loaded.get_normalized_expression})


def test_semi_supervised_cgmdvae_and_its_query_stay_on_the_device(tracked):
    """Some cells labelled (the start matches clusters to labels), the scvi-tools read-outs
    the unlabelled test leaves out, and a query model mapped, trained and read."""
    adata = _counts()
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    adata.obs.loc[adata.obs_names[::2], "cell_type"] = "unknown"
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key="condition", labels_key="cell_type", unlabeled_category="unknown"
    )
    model = dv.model.CGMDVAE(adata, n_clusters=4, n_latent=3, n_hidden=16)
    tracked(
        model.module,
        {
            "labels": model.predict_labels,
            "expression": lambda: model.get_normalized_expression(transform_batch="stim"),
            "differential expression": lambda: model.differential_expression(
                groupby="cluster", group1="0"
            ),
            "elbo": model.get_elbo,
            "write": lambda: model.write_to_adata(adata.copy()),
        },
        train=lambda: model.train(
            max_epochs=2, mixture_init="kmeans", mixture_init_epoch=1, **TRAIN
        ),
    )
    query = adata[adata.obs["condition"] == "stim"].copy()
    query.obs["condition"] = "new"
    mapped = dv.model.CGMDVAE.load_query_data(query, model, accelerator="cpu")
    tracked(
        mapped.module,
        {
            "labels": mapped.predict_labels,
            "typicality under": lambda: mapped.predict_labels(unknown_below=0.5),
            "predict": mapped.predict,
            "write, typicality under": lambda: mapped.write_to_adata(unknown_below=0.5),
            "clusters": lambda: mapped.predict_clusters(soft=True),
            "translate": lambda: mapped.translate(query, "ctrl", seed=0),
        },
        train=lambda: mapped.train(max_epochs=1, **TRAIN),
    )
    query.X = query.X * 2  # replaced: the query model reads the new matrix
    tracked(mapped.module, {"replaced counts": lambda: mapped.predict_labels(query)})


def test_training_as_on_a_gpu_stays_on_the_device(tracked, monkeypatch):
    """The paths only an accelerator takes: the divergence guard reading the losses every few
    steps (``CHECK_EVERY``, here 4; validation losses at the pass's end) and the dense count
    likelihood; with a parameter turned NaN mid-run, the guard's restore too."""
    from lightning.pytorch.callbacks import Callback

    import deltavae.distributions._counts as count_terms
    from deltavae.train import _divergence

    monkeypatch.setattr(_divergence.DivergenceGuard, "check_every", property(lambda self: 4))
    monkeypatch.setattr(count_terms, "sparse_by_default", lambda device: False)

    class Poison(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 8:  # 5 steps an epoch: epoch 1, step 3
                with torch.no_grad():
                    next(pl_module.module.parameters()).fill_(float("nan"))

    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    run = {**TRAIN, "batch_size": 32, "train_size": 0.8}

    def diverges():
        with pytest.raises(dv.train.TrainingDivergedError, match=r"epoch 1, step 3 .*step 2\)"):
            vae.train(max_epochs=3, callbacks=[Poison()], **run)

    tracked(vae.module, {"latent": vae.get_latent_representation}, train=diverges)
    tracked(
        vae.module,
        {},
        train=lambda: vae.train(max_epochs=3, early_stopping=True, restore_best=True, **run),
    )


def test_archetypes_train_under_deterministic_algorithms(tracked):
    """README: GPU training repeats bit for bit under ``torch.use_deterministic_algorithms(
    True)``. There CUDA refuses a float ``cumsum`` ("cumsum_cuda_kernel does not have a
    deterministic implementation"), which the stick-breaking of Archetypes' weights used."""
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        tracked(
            model.module,
            {"weights": model.get_archetype_weights, "profiles": model.get_archetype_profiles},
            train=lambda: model.train(max_epochs=2, train_size=0.8, **TRAIN),
        )
    finally:
        torch.use_deterministic_algorithms(before)


def test_neighbour_imputation_trains_under_deterministic_algorithms(tracked):
    """The default SpatialImputer (neighbour profiles) took each state's best neighbour with
    ``scatter_reduce(..., "amax")``, which CUDA refuses under deterministic algorithms
    ("scatter_reduce_cuda does not have a deterministic implementation")."""
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    measured = spots[:, spots.var_names[:100]].copy()
    imputer = dv.model.SpatialImputer.from_reference(measured, ref, labels_key="cluster")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        tracked(
            imputer.module,
            {"impute": imputer.impute},
            train=lambda: imputer.train(max_epochs=2, **TRAIN),
        )
        deterministic = imputer.impute()
    finally:
        torch.use_deterministic_algorithms(before)
    np.testing.assert_array_equal(deterministic.to_numpy(), imputer.impute().to_numpy())


def test_tensors_a_module_holds_outside_its_parameters_are_on_the_host(tracked, monkeypatch):
    """The check itself: ``module.to(device)`` moves parameters and buffers only, so a query
    module's masks of the entries that learn stay where they were made; the training plan
    moves them to the parameters' device, and forgetting to is reported."""
    import deltavae.train._checkpoint as checkpoint
    import deltavae.train._plan as plan

    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    vae.train(max_epochs=1, **TRAIN)
    query = adata[adata.obs["condition"] == "stim"].copy()
    query.obs["condition"] = "new"
    mapped = dv.model.ZINBVAE.load_query_data(query, vae, accelerator="cpu")
    tracked(mapped.module, {}, train=lambda: mapped.train(max_epochs=1, **TRAIN))

    def unmoved(module, optimizer):  # the masks as made, not moved to the parameters
        partly = module.__dict__.get(checkpoint.PARTLY_TRAINABLE) or []
        kept = [(p, mask, p.detach().clone()) for p, mask in partly]

        def restore(*_):
            with torch.no_grad():
                for param, learns, fixed in kept:
                    param.copy_(torch.where(learns, param, fixed))

        optimizer.register_step_post_hook(restore)

    monkeypatch.setattr(plan, "keep_frozen_entries", unmoved)
    with pytest.raises(AssertionError, match="train: .*where"):
        tracked(mapped.module, {}, train=lambda: mapped.train(max_epochs=1, **TRAIN))
