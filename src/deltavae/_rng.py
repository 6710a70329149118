"""torch's random generators forked, seeded and put back on any kind of device.

``torch.random.fork_rng`` forks the CPU's generator and, of one kind of device, those of the
devices it is given: the kind defaults to the machine's accelerator, and code that passed
``devices=[device] if device.type == "cuda" else []`` forked the CPU's alone on MPS or XPU,
whose generator a pass inside then moved on for good. These helpers take the kind from the
device itself.

Examples
--------
>>> import torch
>>> before = torch.get_rng_state()
>>> with forked_generators(torch.device("cpu")):
...     _ = torch.rand(3)
>>> bool(torch.equal(torch.get_rng_state(), before))
True
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random

import numpy as np
import torch

__all__ = [
    "accelerator_states",
    "device_module",
    "forked_generators",
    "put_back_states",
    "scvi_seed_kept",
    "seeded_generators",
    "start_seed",
]


def start_seed() -> int:
    """The seed of a model's numpy and scikit-learn starts (a subsample of the data, its PCA,
    k-means++ or furthest-sum picks, NMF's SVD): ``scvi.settings.seed``, or 0 while it is
    unset (None, scvi-tools' default), as scanpy's ``random_state=0``. Drawn from the
    operating system's entropy instead, an unseeded model's start changed from one build to
    the next on the same data, and with it ``Archetypes(n_archetypes="auto")``'s
    explained-variance curve (in its 3rd digit) and the count it chose.

    Examples
    --------
    >>> import scvi
    >>> with scvi_seed_kept():
    ...     scvi.settings._seed = None
    ...     start_seed()
    0
    """
    import scvi

    seed = scvi.settings.seed
    return 0 if seed is None else int(seed)


def device_module(kind: str):
    """torch's module of a kind of device (``torch.cuda``, ``torch.mps``, ...); None for the
    CPU and the meta device, which have no generator of their own."""
    return None if kind in ("cpu", "meta") else getattr(torch, kind, None)


def _takes_device(function) -> bool:
    """Whether a device module's ``get_rng_state`` / ``set_rng_state`` takes the device
    (MPS's took none before torch 2.4: it has one device)."""
    try:
        return "device" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature: as torch's own
        return True


@contextlib.contextmanager
def forked_generators(device, every_device: bool = False):
    """A context in which the CPU's generator and ``device``'s (with ``every_device``, those of
    every device of its kind, as ``torch.manual_seed`` seeds them all) are forked: put back as
    they were on leaving it, whatever drew inside.

    Examples
    --------
    >>> import torch
    >>> with forked_generators("cpu"):
    ...     _ = torch.manual_seed(0)
    """
    device = torch.device(device)
    module = device_module(device.type)
    devices = []
    if module is not None:
        devices = list(range(module.device_count())) if every_device else [device]
    devices, states = _read_states(module, devices)
    cpu = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        _write_states(module, devices, states)


def _read_states(module, devices: list) -> tuple[list, list]:
    """(devices, their generators' states); MPS before torch 2.4 names no device: its one."""
    if devices and not _takes_device(module.get_rng_state):
        return devices[:1], [module.get_rng_state()]
    return devices, [module.get_rng_state(d) for d in devices]


def _write_states(module, devices: list, states: list) -> None:
    for d, state in zip(devices, states, strict=True):
        if _takes_device(module.set_rng_state):
            module.set_rng_state(state, d)
        else:
            module.set_rng_state(state)


@contextlib.contextmanager
def seeded_generators(device, seed: int):
    """The CPU's generator and those of every device of ``device``'s kind seeded with ``seed``
    inside, as they were outside: ``torch.manual_seed`` would reseed every kind of device for
    good (or queue that for CUDA's start).

    Examples
    --------
    >>> import torch
    >>> with seeded_generators("cpu", 0):
    ...     a = torch.rand(2)
    >>> with seeded_generators("cpu", 0):
    ...     bool(torch.equal(torch.rand(2), a))
    True
    """
    device = torch.device(device)
    module = device_module(device.type)
    with forked_generators(device, every_device=True):
        torch.random.default_generator.manual_seed(seed)
        if module is not None and module.device_count():
            getattr(module, "manual_seed_all", module.manual_seed)(seed)
        yield


@contextlib.contextmanager
def scvi_seed_kept():
    """A context inside which ``scvi.settings.seed = ...`` may be set (scvi-tools seeds its
    trainings from it), with everything that setting reseeds or rewrites put back on leaving:
    torch's generators (every accelerator's too), numpy's and Python's global ones, the
    environment variables Lightning and scvi-tools write, cuDNN's flags and the setting itself.

    Examples
    --------
    >>> import numpy as np
    >>> import scvi
    >>> before, state = scvi.settings.seed, np.random.get_state()
    >>> with scvi_seed_kept():
    ...     scvi.settings.seed = 123
    >>> scvi.settings.seed == before, bool(np.random.get_state()[1][0] == state[1][0])
    (True, True)
    """
    import scvi

    devices = accelerator_states()  # where not started: seeded again on leaving
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    names = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "XLA_FLAGS")
    environment = {name: os.environ.get(name) for name in names}
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    seed = scvi.settings.seed
    try:
        with forked_generators("cpu"):
            yield
    finally:
        put_back_states(devices)
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        scvi.settings._seed = seed  # the setter would reseed every generator again


def accelerator_states() -> tuple | None:
    """The generators' states of the machine's accelerator (each of its devices), for
    :func:`put_back_states`; None without one. Where reading them would start it (CUDA or XPU
    not yet in use: reading starts it on every device, and DDP refuses to start after), the
    seed its generators would start from instead: torch's CPU seed now (``torch.manual_seed``,
    as ``scvi.settings.seed`` calls it, seeds the CPU and queues the same seed for the
    accelerator's start)."""
    if hasattr(torch, "accelerator"):  # torch 2.6 and later
        accelerator = torch.accelerator.current_accelerator()
    else:
        accelerator = torch.device("mps" if torch.backends.mps.is_available() else "cuda")
    module = None if accelerator is None else device_module(accelerator.type)
    if module is None:
        return None
    started = getattr(module, "is_initialized", None)
    if started is not None and not started():
        return (module, None, torch.initial_seed())
    return (module, *_read_states(module, list(range(module.device_count()))))


def put_back_states(states: tuple | None) -> None:
    """Set the accelerator's generators to ``states`` (from :func:`accelerator_states`). One
    not started then is seeded with the seed it would have started from: a training inside
    may have started it and drawn, or queued another seed for its start (a GPU's next
    training then drew other numbers than without the call); seeding it queues the seed
    again where it is still not started, and starts nothing."""
    if states is None:
        return
    module, devices, kept = states
    if devices is None:
        getattr(module, "manual_seed_all", module.manual_seed)(kept)
        return
    _write_states(module, devices, kept)
