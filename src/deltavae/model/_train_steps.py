"""The steps of :meth:`~deltavae.model._base.DeltaModelMixin.train`, in the order it takes
them: its arguments checked and resolved, the validation split, the data checked, the devices
and strategy, the data splitter's arguments, and, after the fit, what the run records (its
best epoch, its convergence verdict) or what diverged."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scvi
from scvi.model._utils import get_max_epochs_heuristic

from ..train._data import split_sizes
from ..train._distributed import SINGLE, process_share, resolve_strategy, several_devices
from ._backing import warn_compressed_chunks
from ._device_args import resolved_accelerator
from ._genes import check_own_adata
from ._matrices import check_still_on_disk
from ._plan_checks import checked_plan
from ._scvi_glue import drop_scvi_no_ops, refuse_scvi_names
from ._training_checks import (
    check_shuffle_block_size,
    check_trainer_names,
    check_training_arguments,
    lr_into_optim_kwargs,
    rows_unit,
    say_if_nothing_restored,
    trains_batch_norm,
)
from ._validation import check_backing_for_training
from ._verdicts import say_verdict


class Arguments(NamedTuple):
    """``train``'s arguments as the fit takes them."""

    max_epochs: int
    batch_size: int
    lr: float | None
    plan_kwargs: dict
    #: ``n_epochs_kl_warmup="auto"`` warmed up over this share of the epochs, else None.
    warmup_share: int | None


def resolved_arguments(
    model, max_epochs, train_size, validation_size, batch_size, early_stopping, lr,
    n_epochs_kl_warmup, plan_kwargs, restore_best, accelerator, trainer_kwargs: dict,
) -> Arguments:  # fmt: skip
    """``train``'s arguments checked (before anything is read or trained) and resolved: the
    default ``max_epochs`` and ``batch_size``, ``lr`` and the warm-up into ``plan_kwargs``.
    Takes scvi-tools' no-ops (``load_sparse_tensor=False`` ...) out of ``trainer_kwargs``."""
    if max_epochs is None:
        max_epochs = get_max_epochs_heuristic(model.adata.n_obs, epochs_cap=400)
    if batch_size is None:  # SCVI's and SCANVI's None: scvi-tools' setting
        batch_size = scvi.settings.batch_size
    drop_scvi_no_ops(trainer_kwargs)  # load_sparse_tensor=False ...: scvi-tools' no-ops
    refuse_scvi_names("train", type(model).__name__, trainer_kwargs)
    check_trainer_names(type(model), trainer_kwargs)
    given = checked_plan(plan_kwargs)
    if lr is not None and "lr" in given and given["lr"] != lr:
        raise ValueError(
            f"lr={lr!r} and plan_kwargs['lr']={given['lr']!r} disagree; pass one of them."
        )
    check_training_arguments(
        model, max_epochs, train_size, validation_size, batch_size, early_stopping, given, lr,
        restore_best, accelerator, trainer_kwargs,
    )  # fmt: skip
    max_epochs, batch_size = int(max_epochs), int(batch_size)  # numpy's: Lightning, torch
    if auto := n_epochs_kl_warmup == "auto":
        n_epochs_kl_warmup = model._auto_warmup(max_epochs, given)
    elif given.get("n_epochs_kl_warmup", n_epochs_kl_warmup) != n_epochs_kl_warmup:
        raise ValueError(
            f"n_epochs_kl_warmup={n_epochs_kl_warmup!r} and plan_kwargs['n_epochs_kl_warmup']"
            f"={given['n_epochs_kl_warmup']!r} disagree; pass one of them."
        )
    plan_kwargs = {"n_epochs_kl_warmup": n_epochs_kl_warmup, **(plan_kwargs or {})}
    lr, plan_kwargs = lr_into_optim_kwargs(lr, plan_kwargs)  # scvi-tools would drop them
    warm_up = plan_kwargs["n_epochs_kl_warmup"]
    if warm_up is not None and (not isinstance(warm_up, int | np.integer) or warm_up < 0):
        raise ValueError(f"n_epochs_kl_warmup must be 0 or more epochs (or None); got {warm_up!r}.")
    share = model._warmup_share if auto and "n_epochs_kl_warmup" not in given else None
    return Arguments(max_epochs, batch_size, lr, plan_kwargs, share)


def validation_split(
    n_cells: int, train_size, validation_size, trainer_kwargs: dict
) -> tuple[int, bool]:
    """The number of training cells and whether any cell validates; ``trainer_kwargs`` set to
    validate every epoch (``check_val_every_n_epoch``), or never where no cell validates."""
    split = trainer_kwargs.get("datasplitter_kwargs") or {}
    n_train, n_val = split_sizes(n_cells, train_size, validation_size, split)
    validates = n_val > 0
    every = trainer_kwargs.get("check_val_every_n_epoch")  # None: scvi-tools' "never"
    if validates or every is not None:  # int: Lightning refuses numpy's
        trainer_kwargs["check_val_every_n_epoch"] = int(every or 1)
    if not validates:  # every cell trains: there is no validation ELBO to compute
        trainer_kwargs.setdefault("limit_val_batches", 0)
    return n_train, validates


