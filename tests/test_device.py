"""Every public method that runs a module feeds it data on the module's device.

No GPU in CI: a trained module moved to PyTorch's ``meta`` device stands in for one. A method
that moves its minibatches to the module's device then fails only when it copies a result out
("meta tensors have no data"); one that forgets fails on the mismatch of devices, which is
what a CUDA model would do to a user. A method that reads a value out before its last
module call (translate's codes, a latent read back for numpy) stops being checked there;
test_device_tracking.py follows every tensor's would-be device through whole methods.
"""

import re
import warnings

import numpy as np
import pyro
import pytest
import torch

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
# What a forgotten move looks like: torch's device checks, or code that reaches for CUDA.
MISMATCH = re.compile(r"expected device|same device|device type|cuda|CUDA")


def _fails_on_meta_only(call) -> str:
    """Run ``call`` against a meta module; it must fail for want of data, not of a device."""
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked below
        call()
    message = f"{type(info.value).__name__}: {info.value}"
    assert not MISMATCH.search(message), message
    assert "meta" in message.lower(), message
    return message


@pytest.fixture(scope="module")
def counts():
    return dv.datasets.synthetic_counts(200, 40, 3, 2, seed=0)  # cells, genes, clusters, conditions


@pytest.fixture(scope="module")
def zinbvae(counts):
    adata = counts.copy()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    return model, adata


@pytest.fixture(scope="module")
def cgmdvae(counts):
    adata = counts.copy()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=3, mixture_init="kmeans", **TRAIN)
    return model, adata


@pytest.fixture(autouse=True)
def _no_argument_checks():
    """Distributions' argument checks read values (``.item()``), which meta tensors lack: with
    them on, every method stopped at the encoder's first Normal and a device mistake after it
    (the decoder, the library size) went unseen. Off here, and restored."""
    torch_default = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(torch_default)


def _on_meta(model) -> dict:
    """Move the module to ``meta``; returns its state for :func:`_back_on_cpu`."""
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.module.to(torch.device("meta"))
    return state


def _back_on_cpu(model, state: dict) -> None:
    model.module.to_empty(device="cpu")
    model.module.load_state_dict(state)


def _methods_zinbvae(model, adata):
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    return {
        "get_latent_representation": lambda: model.get_latent_representation(),
        "get_normalized_expression": lambda: model.get_normalized_expression(),
        "write_to_adata": lambda: model.write_to_adata(adata.copy()),
        "latent_shift": lambda: model.predict_perturbation(
            ctrl, "stim", method="latent_shift", condition_key="condition"
        ),
        "nearest_response(latent)": lambda: model.predict_perturbation(
            ctrl,
            "stim",
            method="nearest_response",
            condition_key="condition",
            balance_key="cluster",
            similarity="latent",
        ),
        **_scvi_api(model),
    }


def _scvi_api(model) -> dict:
    """scvi-tools' mixin methods: they read the module through our loaders too."""
    return {
        "get_elbo": lambda: model.get_elbo(),
        "get_reconstruction_error": lambda: model.get_reconstruction_error(),
        "get_normalized_expression(transform_batch)": lambda: model.get_normalized_expression(
            transform_batch="stim"
        ),
        "differential_expression": lambda: model.differential_expression(
            groupby="cluster", group1="0"
        ),
        "get_marginal_ll": lambda: model.get_marginal_ll(n_mc_samples=2),
        "posterior_predictive_sample": lambda: model.posterior_predictive_sample(),
        "get_likelihood_parameters": lambda: model.get_likelihood_parameters(),
        "get_feature_correlation_matrix": lambda: model.get_feature_correlation_matrix(),
        "get_latent_library_size": lambda: model.get_latent_library_size(give_mean=False),
        "get_aggregated_posterior": lambda: model.get_aggregated_posterior(),
    }


def _methods_cgmdvae(model, adata):
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    return {
        "get_latent_representation": lambda: model.get_latent_representation(),
        "get_latent_representation(w)": lambda: model.get_latent_representation(representation="w"),
        "get_latent_representation(condition)": lambda: model.get_latent_representation(
            condition="ctrl"
        ),
        "predict_clusters": lambda: model.predict_clusters(soft=True),
        "predict_labels": lambda: model.predict_labels(),
        "write_to_adata": lambda: model.write_to_adata(adata.copy()),
        "sample": lambda: model.sample(10, cluster=0, condition="stim", seed=0),
        "sample(any cluster)": lambda: model.sample(10),
        "translate": lambda: model.translate(ctrl, "stim"),
        "latent_shift": lambda: model.predict_perturbation(ctrl, "stim", method="latent_shift"),
        "nearest_response(latent)": lambda: model.predict_perturbation(
            ctrl, "stim", method="nearest_response", similarity="latent"
        ),
        **_scvi_api(model),
    }


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_vae_methods_run_on_the_module_device(which, request):
    model, adata = request.getfixturevalue(which)
    methods = (_methods_zinbvae if which == "zinbvae" else _methods_cgmdvae)(model, adata)
    reference = model.get_latent_representation()
    state = _on_meta(model)
    try:
        failures = {}
        for name, call in methods.items():
            try:
                _fails_on_meta_only(call)
            except AssertionError as err:
                failures[name] = str(err).splitlines()[0]
        assert not failures, failures
    finally:
        _back_on_cpu(model, state)
    np.testing.assert_array_equal(model.get_latent_representation(), reference)


