"""Which Lightning strategies deltavae's Pyro models can train with, and how ``"ddp"`` runs.

The training plan returns the ELBO as a differentiable torch loss under Lightning's automatic
optimisation, so Lightning's ``DDPStrategy`` wraps the plan in ``DistributedDataParallel`` and
averages gradients across processes; nothing else is needed for data parallelism.

``strategy="ddp"`` starts its worker processes with ``fork`` (Lightning's
``"ddp_fork_find_unused_parameters_true"``):

* Lightning's own ``"ddp"`` relaunches the calling script (``sys.argv``) once per device. From
  a notebook Lightning refuses it, and from pytest it would rerun the test session.
* ``"ddp_spawn"`` pickles the model and its AnnData into every worker: scvi-tools' Pyro
  training plan cannot be pickled (it holds a lambda), nor an AnnData opened ``backed`` (an
  HDF5 handle); it is refused.
* ``fork`` copies the parent process, data included, at no cost, from scripts, notebooks and
  tests alike. The one case it cannot serve is a GPU run after CUDA was initialised in the
  parent; then use Lightning's script launcher (``strategy=DDPStrategy()`` from a script) or
  ``torchrun``, under which Lightning starts no processes at all.

Under the script launcher and ``torchrun`` every process runs the whole script, the lines after
``train`` too: each model holds the same parameters (and the cells' split is rank 0's), but
only rank 0's holds the history (``{}`` elsewhere, as in scvi-tools). Guard what writes (a
backed file's ``write_to_adata``, ``save``) with ``if model.trainer.is_global_zero:``. After
``strategy="ddp"`` (fork) the calling process alone goes on, with the history and rank 0's
parameters, its module on the run's first device as after a fit on one device (scvi-tools'
runner moves it there; the workers' weights come back on the CPU): read-outs run on the GPU.
CUDA is then initialised in this process, so a further ``strategy="ddp"`` fit of GPUs from it
is refused (forked processes cannot use CUDA then).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading

import torch
from anndata import AnnData
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

#: Strategies that do not distribute: Lightning picks one device.
SINGLE = (None, "auto", "single_device")


def several_devices(devices) -> bool:
    """Whether Lightning's ``devices`` asks for more than one device (``2``, ``"2"``,
    ``[0, 1]``); ``"auto"`` and ``-1`` (all there are) do not say.

    Examples
    --------
    >>> several_devices(2), several_devices("auto"), several_devices([0, 1]), several_devices(1)
    (True, False, True, False)
    """
    return (_device_count(devices) or 0) > 1


def _device_count(devices) -> int | None:
    """How many devices Lightning's ``devices`` names (``2``, ``"2"``, ``[0, 1]``); None for
    ``"auto"``, ``-1`` and anything else that does not say."""
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 0:
        return devices
    return None


def cells_per_process(n_train: int, devices) -> int:
    """Training cells each DDP process reads (its sampler's share, rounded up); all of them
    when ``devices`` does not say how many processes.

    Examples
    --------
    >>> cells_per_process(258, 2), cells_per_process(258, "auto"), cells_per_process(9, [0, 1])
    (129, 258, 5)
    """
    n = _device_count(devices) or 1
    return -(-n_train // n) if n > 1 else n_train


def process_share(n_train: int, devices, batch_norm: bool = True) -> int:
    """:func:`cells_per_process`, refused where a process would read fewer than 2 cells and
    the model trains BatchNorm layers (``batch_norm``): its one minibatch of one cell is
    dropped (BatchNorm cannot train on it), and Lightning ended the fit with 'No training
    batches', the model untrained, in silence. A model without them (NMFDeconv's and
    SpatialImputer's spots, a query model in eval mode) trains on a minibatch of one.

    Examples
    --------
    >>> process_share(9, 2)
    5
    >>> process_share(2, 2, batch_norm=False)
    1
    >>> process_share(2, 2)
    Traceback (most recent call last):
    ...
    ValueError: With 2 training cells on 2 processes, each process reads 1 cell: ...
    """
    share = cells_per_process(n_train, devices)
    if share < 2 and batch_norm:
        raise ValueError(
            f"With {n_train} training cells on {_device_count(devices)} processes, each process "
            f"reads {share} cell: too few to train on (the model's BatchNorm layers need 2 per "
            "minibatch). Train on one device, or on more cells."
        )
    return share


@contextlib.contextmanager
def workers_stopped(distributed: bool):
    """Run a fit whose DDP workers stop with it: when the fit ends in an exception (a notebook's
    "interrupt kernel" reaches this process only, and Lightning then exits here while forked
    workers trained on at full speed), the worker processes it started are terminated; and
    the SIGINT handler Lightning replaced (left ignored, so the kernel could not be
    interrupted again) is put back."""
    if not distributed:
        yield
        return
    before = set(multiprocessing.active_children())
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except BaseException as err:
        workers = set(multiprocessing.active_children()) - before
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
        diverged = _worker_divergence(err)
        if diverged is not None:
            raise diverged from err
        raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


def _start_method(strategy) -> str:
    if isinstance(strategy, DDPStrategy):
        return strategy._start_method
    return StrategyRegistry[strategy]["init_params"].get("start_method", "popen")


def resolve_strategy(strategy, accelerator: str, adata: AnnData) -> tuple[object, bool]:
    """Check a Lightning ``strategy`` against the accelerator and the data; map ``"ddp"``.

    Parameters
    ----------
    strategy
        ``None``, ``"auto"``, ``"single_device"``, ``"ddp"`` or another name of Lightning's DDP
        family (``"ddp_spawn"``, ``"ddp_fork"``, ...), or a
        :class:`~lightning.pytorch.strategies.DDPStrategy`.
    accelerator
        Lightning accelerator resolved for the run (``"cpu"``, ``"cuda"``/``"gpu"``, ``"mps"``).
    adata
        The AnnData the model trains on.

    Returns
    -------
    The strategy to give Lightning, and whether it distributes over processes.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> resolve_strategy("ddp", "cpu", ad.AnnData(np.ones((2, 2))))
    ('ddp_fork_find_unused_parameters_true', True)
    >>> resolve_strategy("deepspeed", "cpu", ad.AnnData(np.ones((2, 2))))
    Traceback (most recent call last):
    ...
    ValueError: strategy='deepspeed' is not supported ...
    """
    if strategy in SINGLE:
        return strategy, False
    is_ddp = isinstance(strategy, DDPStrategy) or (
        isinstance(strategy, str)
        and strategy in StrategyRegistry
        and StrategyRegistry[strategy]["strategy"] is DDPStrategy
    )
    if not is_ddp:
        raise ValueError(
            f"strategy={strategy!r} is not supported for deltavae's Pyro models; use "
            "strategy='ddp' (several CPU processes or GPUs) or 'auto' (one device)."
        )
    if accelerator not in ("cpu", "gpu", "cuda"):
        raise ValueError(
            f"strategy={strategy!r} cannot run on accelerator={accelerator!r}: DDP needs "
            "accelerator='cpu' (gloo) or 'gpu' (nccl); on this accelerator use strategy='auto'."
        )
    backend = getattr(strategy, "_process_group_backend", None)
    if accelerator == "cpu" and backend not in (None, "gloo"):
        raise ValueError(
            f"process_group_backend={backend!r} cannot run on the CPU; use 'gloo' (or leave it "
            "unset)."
        )
    given = strategy  # named in messages as the user wrote it
    strategy = _finding_unused_parameters("ddp_fork" if strategy == "ddp" else strategy)
    start = _start_method(strategy)
    if start in ("spawn", "forkserver"):
        # scvi-tools' Pyro training plan holds a lambda ("Can't pickle local object"), and
        # without it torch failed to start the processes ("bad value(s) in fds_to_keep").
        why = (
            f"an AnnData opened backed ({adata.filename}) cannot be pickled"
            if adata.isbacked
            else "deltavae's training plan cannot be pickled"
        )
        raise ValueError(
            f"strategy={given!r} pickles the model and its AnnData into each new process, and "
            f"{why}; use strategy='ddp' (fork), or, where this platform has no fork, run a "
            "script with strategy=lightning.pytorch.strategies.DDPStrategy()."
        )
    if start == "fork" and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"strategy={given!r} needs the 'fork' start method, which this platform lacks; "
            "run a script with strategy=lightning.pytorch.strategies.DDPStrategy() instead."
        )
    if start == "fork" and accelerator != "cpu" and torch.cuda.is_initialized():
        raise ValueError(
            f"strategy={given!r} forks this process, but CUDA is already initialised in it "
            "(by anything on a GPU here: a model trained or read out there, or a DDP fit's, "
            "whose model comes back on its first GPU), and forked processes cannot use CUDA "
            "then. Restart Python and fit with strategy='ddp' before anything uses the GPU, or "
            "run a script with strategy=lightning.pytorch.strategies.DDPStrategy() (Lightning "
            "relaunches the script per GPU) or start it with torchrun."
        )
    return strategy, True


def _finding_unused_parameters(strategy):
    """``strategy`` told to find unused parameters, unless the user said otherwise.

    scvi-tools' decoder holds a per-cell dispersion head that gene-wise dispersion leaves
    unused, and DDP without ``find_unused_parameters=True`` stopped at the second step with
    Lightning's "parameters that were not used in producing the loss" (``"ddp_fork"``, and
    ``DDPStrategy()``, the script launcher this module advises).

    Examples
    --------
    >>> _finding_unused_parameters("ddp_fork")
    'ddp_fork_find_unused_parameters_true'
    >>> _finding_unused_parameters(DDPStrategy())._ddp_kwargs
    {'find_unused_parameters': True}
    >>> _finding_unused_parameters("ddp_fork_find_unused_parameters_false")
    'ddp_fork_find_unused_parameters_false'
    """
    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs.setdefault("find_unused_parameters", True)
        return strategy
    if "find_unused_parameters" in StrategyRegistry[strategy]["init_params"]:
        return strategy  # the user's choice
    named = f"{strategy}_find_unused_parameters_true"
    return named if named in StrategyRegistry else strategy


def own_random_stream(trainer) -> None:
    """In DDP process ``trainer.global_rank`` > 0, torch's random numbers from a stream of its
    own (rank 0 keeps the one it has): forked processes (and a script seeded alike in every
    process) drew the same stream, so the n-th cell of every process's minibatch had the same
    draw of z and the same dropout mask, and the processes' gradients shared their noise.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> _ = torch.manual_seed(0)
    >>> own_random_stream(SimpleNamespace(world_size=2, global_rank=1))
    >>> torch.initial_seed()
    7919
    """
    rank = getattr(trainer, "global_rank", 0)
    if getattr(trainer, "world_size", 1) > 1 and rank > 0:
        torch.manual_seed((torch.initial_seed() + 7919 * rank) % 2**63)


def _worker_divergence(err: BaseException):
    """The :class:`TrainingDivergedError` a DDP worker stopped with, for the calling process:
    torch hands back only its traceback as text. The workers' parameters do not come back
    from a run that stopped, so the model keeps those it had before the run. ``None`` for
    other errors.

    Examples
    --------
    >>> from torch.multiprocessing import ProcessRaisedException
    >>> text = ("Traceback ...\\ndeltavae.train._divergence.TrainingDivergedError: Training "
    ...         "diverged: the training loss became nan at epoch 1, step 2 of 7. The model keeps "
    ...         "the last parameters that gave a finite loss (epoch 1, step 0). Train again "
    ...         "with a lower learning rate, e.g. train(lr=0.0001) (this run used lr=0.001).")
    >>> found = _worker_divergence(ProcessRaisedException(text, 0, 1))
    >>> found.epoch, found.step, found.restored_at
    (1, 2, None)
    >>> "keeps its parameters from before this training run" in str(found)
    True
    >>> str(found).count("Train again")
    1
    """
    import re

    from torch.multiprocessing import ProcessRaisedException

    from ._divergence import TrainingDivergedError

    if not isinstance(err, ProcessRaisedException):
        return None
    found = re.search(r"TrainingDivergedError: (Training diverged: .*)", str(err))
    if found is None:
        return None
    message = found.group(1)
    where = re.search(r"at epoch (\d+), step (\d+)|after epoch (\d+)'s", message)
    epoch = int(where.group(1) or where.group(3)) if where else -1
    step = int(where.group(2)) if where and where.group(2) else 0
    kept = (
        "The model keeps its parameters from before this training run (DDP's worker processes "
        "hand back none from a run that stopped)."
    )
    message = re.sub(r"The model keeps .*?\. (?=Train again|No learning rate)", kept + " ", message)
    return TrainingDivergedError(message, epoch=epoch, step=step, restored_at=None)
