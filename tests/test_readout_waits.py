"""Read-outs must not make the host wait for a GPU once per minibatch (see test_host_waits.py
for the training steps): counted on a CPU with :class:`_device_tracker.HostWaits` over 10
minibatches, a read-out's waits must not grow with their number. Before, torch.distributions'
argument checks of the module's own outputs (a ``bool`` each), scvi-tools' ZINB's check of the
counts against its support and a ``.cpu()`` per minibatch made CGMDVAE's ``get_elbo`` wait 121
times and ZINBVAE's ``get_latent_representation`` 30.
"""

import hashlib
import warnings

import numpy as np
import pytest
import torch
from _device_tracker import counted_waits
from scvi.model.base import VAEMixin

import deltavae as dv
import deltavae.model._gathered as gathered
from deltavae.model._saved import weights_digest

N_CELLS, BATCH = 640, 64  # 10 minibatches
TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 32, "max_epochs": 1}


def _trained(kind: str, **kwargs):
    adata = dv.datasets.synthetic_counts(
        n_cells=N_CELLS, n_genes=60, n_clusters=3, n_conditions=2, seed=0
    )
    if kind == "ZINBVAE":
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
        model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, **kwargs)
    else:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(**TRAIN)
    return model


@pytest.fixture(scope="module")
def zinbvae():
    return _trained("ZINBVAE", use_observed_lib_size=False)  # a latent library: q(l) too


@pytest.fixture(scope="module")
def cgmdvae():
    return _trained("CGMDVAE")


def _waits(monkeypatch, model, read):
    """``read()`` counted as on a GPU: (its result, waits but the minibatches' own copies to
    the device, the report)."""
    out, tracker = counted_waits(monkeypatch, model.module, read)
    n = sum(k for (what, _), k in tracker.waits.items() if what != "copy to the device")
    return out, n, tracker.waits_report()


def _bounded_and_the_same_by_parts(monkeypatch, model, read, minibatches: int) -> None:
    """``read()`` (cells with X and a "counts" layer) waits at most 12 times over its
    ``minibatches``, and gives the same cells gathered a minibatch at a time."""
    out, n, report = _waits(monkeypatch, model, read)
    assert n <= 12, f"{n} host waits in {minibatches} minibatches:\n{report}"
    monkeypatch.setattr(gathered, "FLUSH_BYTES", 1)
    by_minibatch = read()
    np.testing.assert_array_equal(out.X, by_minibatch.X)
    np.testing.assert_array_equal(out.layers["counts"], by_minibatch.layers["counts"])


READS = {
    "get_latent_representation": lambda m: m.get_latent_representation(batch_size=BATCH),
    "get_latent_representation(give_mean=False)": lambda m: m.get_latent_representation(
        batch_size=BATCH, give_mean=False
    ),
    "get_latent_representation(return_dist=True)": lambda m: m.get_latent_representation(
        batch_size=BATCH, return_dist=True
    ),
    "get_elbo": lambda m: m.get_elbo(batch_size=BATCH),
    "get_reconstruction_error": lambda m: m.get_reconstruction_error(batch_size=BATCH),
    "get_normalized_expression": lambda m: m.get_normalized_expression(batch_size=BATCH),
    "get_normalized_expression(transform_batch=both, n_samples=2)": lambda m: (
        m.get_normalized_expression(
            batch_size=BATCH, transform_batch=["ctrl", "stim"], n_samples=2, return_mean=False
        )
    ),
    "posterior_predictive_sample": lambda m: m.posterior_predictive_sample(
        batch_size=BATCH
    ).todense(),
    "posterior_predictive_sample(transform_batch=both)": lambda m: m.posterior_predictive_sample(
        batch_size=BATCH, transform_batch=["ctrl", "stim"]
    ).todense(),
    "get_marginal_ll": lambda m: m.get_marginal_ll(batch_size=BATCH, n_mc_samples=2),
    "get_marginal_ll(return_mean=False)": lambda m: m.get_marginal_ll(
        batch_size=BATCH, n_mc_samples=2, return_mean=False
    ),
    "get_likelihood_parameters(n_samples=2)": lambda m: tuple(
        m.get_likelihood_parameters(batch_size=BATCH, n_samples=2).values()
    ),
    "get_latent_library_size(give_mean=False)": lambda m: m.get_latent_library_size(
        batch_size=BATCH, give_mean=False
    ),
    "get_feature_correlation_matrix": lambda m: m.get_feature_correlation_matrix(
        batch_size=BATCH, n_samples=2
    ),
}


