"""torch's generators of every kind of device forked and put back, followed on a CPU: the
generator of an MPS or XPU device stands in as a CPU generator behind torch's functions."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "deltavae"


@pytest.fixture(params=["mps", "xpu"])
def device_generator(request, monkeypatch):
    """(kind, generator): torch's functions of that kind of device read and seed
    ``generator``, as if one such device were there."""
    kind, generator = request.param, torch.Generator().manual_seed(123)
    module = getattr(torch, kind)
    for name in ("manual_seed", "manual_seed_all"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, lambda s: generator.manual_seed(int(s)))
    monkeypatch.setattr(module, "get_rng_state", lambda device=kind: generator.get_state())
    monkeypatch.setattr(
        module, "set_rng_state", lambda state, device=kind: generator.set_state(state)
    )
    monkeypatch.setattr(module, "device_count", lambda: 1)
    if hasattr(module, "is_initialized"):
        monkeypatch.setattr(module, "is_initialized", lambda: True)
    return kind, generator


def test_seeded_restores_the_generators_of_a_model_on_mps_or_xpu(device_generator):
    """``seeded`` forked CUDA's generators only and seeded with ``torch.manual_seed``: a
    seeded read-out of a model on MPS (or XPU) left that device's generator reseeded for
    good, so the user's later draws there repeated."""
    from deltavae.model._scvi_glue import seeded

    kind, generator = device_generator
    before, cpu = generator.get_state(), torch.get_rng_state()
    with seeded(SimpleNamespace(device=torch.device(kind)), 7):
        assert generator.initial_seed() == 7  # the device's draws follow the seed too
        torch.rand(3)
    assert torch.equal(generator.get_state(), before)
    assert torch.equal(torch.get_rng_state(), cpu)


def test_forked_generators_put_back_the_devices_generator(device_generator):
    from deltavae._rng import forked_generators

    kind, generator = device_generator
    before = generator.get_state()
    with forked_generators(torch.device(kind)):
        torch.rand(3, generator=generator)
    assert torch.equal(generator.get_state(), before)


def test_side_passes_fork_the_generator_of_the_models_device():
    """The passes beside training (its terms logged, their names, the divergence check from
    the start, the eval-mode verdict) forked CUDA's generator only: on MPS or XPU they moved
    the device's generator on, so logging changed the draws of training there."""
    forks = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.name != "_rng.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "fork_rng(" in line
    ]
    assert not forks, f"fork_rng outside deltavae._rng.forked_generators: {forks}"


def test_the_cli_puts_the_accelerators_generator_back(device_generator, monkeypatch):
    """``main`` from Python put back CUDA's generators only: its ``--seed`` reseeded an MPS
    (or XPU) machine's generator for good."""
    from deltavae._cli_files import session_kept

    kind, generator = device_generator
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a: torch.device(kind))
    before, cpu = generator.get_state(), torch.get_rng_state()
    with session_kept():
        torch.manual_seed(3)  # as seeding scvi-tools does
        assert generator.initial_seed() == 3
    assert torch.equal(generator.get_state(), before)
    assert torch.equal(torch.get_rng_state(), cpu)


@pytest.mark.parametrize("kind", ["mps", "xpu"])
def test_a_model_pickled_on_mps_or_xpu_goes_back_there(kind, monkeypatch):
    """Unpickling put a module back on CUDA only: a model pickled on a Mac's GPU (or an
    XPU) came back on the CPU on that very machine."""
    import deltavae as dv

    adata = dv.datasets.synthetic_counts(20, 10, 2, 1, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    state = model.__getstate__()
    state["_pickled_device"] = f"{kind}:0"  # as a model on that device pickles
    monkeypatch.setattr(getattr(torch, kind), "device_count", lambda: 1)
    moved = []
    monkeypatch.setattr(type(state["module"]), "to", lambda m, device: moved.append(device) or m)
    copy = object.__new__(dv.model.ZINBVAE)
    copy.__setstate__(state)
    assert moved == [torch.device(f"{kind}:0")]


def test_mps_generators_without_a_device_argument_are_forked(monkeypatch):
    """torch before 2.4 reads and sets MPS's one generator without naming a device, where
    ``torch.random.fork_rng`` passes one."""
    from deltavae._rng import forked_generators

    generator = torch.Generator().manual_seed(5)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: generator.get_state())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state: generator.set_state(state))
    monkeypatch.setattr(torch.mps, "device_count", lambda: 1)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a: torch.device("mps"))
    before = generator.get_state()
    with forked_generators("mps", every_device=True):
        generator.manual_seed(9)
    assert torch.equal(generator.get_state(), before)
    from deltavae._cli_files import session_kept

    with session_kept():
        generator.manual_seed(9)
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("kind", ["cuda", "xpu"])
@pytest.mark.parametrize("context", ["scvi_seed_kept", "session_kept"])
def test_an_accelerator_started_inside_is_left_as_it_would_have_started(kind, context, monkeypatch):
    """``SpatialImputer.cross_validate`` (``scvi_seed_kept``) and the CLI's ``main`` put the
    accelerator's generators back only where it was in use before: in a fresh session on a
    GPU, cross-validation started CUDA, seeded it with its own seed and trained there, so the
    user's next GPU training drew other numbers than without the call."""
    import scvi

    from deltavae._cli_files import session_kept
    from deltavae._rng import scvi_seed_kept

    generator, started = torch.Generator(), [False]
    module = getattr(torch, kind)
    for name in ("manual_seed", "manual_seed_all"):  # as torch seeds it: at once, or queued
        monkeypatch.setattr(module, name, lambda s: generator.manual_seed(int(s)))
    monkeypatch.setattr(module, "get_rng_state", lambda device=kind: generator.get_state())
    monkeypatch.setattr(
        module, "set_rng_state", lambda state, device=kind: generator.set_state(state)
    )
    monkeypatch.setattr(module, "device_count", lambda: 1)
    monkeypatch.setattr(module, "is_initialized", lambda: started[0])
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a: torch.device(kind))
    scvi.settings.seed = 11  # the user's seed: the device starts from it
    fresh = generator.get_state()
    with {"scvi_seed_kept": scvi_seed_kept, "session_kept": session_kept}[context]():
        scvi.settings.seed = 5
        started[0] = True  # a training on the device starts it and draws there
        torch.rand(3, generator=generator)
    assert torch.equal(generator.get_state(), fresh)
    assert scvi.settings.seed == 11
