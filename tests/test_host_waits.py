"""On a GPU the host must not wait for the device inside a training step: every wait stalls
the queue of kernels (a step of a small model is mostly Python launching them). Followed on a
CPU with :class:`_device_tracker.HostWaits`, as the models run on a GPU (the divergence guard
reads the losses every ``CHECK_EVERY`` steps; the count likelihood takes its dense path): at
most one wait per ``CHECK_EVERY`` steps, the guard's read of the losses.

``benchmarks/gpu_check.py`` counts the same on a real GPU (CUDA's sync debug mode); these
tests found what it reported on an H200 (a standard Normal prior built as ``Normal(loc, 1.0)``:
torch copies the 1.0 to the device each step).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sparse
import torch
from _device_tracker import HostWaits, counted_waits, on_device, track_moves
from lightning.pytorch.callbacks import Callback
from torch.distributions import Normal

import deltavae as dv
import deltavae.distributions._counts as counts
from deltavae.train import _divergence

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 32}


class _Steps(Callback):
    """Count only inside training steps (forward, backward, optimiser step), or with
    ``validation`` inside validation batches."""

    def __init__(self, tracker: HostWaits, validation: bool = False):
        self.tracker, self.steps, self.validation = tracker, 0, validation

    def _start(self, validation: bool):
        self.tracker.counting = validation == self.validation

    def _end(self, validation: bool):
        self.tracker.counting = False
        self.steps += validation == self.validation

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start(False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end(False)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self._end(True)


@pytest.fixture
def waits(monkeypatch):
    """Train ``model`` under the counter as on a GPU; return (steps, waits report, count)."""
    track_moves(monkeypatch)
    monkeypatch.setattr(
        _divergence.DivergenceGuard, "check_every", property(lambda self: _divergence.CHECK_EVERY)
    )
    monkeypatch.setattr(counts, "sparse_by_default", lambda device: False)

    def run(model, validation=False, **train):
        on_device(model.module)
        tracker = HostWaits()
        steps = _Steps(tracker, validation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tracker:
                model.train(callbacks=[steps], **{**TRAIN, **train})
        return steps.steps, tracker.waits_report(), sum(tracker.waits.values())

    return run


def _allowed(steps: int) -> int:
    return steps // _divergence.CHECK_EVERY + 1


def _counts(n_cells=640, n_genes=60, seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=n_genes, n_clusters=3, n_conditions=2, seed=seed
    )


def test_a_planted_wait_is_counted(waits, monkeypatch):
    """The counter itself: a standard Normal prior built with a Python 1.0, as the ZINBVAE
    had it, is one wait a step."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    kl = torch.distributions.kl_divergence

    def planted(p, q):
        Normal(torch.zeros_like(p.loc), 1.0)
        return kl(p, q)

    monkeypatch.setattr("deltavae.module._zinbvae.kl_divergence", planted)
    steps, report, n = waits(model, max_epochs=3)
    assert n >= steps > 2 * _divergence.CHECK_EVERY
    assert "tensor from host data" in report


# 4 s each: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["zinb", "normal"])
def test_cgmdvae_steps_do_not_wait(waits, likelihood):
    adata = _counts()
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    if likelihood == "normal":
        adata.X = np.log1p(adata.X.toarray() if sparse.issparse(adata.X) else adata.X)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16, likelihood=likelihood)
    steps, report, n = waits(model, max_epochs=3)
    assert steps > 2 * _divergence.CHECK_EVERY
    assert n <= _allowed(steps), f"{n} host waits in {steps} steps:\n{report}"


@pytest.mark.parametrize("latent_library", [False, True])
def test_zinbvae_steps_do_not_wait(waits, latent_library):
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(
        adata, n_latent=3, n_hidden=16, use_observed_lib_size=not latent_library
    )
    steps, report, n = waits(model, max_epochs=3)
    assert steps > 2 * _divergence.CHECK_EVERY
    assert n <= _allowed(steps), f"{n} host waits in {steps} steps:\n{report}"