@pytest.mark.parametrize("name", list(READS))
@pytest.mark.parametrize("kind", ["zinbvae", "cgmdvae"])
def test_readouts_wait_a_bounded_number_of_times(request, monkeypatch, kind, name):
    """At most 6 waits in 10 minibatches (CGMDVAE's latents: one ``.cpu()`` per value, at
    the end), and the numbers of the unchecked read equal the checked one's. Before, scvi-tools'
    loops of get_normalized_expression (a ``.cpu()`` of each minibatch's expression, one per
    transform_batch, and of its z) waited 20 and 30 times, posterior_predictive_sample 10,
    get_marginal_ll 10 (a CPU tensor of the module's each minibatch), get_likelihood_parameters
    30 (mean, dropout, dispersion), get_latent_library_size and the gamma draws of
    get_feature_correlation_matrix 10."""
    model = request.getfixturevalue(kind)
    if kind == "cgmdvae" and name == "get_latent_representation(return_dist=True)":
        pytest.skip("CGMDVAE's get_latent_representation has no return_dist")
    torch.manual_seed(1)
    expected = READS[name](model)  # not on the (stand-in) device: checked as a user's CPU
    torch.manual_seed(1)
    out, n, report = _waits(monkeypatch, model, lambda: READS[name](model))
    assert n <= 6, f"{n} host waits in {N_CELLS // BATCH} minibatches:\n{report}"
    for a, b in zip(*(x if isinstance(x, tuple) else (x,) for x in (expected, out)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert torch.distributions.Distribution._validate_args  # the default put back


@pytest.mark.parametrize("kind", ["zinbvae", "cgmdvae"])
def test_latent_shift_waits_a_bounded_number_of_times(request, monkeypatch, kind):
    """latent_shift's expression, conditions and the parameters of its CPU-drawn counts are
    brought to the host together (:class:`deltavae.model._gathered.Gathered`), not a
    minibatch at a time: 42 (ZINBVAE) and 56 (CGMDVAE) waits before over 10 minibatches of
    the model's 640 cells and 10 of the 320 shifted, the argument checks already off. The draws are
    those of CellDraws cell by cell, whatever the part sizes (a limit of one byte: one part
    per minibatch)."""
    model = request.getfixturevalue(kind)
    adata = model.adata
    source, target = adata.obs["condition"].cat.categories[:2]
    cells = adata[adata.obs["condition"] == source].copy()

    def shift():
        kwargs = {"condition_key": "condition"} if kind == "zinbvae" else {}
        return model.predict_perturbation(
            cells, target, method="latent_shift", batch_size=32, seed=0, **kwargs
        )

    _bounded_and_the_same_by_parts(monkeypatch, model, shift, 20)


@pytest.mark.parametrize("residual", [True, False])
def test_translate_waits_a_bounded_number_of_times(monkeypatch, cgmdvae, residual):
    """translate's expectation, codes and the sources of its CPU-drawn counts (x + delta
    rounded, or the decoder's parameters) brought to the host together: 47 (residual) and
    72 waits before over 10 minibatches, 11 and 8 now; the same cells with a part per
    minibatch."""
    target = cgmdvae.adata.obs["condition"].cat.categories[1]

    def translate():
        return cgmdvae.translate(None, target, batch_size=BATCH, residual=residual, seed=0)

    _bounded_and_the_same_by_parts(monkeypatch, cgmdvae, translate, N_CELLS // BATCH)


def test_zinbvae_latents_as_scvi_tools_reads_them(monkeypatch, zinbvae):
    """Read by our own loop (values on the device until the end), the numbers of scvi-tools'
    ``VAEMixin.get_latent_representation``; reading means draws nothing (each minibatch drew
    z and a latent library and dropped them). A draw (``give_mean=False``) is made on the
    CPU, cell after cell, where scvi-tools drew it on the device minibatch by minibatch: the
    same seed, the same z for any batch_size, one draw of q(z | x) per cell."""
    ours = zinbvae.get_latent_representation(batch_size=BATCH)
    theirs = VAEMixin.get_latent_representation(zinbvae, batch_size=BATCH)
    np.testing.assert_array_equal(ours, theirs)
    loc, var = zinbvae.get_latent_representation(batch_size=BATCH, return_dist=True)
    loc_s, var_s = VAEMixin.get_latent_representation(zinbvae, batch_size=BATCH, return_dist=True)
    np.testing.assert_array_equal(loc, loc_s)
    np.testing.assert_array_equal(var, var_s)
    drawn = {}
    for batch_size in (BATCH, 7, BATCH):
        torch.manual_seed(3)
        drawn.setdefault(batch_size, []).append(
            zinbvae.get_latent_representation(batch_size=batch_size, give_mean=False)
        )
    np.testing.assert_array_equal(*drawn[BATCH])
    # the encoder's values differ in their last bits between minibatch sizes
    np.testing.assert_allclose(drawn[7][0], drawn[BATCH][0], rtol=1e-5, atol=1e-6)
    noise = (drawn[BATCH][0] - loc) / np.sqrt(var)  # 640 cells x 3: standard normal
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1, (noise.mean(), noise.std())
    assert np.abs(noise).max() > 2  # drawn, not the mean
    drawn = []
    rsample = torch.distributions.Normal.rsample
    monkeypatch.setattr(
        torch.distributions.Normal,
        "rsample",
        lambda self, *args, **kwargs: drawn.append(1) or rsample(self, *args, **kwargs),
    )
    zinbvae.get_latent_representation(batch_size=BATCH)
    zinbvae.get_latent_representation(batch_size=BATCH, return_dist=True)
    # 40 draws of q(z) and q(l) before; for give_mean=False, z and l, each drawn by
    # scvi-tools' Encoder (dropped) then by inference: now drawn on the CPU by CellDraws
    zinbvae.get_latent_representation(batch_size=BATCH, give_mean=False)
    assert not drawn


def test_a_user_dataloader_keeps_the_checks(cgmdvae):
    """A user's own dataloader is not checked by the model's setup: scvi-tools' ZINB still
    checks its counts against its support there (a warning for a fraction)."""
    loader = cgmdvae._make_data_loader(cgmdvae.adata, batch_size=BATCH)
    batch = next(iter(loader))
    batch = {**batch, "X": batch["X"] + 0.5}
    if cgmdvae.module.likelihood != "zinb":
        pytest.skip("the ZINB's check")
    with pytest.warns(UserWarning, match="support"):
        cgmdvae.get_elbo(dataloader=[batch])


def test_the_weights_digest_reads_the_weights_once(monkeypatch, cgmdvae):
    """``sample`` names its cells by a digest of the weights: one ``.cpu()`` per parameter
    (49 for this CGMDVAE) before, one now, with the same digest."""
    state = cgmdvae.module.state_dict()
    expected = {}
    for name, value in state.items():
        value = value.detach().cpu().contiguous()
        digest = hashlib.sha256(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        expected[name] = digest.hexdigest()[:32]
    out, n, report = _waits(
        monkeypatch, cgmdvae, lambda: weights_digest(cgmdvae.module.state_dict())
    )
    assert out == expected
    assert n <= 1, report


@pytest.mark.parametrize("batch_size", [BATCH, BATCH // 2])
def test_sample_waits_a_bounded_number_of_times(monkeypatch, cgmdvae, batch_size):
    """sample's decoded parts (z, expectation and the parameters its CPU-drawn counts come
    from) brought to the host together, y and w kept on the host where they were drawn and the
    conditions read from the codes drawn there: 70 waits before in 10 parts of the 640
    cells and 130 in 20 (a ``.cpu()`` of each part's values), 8 now in either. The same
    cells, names and obs with a gathered part per decoded one."""

    def sample():
        return cgmdvae.sample(N_CELLS, seed=0, batch_size=batch_size)

    out, n, report = _waits(monkeypatch, cgmdvae, sample)
    assert n <= 10, f"{n} host waits in {N_CELLS // batch_size} parts:\n{report}"
    monkeypatch.setattr(gathered, "FLUSH_BYTES", 1)
    by_part = sample()
    np.testing.assert_array_equal(out.X, by_part.X)
    for layer in ("expected", "counts"):
        np.testing.assert_array_equal(out.layers[layer], by_part.layers[layer])
    assert list(out.obs_names) == list(by_part.obs_names)
    assert out.obs.equals(by_part.obs)


@pytest.mark.parametrize(
    "name",
    [
        "get_normalized_expression(transform_batch=both, n_samples=2)",
        "posterior_predictive_sample(transform_batch=both)",
    ],
)
def test_means_over_transform_batch_are_the_same_by_parts(monkeypatch, zinbvae, name):
    """The mean over transform_batch is taken on the host a minibatch at a time, as
    scvi-tools takes it: the same numbers whether the minibatches come to the host together or
    one at a time."""
    torch.manual_seed(2)
    together = READS[name](zinbvae)
    monkeypatch.setattr(gathered, "FLUSH_BYTES", 1)
    torch.manual_seed(2)
    np.testing.assert_array_equal(together, READS[name](zinbvae))


@pytest.mark.parametrize("kind", ["zinbvae", "cgmdvae"])
def test_differential_abundance_waits_per_sample_not_per_minibatch(request, monkeypatch, kind):
    """differential_abundance reads each sample's aggregated posterior (a pass of its own,
    whose latents come to the host once) and scores every cell's latent under it: the
    checks of each minibatch's latents against the support made the host wait twice a
    minibatch and sample (86 waits over 10 minibatches and 3 samples, 146 over 20 for
    ZINBVAE). Now as many waits over 20 minibatches as over 10, the same table as the
    checked read."""
    model = request.getfixturevalue(kind)

    def abundance(batch_size):
        target = model.adata.copy()
        model.differential_abundance(target, sample_key="cluster", batch_size=batch_size)
        return target.obsm["da_log_probs"]

    counts = []
    for batch_size in (BATCH, BATCH // 2):
        expected = abundance(batch_size)  # not on the (stand-in) device: checked
        out, n, report = _waits(monkeypatch, model, lambda b=batch_size: abundance(b))
        counts.append(n)
        np.testing.assert_array_equal(expected.to_numpy(), out.to_numpy())
    assert counts[0] == counts[1], f"{counts} host waits in 10 and 20 minibatches:\n{report}"