def test_deconvolution_and_archetypes_run_on_the_module_device():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    deconv = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    deconv.train(max_epochs=2, **TRAIN)
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    arch = dv.model.Archetypes(mix, n_archetypes=3)
    arch.train(max_epochs=2, **TRAIN)
    _on_meta(deconv)
    _on_meta(arch)
    for call in (
        deconv.get_proportions,
        deconv.get_abundance,
        deconv.get_signatures,
        deconv.get_technology_factor,
        lambda: deconv.write_to_adata(deconv.adata.copy()),
        arch.get_archetype_weights,
        arch.get_archetype_profiles,
        arch.get_anchors,
        arch.get_markers,
        lambda: arch.write_to_adata(mix.copy()),
    ):
        _fails_on_meta_only(call)


def test_a_mistake_after_the_encoder_is_caught(zinbvae, monkeypatch):
    """A CPU tensor made in the decoder (here the library size) is flagged too: the checks of
    the distributions' arguments no longer stop every method at the encoder."""
    model, _ = zinbvae
    module = model.module
    generative = type(module).generative

    def cpu_library(self, z, library, *args, **kwargs):
        return generative(self, z, torch.zeros(library.shape), *args, **kwargs)

    monkeypatch.setattr(type(module), "generative", cpu_library)
    state = _on_meta(model)
    try:
        with pytest.raises(AssertionError):
            _fails_on_meta_only(lambda: model.get_normalized_expression())
    finally:
        _back_on_cpu(model, state)


def test_a_forgotten_move_is_caught(zinbvae):
    """The check itself: a CPU minibatch handed straight to a meta module is flagged."""
    model, adata = zinbvae
    x = torch.as_tensor(np.asarray(adata.X[:4].toarray()), dtype=torch.float32)
    batch = torch.zeros(4, 1)
    state = _on_meta(model)
    try:
        with pytest.raises(AssertionError):
            _fails_on_meta_only(lambda: model.module.inference(x, batch))
    finally:
        _back_on_cpu(model, state)


class _OffCpu(torch.Tensor):
    """A tensor standing in for one on a GPU: its ``cpu()`` gives a plain tensor."""

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor)

    def __deepcopy__(self, memo):
        return self.as_subclass(torch.Tensor).clone().as_subclass(_OffCpu)


def _loose_tensors(module) -> list:
    """The tensors a module's submodules hold outside parameters and buffers."""
    found = []
    for sub in module.modules():
        for value in sub.__dict__.values():
            values = value if type(value) in (list, tuple) else [value]
            for v in values:
                for t in v if type(v) in (list, tuple) else [v]:
                    if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                        found.append(t)
    return found