def test_validation_batches_do_not_wait(waits):
    """Each validation batch's loss is read with the pass's others at its end (once an
    epoch), not batch by batch."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    batches, report, n = waits(model, validation=True, max_epochs=3, train_size=0.5)
    assert batches >= 3 * 10
    assert n == 0, f"{n} host waits in {batches} validation batches:\n{report}"


def _spot_models(n_spots: int) -> dict:
    """Every spot model and variant, on pseudo-spots and on convex mixtures of two slides."""
    cells = dv.datasets.synthetic_counts(n_cells=300, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=n_spots, seed=0)
    models = {
        f"NMFDeconv {inference}": dv.model.NMFDeconv.from_reference(
            spots.copy(), reference=ref, labels_key="cluster", inference=inference
        )
        for inference in ("amortized", "per_spot")
    }
    measured = spots[:, spots.var_names[:100]].copy()
    for design in ("deconvolution", "latent"):
        models[f"SpatialImputer {design}"] = dv.model.SpatialImputer.from_reference(
            measured.copy(), ref, labels_key="cluster", design=design
        )
    mix = dv.datasets.convex_mixtures(n_spots=n_spots, n_genes=60, n_archetypes=3, seed=0)
    mix.obs["slide"] = ["a", "b"] * (n_spots // 2)
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    models["Archetypes"] = dv.model.Archetypes(mix, n_archetypes=3)
    return models


# 4-7 s: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_spot_model_steps_do_not_wait(waits):
    models = _spot_models(200)
    found = {}
    for name, model in models.items():
        steps, report, n = waits(model, max_epochs=7, batch_size=20)
        assert steps > 2 * _divergence.CHECK_EVERY, name
        if n > _allowed(steps):
            found[name] = f"{n} host waits in {steps} steps:\n{report}"
    assert not found, "\n".join(f"{k}: {v}" for k, v in found.items())


def test_reads_answering_python_values_or_sized_by_the_values_are_counted():
    """The counter itself: ``torch.equal`` and ``allclose`` of device tensors answer a Python
    bool, and ``bincount``, a one-argument ``where`` and ``repeat_interleave`` by device counts
    make a tensor whose size the host must read first: each waits for the device on a GPU, and
    none was counted."""
    layer = torch.nn.Linear(3, 2)
    on_device(layer)
    tracker = HostWaits()
    with tracker:
        out = layer(torch.ones(4, 3).to(layer.weight.device))
        tracker.counting = True
        codes = (out[:, 0] > 0).long()
        torch.where(out > 0, out, 0.0)  # fine: elementwise, no size read
        out.repeat_interleave(2, dim=0)  # fine: a Python count
        torch.equal(out, out)
        torch.allclose(out, out)
        torch.bincount(codes, minlength=2)
        torch.where(out > 0)
        out.repeat_interleave(codes + 1, dim=0)
    assert sorted(what for what, _ in tracker.waits) == [
        "allclose",
        "bincount",
        "equal",
        "repeat_interleave by device counts",
        "where of a condition alone",
    ], tracker.waits_report()


def test_counted_reads_fail_where_they_mix_devices(monkeypatch):
    """The counter itself: a read counted as on a GPU (``counted_waits``, which the read-out
    wait tests use) fails where it mixes devices or hands back a device tensor; before, it
    counted the waits of a path CUDA refuses and passed."""
    layer = torch.nn.Linear(3, 2)

    def fine():  # moved to the device, brought back
        return layer(torch.ones(4, 3).to(layer.weight.device)).detach().cpu()

    out, tracker = counted_waits(monkeypatch, layer, fine)
    assert out.shape == (4, 2) and not tracker.mixes
    with pytest.raises(AssertionError, match=r"linear"):
        counted_waits(monkeypatch, layer, lambda: layer(torch.ones(4, 3)))
    with pytest.raises(AssertionError, match=r"returned a device tensor"):
        counted_waits(monkeypatch, layer, lambda: layer.weight.detach() * 2)


def test_pyro_programs_copy_nothing_to_the_device():
    """The Pyro programs (``model`` and ``guide``, for Pyro's own tools; training runs the
    torch ELBO) made their priors' scales from Python numbers, one copy to the device per
    prior and call. Pyro's argument validation still reads on the host there (``bool`` of a
    check), which is Pyro's, so only copies are counted."""
    import pyro

    zinb, cgmd = _counts(n_cells=200), _counts(n_cells=200)
    dv.model.ZINBVAE.setup_anndata(zinb)
    dv.model.CGMDVAE.setup_anndata(cgmd, condition_key="condition")
    models = {
        "ZINBVAE": dv.model.ZINBVAE(zinb),
        "CGMDVAE": dv.model.CGMDVAE(cgmd, n_clusters=3),
        **_spot_models(60),
    }
    found = {}
    for name, model in models.items():
        batch = next(iter(model._make_data_loader(model.adata, batch_size=32)))
        args, kwargs = model.module._get_fn_args_from_batch(batch)
        on_device(model.module)
        for t in [*args, *kwargs.values()]:
            if isinstance(t, torch.Tensor):
                t._dv_where = "device"  # as the minibatch would be
        tracker = HostWaits()
        tracker.counting = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tracker:
                guide = pyro.poutine.trace(model.module.guide).get_trace(*args, **kwargs)
                replayed = pyro.poutine.replay(model.module.model, trace=guide)
                pyro.poutine.trace(replayed).get_trace(*args, **kwargs)
        copies = {k: n for k, n in tracker.waits.items() if "host data" in k[0]}
        if copies:
            found[name] = copies
    assert not found, found