def epochs_trained(model) -> int:
    """The epochs of ``history`` that earlier ``train`` calls trained."""
    history = getattr(model, "history_", None) or {}
    return len(history.get("elbo_train", ())) if model.is_trained_ else 0


def check_data_to_train(model) -> None:
    """The model's AnnData as training reads it: its file still there (moved or deleted,
    zarr would read zeros), not opened to write, and its registered columns the model's."""
    check_still_on_disk(model.adata)
    check_backing_for_training(model.adata)
    # Another model set up on the same AnnData (or a read call of one) rewrites the
    # registered columns (obs["_scvi_batch"] ...) with its own codes: ours are taken back.
    check_own_adata(model, training=True)


def devices_and_strategy(model, accelerator, device, trainer_kwargs: dict) -> tuple[object, bool]:
    """The device(s) to train on (Lightning's ``devices``, taken out of ``trainer_kwargs``, or
    ``device``) and whether training is distributed; the strategy resolved into
    ``trainer_kwargs``."""
    named = "devices" if "devices" in trainer_kwargs else "device"  # as the user wrote it
    if "devices" in trainer_kwargs:
        # Lightning's name; scvi-tools' runner would silently drop it.
        devices = trainer_kwargs.pop("devices")
        if device != "auto":
            raise ValueError(f"Pass devices={devices!r} or device={device!r}, not both.")
        device = devices
    strategy = trainer_kwargs.pop("strategy", None)
    if strategy in SINGLE and several_devices(device):
        strategy = "ddp"  # what several devices mean; Lightning's own choice fails here
    strategy, distributed = resolve_strategy(
        strategy,
        resolved_accelerator(accelerator, device, named),  # "cuda:0" refused; CPU DDP said
        model.adata,
    )
    if strategy is not None:
        trainer_kwargs["strategy"] = strategy
    return device, distributed


def add_splitter_arguments(
    model, batch_size: int, shuffle_block_size, n_train: int, distributed: bool, device,
    trainer_kwargs: dict,
) -> None:  # fmt: skip
    """The data splitter's arguments into ``trainer_kwargs["datasplitter_kwargs"]`` (the
    user's win): shuffling in blocks, a sampler per process under DDP, and the last minibatch
    dropped where it would hold one cell and the model trains BatchNorm layers (else it
    trains: NMFDeconv's and SpatialImputer's spots, a query model's cells)."""
    check_shuffle_block_size(shuffle_block_size, distributed, rows_unit(model), n_train)
    warn_compressed_chunks(model.adata_manager, batch_size, shuffle_block_size, model)
    loader = {"block_size": shuffle_block_size} if shuffle_block_size is not None else {}
    if distributed:
        loader["distributed_sampler"] = True
    batch_norm = trains_batch_norm(model)
    if distributed:  # each process's share has its own last minibatch
        n_train = process_share(n_train, device, batch_norm)
    if n_train % batch_size == 1 and batch_norm:
        loader["drop_last"] = True  # one cell left over: BatchNorm (unfrozen) cannot train
    if loader:
        trainer_kwargs["datasplitter_kwargs"] = {
            **loader,
            **(trainer_kwargs.get("datasplitter_kwargs") or {}),
        }


def record_divergence(model, err) -> None:
    """What a run that diverged (:class:`~deltavae.train.TrainingDivergedError`) leaves."""
    # The plan restored the last parameters with a finite loss: after at least one such step
    # the model is trained and usable.
    model.is_trained_ = model.is_trained_ or err.restored_at is not None
    if err.restored_at is not None:  # this run's last finite step, no best epoch
        model.best_epoch_ = None
    # Read-outs repeat what diverged ("the training loss became nan at ..."), when the
    # parameters kept come from this run (not from before it).
    model.diverged_ = (
        str(err).split(". The model")[0].removeprefix("Training diverged: ")
        if err.restored_at is not None
        else model.diverged_
    )


def record_run(
    model, epochs_before: int, best, restore_best, arguments: Arguments, early_stopping
) -> None:
    """What a finished run records (``best_epoch_``, no divergence) and says (an epoch not
    restored, the convergence verdict), from its epochs of ``history``."""
    model.diverged_ = None
    run = {k: v[v.index >= epochs_before] for k, v in model.history.items()}  # this run's
    model.best_epoch_ = None if best is None else best.best_epoch_in(run, epochs_before)
    say_if_nothing_restored(restore_best is True and best is not None, model.best_epoch_)
    say_verdict(
        model, run, arguments.max_epochs, early_stopping, arguments.plan_kwargs,
        arguments.warmup_share,
    )  # fmt: skip
