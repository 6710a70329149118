"""``train``'s device arguments read as the user meant them, or refused with the fix: an
accelerator torch does not see, a device named as torch names it (``"cuda:0"``), several
devices that find no GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from scvi.model._utils import parse_device_args

from .._checks import short_repr
from .._close_names import did_you_mean
from ..train._distributed import several_devices
from ._validation import warn_user


def check_accelerator(accelerator) -> None:
    """Refuse a GPU accelerator where torch sees none, a TPU without torch_xla, a torch
    device given as the accelerator (the CLI asks this before reading), and a name Lightning
    has no accelerator for (``"CPU"``: did you mean ``"cpu"``?)."""
    name = str(accelerator).lower()
    kind, colon, index = name.partition(":")
    if colon and kind in ("cuda", "gpu", "cpu", "mps"):  # Lightning: "invalid accelerator name"
        which = f", device=[{int(index)}]" if index.isdigit() and kind in ("cuda", "gpu") else ""
        raise ValueError(
            f"accelerator={short_repr(accelerator)} names a torch device; the kind of device "
            f"goes in accelerator and which one in device: pass accelerator="
            f"{'gpu' if kind == 'cuda' else kind!r}{which}."
        )
    if isinstance(accelerator, str):
        _check_accelerator_name(accelerator)
    if name == "tpu" and importlib.util.find_spec("torch_xla") is None:
        # Lightning's ModuleNotFoundError named a package requirement, not the argument.
        raise ValueError(
            f"accelerator={accelerator!r} runs on a TPU through torch_xla, which is not installed "
            "here: install it on the TPU machine (pip install torch_xla, matching torch "
            f"{torch.__version__}), or pass accelerator='cpu' (or 'auto': a GPU where there "
            "is one)."
        )
    # Lightning's "gpu" is Apple's GPU (MPS) where torch sees one, else CUDA; "cuda" is CUDA.
    mps = name == "gpu" and torch.backends.mps.is_available()
    if name in ("gpu", "cuda") and not torch.cuda.is_available() and not mps:
        on_a_mac = torch.backends.mps.is_available()  # accelerator="cuda" on a Mac
        raise ValueError(
            f"accelerator={accelerator!r} asks for a GPU, but torch {torch.__version__} sees "
            "none (torch.cuda.is_available() is False): pass accelerator="
            + ("'mps' (or 'gpu') for Apple's GPU" if on_a_mac else "'cpu'")
            + " (or 'auto', which uses a GPU when there is one), or install a CUDA build of torch."
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"accelerator={accelerator!r} asks for Apple's GPU (Metal), which torch "
            f"{torch.__version__} does not see here (torch.backends.mps.is_available() is "
            "False): pass accelerator='cpu', or 'auto' to use a GPU where there is one."
        )


def _check_accelerator_name(accelerator: str) -> None:
    """Refuse a name Lightning has no accelerator for, with the closest: ``"CPU"`` got
    Lightning's "You selected an invalid accelerator name: `accelerator='CPU'`. Available
    names are: auto, tpu, cuda, mps, cpu." (its names are lower case; "gpu" not listed)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    known = ["auto", "cpu", "gpu", *sorted(set(AcceleratorRegistry.available_accelerators()))]
    if accelerator not in known:
        hint = did_you_mean(accelerator, known, end=" ")
        raise ValueError(
            f"accelerator={short_repr(accelerator)} is not an accelerator Lightning knows: "
            f"{hint}Pass one of {', '.join(map(repr, dict.fromkeys(known)))} ('auto': a GPU "
            "where torch sees one)."
        )


def check_device(device, name: str = "device") -> None:
    """Refuse a device named as torch names it (``"cuda:0"``, ``"cuda"``, ``"cpu"``):
    Lightning's ``devices`` takes how many devices, or which (``[0]``); the kind is the
    accelerator's. Lightning said "`devices` selected with `CPUAccelerator` should be an int
    > 0" on a machine without a GPU, and the same of a GPU's ``"cuda:1"``."""
    if not isinstance(device, str) or device == "auto":
        return
    kind, _, index = device.strip().lower().partition(":")
    if kind in ("cuda", "gpu", "cpu", "mps"):
        accelerator = "gpu" if kind in ("cuda", "gpu") else kind
        gpu_index = index.isdigit() and accelerator != "cpu"
        which = f", {name}=[{int(index)}] (the GPU's index, in a list)" if gpu_index else ""
        raise ValueError(
            f"{name}={short_repr(device)} names a torch device; the kind of device goes in "
            f"accelerator and how many (or which) in {name}: pass "
            f"accelerator={accelerator!r}{which}."
        )


def resolved_accelerator(accelerator, device, name: str = "device") -> str:
    """The accelerator Lightning will run ``train`` on (``"cpu"``, ``"cuda"`` ...), with
    ``device`` (given as ``name``: scvi-tools' ``device`` or Lightning's ``devices``)
    checked. Several devices with ``accelerator="auto"`` on a machine without a GPU ran that
    many CPU processes (DDP over gloo) without a word: said, with the fix."""
    check_device(device, name)
    check_device_count(device, accelerator, name)
    resolved = parse_device_args(accelerator, device, return_device="torch")[0]
    if str(accelerator).lower() == "auto" and resolved == "cpu" and several_devices(device):
        warn_user(
            f"{name}={short_repr(device)} found no GPU (accelerator='auto'): training runs "
            "as that many CPU processes (DDP over gloo), each on its share of the cells. "
            f"Pass accelerator='cpu' to mean this, or leave {name} out to train in one process."
        )
    return resolved


def check_device_count(device, accelerator, name: str = "device") -> None:
    """Refuse a ``device`` (given as ``name``) Lightning refuses in its own words, or takes
    for another: no device (``0``), GPU indices (``[0]``, ``-1``: every GPU) for a run on
    the CPU ("`devices` selected with `CPUAccelerator` should be an int > 0", naming neither
    the argument given nor the fix), a fraction, or ``True`` (trained as one device)."""
    if isinstance(device, str):
        return  # "auto", "2", "0,1": Lightning's; torch's names are refused by check_device
    device = device.tolist() if isinstance(device, np.ndarray) else device
    kind = str(accelerator).lower()
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    on_cpu = kind == "cpu" or (kind == "auto" and not gpu)
    why = "accelerator='cpu'" if kind == "cpu" else "torch sees no GPU"
    if isinstance(device, list | tuple) and on_cpu or device == -1 and on_cpu:
        raise ValueError(
            f"{name}={short_repr(device)} picks GPUs, but the model runs on the CPU ({why}): "
            f"leave {name} out (or pass {name}=N to train as N CPU processes)."
        )
    if isinstance(device, list | tuple):
        return
    if (
        isinstance(device, bool)
        or not isinstance(device, int | np.integer)
        or device < -1
        or not device
    ):
        gpus = "" if on_cpu else "; -1: every GPU), which GPUs as a list of indices ([0]"
        raise ValueError(
            f"{name}={short_repr(device)} is not a number of devices: pass how many (1 or "
            f"more{gpus}), or 'auto'."
        )


def check_device_args(accelerator, device, name: str = "device") -> None:
    """``load`` and ``load_query_data``'s ``accelerator`` and ``device`` checked as ``train``'s
    are (Lightning refused ``device=0``, ``[0]`` or ``"cuda:0"`` on a CPU in its own words)."""
    check_accelerator(accelerator)
    check_device(device, name)
    check_device_count(device, accelerator, name)