def test_predict_labels_waits_once_per_value_not_per_minibatch(monkeypatch):
    """A read-out's latents, probabilities and typicality scores are brought to the host once
    each, at the end, and torch's distributions are made unchecked there as in training: 17
    waits a minibatch before (a ``.cpu()`` per value, a ``bool`` per argument check), and
    now only the minibatch's own copies to the device (as scvi-tools' read-outs make)."""
    adata = _counts()
    labelled = np.arange(adata.n_obs) % 3 == 0
    adata.obs["cell_type"] = np.where(labelled, adata.obs["cluster"].astype(str), "Unknown")
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key="condition", labels_key="cell_type", unlabeled_category="Unknown"
    )
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    before = model.predict_labels(batch_size=64)  # the typicality record scored first
    after, tracker = counted_waits(
        monkeypatch, model.module, lambda: model.predict_labels(batch_size=64)
    )
    batches = -(-adata.n_obs // 64)
    copies = sum(n for (what, _), n in tracker.waits.items() if what == "copy to the device")
    others = sum(tracker.waits.values()) - copies
    assert copies <= 4 * batches
    assert others <= 6, f"{others} host waits in {batches} minibatches:\n{tracker.waits_report()}"
    pd.testing.assert_frame_equal(before, after)
    assert torch.distributions.Distribution._validate_args  # the default put back


# 8 s: in the slow stage, which CI runs too.
@pytest.mark.slow
def test_a_pretrained_cgmdvae_trains_without_waits(waits):
    """CGMDVAE.from_zinbvae's first training (mixture placed at epoch 0, no KL warm-up,
    early_stopping='auto' validating every epoch): its steps and, of another first
    training, its validation batches."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae.train(max_epochs=1, **TRAIN)
    run = {"max_epochs": 3, "train_size": 0.7, "early_stopping": "auto"}
    steps, report, n = waits(dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3), **run)
    assert steps > 2 * _divergence.CHECK_EVERY
    assert n <= _allowed(steps), f"{n} host waits in {steps} steps:\n{report}"
    model = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=3)
    batches, report, n = waits(model, validation=True, **{**run, "max_epochs": 2})
    assert batches >= 2 * 6
    assert n == 0, f"{n} host waits in {batches} validation batches:\n{report}"