def test_a_pickle_holds_no_tensor_of_the_training_device(counts):
    """Trained on a GPU, a query model's gradient masks and the latent imputer's cached batch
    (tensors outside parameters and buffers, which ``.to`` does not move) stayed on CUDA in a
    pickle, which a machine without a GPU cannot load."""
    from deltavae.model._scvi_glue import _picklable_state

    reference = counts.copy()
    dv.model.ZINBVAE.setup_anndata(reference, batch_key="condition")
    vae = dv.model.ZINBVAE(reference, n_latent=3, n_hidden=16)
    vae.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    query = counts[counts.obs["condition"] == counts.obs["condition"].iloc[0]].copy()
    query.obs["condition"] = "new"
    mapped = dv.model.ZINBVAE.load_query_data(query, vae)
    spots, ref = dv.datasets.pseudo_spots(counts, "cluster", n_spots=30, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few genes shared: fine for the test
        imputer = dv.model.SpatialImputer.from_reference(
            spots[:, spots.var_names[:30]].copy(), ref, labels_key="cluster", design="latent"
        )
    imputer.train(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    for model in (mapped, imputer):
        module = model.module
        loose = _loose_tensors(module)
        assert loose, "the test needs tensors outside parameters and buffers"
        for sub in module.modules():  # put them "on the GPU"
            for key, value in list(sub.__dict__.items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                    sub.__dict__[key] = value.as_subclass(_OffCpu)
                elif type(value) is list:
                    sub.__dict__[key] = [
                        tuple(t.as_subclass(_OffCpu) if type(t) is torch.Tensor else t for t in v)
                        if type(v) is tuple
                        else v
                        for v in value
                    ]
        assert any(type(t) is _OffCpu for t in _loose_tensors(module))
        pickled = _picklable_state(model)["module"]
        assert not [t for t in _loose_tensors(pickled) if type(t) is _OffCpu]


def _as_if_saved_on_a_gpu(path) -> None:
    """Point every tensor of a torch file at ``cuda:0``, as a save on a GPU leaves them: torch
    refuses to load such a file on a machine without a GPU unless given ``map_location``."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        items = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            archive.writestr(info, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_a_model_saved_on_a_gpu_loads_without_one(counts, cgmdvae, tmp_path):
    """Every tensor mapped to the CPU (torch.load's map_location): the parameters, and for a
    CGMDVAE the library quantiles and cluster-condition counts sample draws from (the same
    cells from one seed)."""
    adata = counts.copy()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    vae.train(max_epochs=1, **TRAIN)
    spots, ref = dv.datasets.pseudo_spots(counts, "cluster", n_spots=30, seed=0)
    deconv = dv.model.NMFDeconv.from_reference(
        spots.copy(), reference=ref, labels_key="cluster", inference="per_spot"
    )
    deconv.train(max_epochs=1, **TRAIN)
    generator, cells = cgmdvae
    for name, model in (("vae", vae), ("deconv", deconv), ("cgmdvae", generator)):
        model.save(tmp_path / name)
        _as_if_saved_on_a_gpu(tmp_path / name / "model.pt")
    with pytest.raises(RuntimeError, match="CUDA"):  # the check itself
        torch.load(tmp_path / "vae" / "model.pt", weights_only=False)
    expected = vae.get_latent_representation()
    loaded = dv.model.ZINBVAE.load(tmp_path / "vae", adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, rtol=1e-5)
    query = adata[adata.obs["condition"] == "stim"].copy()
    query.obs["condition"] = "new"
    assert dv.model.ZINBVAE.load_query_data(query, tmp_path / "vae").module.device.type == "cpu"
    again = dv.model.NMFDeconv.load(tmp_path / "deconv", spots.copy())
    np.testing.assert_allclose(again.get_proportions(), deconv.get_proportions(), rtol=1e-5)
    loaded = dv.model.CGMDVAE.load(tmp_path / "cgmdvae", cells)
    kept = generator.library_log_quantiles_by_cluster_
    assert kept and loaded.library_log_quantiles_by_cluster_ == kept
    first, again = generator.sample(20, seed=0), loaded.sample(20, seed=0)
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_allclose(first.layers["expected"], again.layers["expected"], rtol=1e-5)


def test_a_seeded_read_out_on_the_cpu_leaves_the_gpus_generators_alone(cgmdvae, monkeypatch):
    """``sample(seed=)`` seeded with ``torch.manual_seed``, which seeds every GPU's generator
    too (at once, or queued for CUDA's start): a CPU model's seeded read-out reseeded the GPUs
    for good, and a model then trained on a GPU started from that seed, not from
    ``scvi.settings.seed``."""
    gpus_seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", gpus_seeded.append)
    model, _ = cgmdvae
    first, again = model.sample(5, seed=3), model.sample(5, seed=3)
    np.testing.assert_array_equal(first.X, again.X)  # still repeats
    assert not gpus_seeded


@pytest.fixture
def float64_default():
    """torch's default dtype float64 (a user's ``torch.set_default_dtype``), restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def test_generated_cells_do_not_follow_torchs_default_dtype(cgmdvae, float64_default):
    """``sample`` drew w and the library sizes in torch's default dtype: with float64 there,
    the float32 networks refused them ("mat1 and mat2 must have the same dtype")."""
    model, _ = cgmdvae
    cells = model.sample(5, seed=0)
    assert cells.X.dtype == cells.layers["expected"].dtype == np.float32
    assert np.isfinite(cells.layers["expected"]).all()


def test_aggregated_posterior_does_not_follow_torchs_default_dtype(zinbvae, float64_default):
    """The aggregated posterior's mixture weights were made in torch's default dtype: with
    float64 there, its log densities and ``differential_abundance``'s table were float64
    (float32 otherwise)."""
    model, adata = zinbvae
    posterior = model.get_aggregated_posterior()
    assert posterior.log_prob(torch.zeros(1, 3, dtype=torch.float32)).dtype == torch.float32
    target = adata.copy()
    model.differential_abundance(target, sample_key="condition")
    assert set(target.obsm["da_log_probs"].dtypes) == {np.dtype(np.float32)}


def test_gpu_means_apples_gpu_on_a_mac(monkeypatch):
    """Lightning's ``accelerator="gpu"`` is Apple's GPU (MPS) on a Mac, where torch sees no
    CUDA: ``train``, ``load`` and ``load_query_data`` refused it there ("asks for a GPU, but
    torch sees none"), as did the CLI's ``--accelerator gpu``, whose line said it trained on
    the CPU. ``"cuda"`` there is still refused, naming ``"mps"``."""
    from deltavae._cli_commands import _where
    from deltavae.model._device_args import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_accelerator("gpu")
    assert _where("gpu") == "a GPU"
    assert _where("auto") == "the CPU"  # scvi-tools' "auto" never picks MPS
    with pytest.raises(ValueError, match=r"accelerator='cuda' asks for a GPU.*'mps' \(or 'gpu'\)"):
        check_accelerator("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # Linux, no GPU
    with pytest.raises(
        ValueError, match=r"accelerator='gpu' asks for a GPU.*pass accelerator='cpu'"
    ):
        check_accelerator("gpu")
