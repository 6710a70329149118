"""Training arguments checked before anything trains: every mistake named with its fix,
none left to crash late inside Lightning or to be silently ignored."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from .._checks import is_number, short_repr
from .._close_names import did_you_mean
from .._renamed import foreign_hint
from .._rng import forked_generators
from ..train._data import split_sizes
from ._device_args import check_accelerator
from ._freeze import ReferenceBatchNorm1d
from ._plan_checks import check_optimizer_settings, check_plan_names, check_plan_numbers
from ._split_checks import checked_external_split, none_held_out
from ._trainer_args import (  # noqa: F401 (callback_list: _base)
    callback_list,
    check_precision,
    check_trainer_objects,
)
from ._trainer_names import trainer_names
from ._validation import warn_user


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_batch_size(batch_size, optional: bool = True) -> None:
    """Refuse a ``batch_size`` that is not a positive integer (``None``, the default, when
    ``optional``), before training or a read-out: a read-out of cached results never reached
    torch's own check, and torch's message named no argument of ours.

    Examples
    --------
    >>> check_batch_size(None), check_batch_size(np.int64(8))
    (None, None)
    >>> check_batch_size(0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got 0.
    """
    if batch_size is None and optional:
        return
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {short_repr(batch_size)}.")


#: train() keywords of older scvi-tools (before 1.0) and of other libraries, with what takes
#: their place (the closest names misled: learning_rate was offered learning_rate_monitor),
#: said by ``_renamed.foreign_hint`` as every function's: a keyword of ours (with a note) is
#: named with the value given, a sentence is said as it is.
_GPU = "pass accelerator='gpu' (or 'cpu')"
_SEED = "training is seeded by scvi.settings.seed: set it (e.g. to 0) before building the model"
_RENAMED = {
    "use_gpu": "scvi-tools before 1.0 took it; " + _GPU,
    "use_cuda": "scvi-tools before 1.0 took use_gpu; " + _GPU,
    "learning_rate": "lr: the optimiser's learning rate",
    "seed": _SEED,
    "random_state": _SEED,
    "patience": "early_stopping_patience: with early_stopping=True",
}


def check_trainer_names(model_class: type, trainer_kwargs: dict) -> None:
    """A misspelled argument of ``model_class.train`` named with the closest known ones,
    rather than Lightning's TypeError from deep inside."""
    known = trainer_names()
    unknown = [name for name in trainer_kwargs if name not in known]
    if unknown:
        known |= set(inspect.signature(model_class.train).parameters) - {"self", "kwargs"}
        call = f"{model_class.__name__}.train()"
        name = unknown[0]
        hint = (
            foreign_hint(call[:-2], name, trainer_kwargs[name], _RENAMED[name]) + ". "
            if name in _RENAMED
            else did_you_mean(name, sorted(known), end=" ")
        )
        raise TypeError(
            f"{call} got an unexpected argument {name!r}: {hint}It takes its own "
            "arguments and those of scvi-tools' and Lightning's Trainer (e.g. max_epochs, "
            "early_stopping_patience, check_val_every_n_epoch, callbacks)."
        )


def rows_unit(model) -> str:
    """What a model's rows are, for its messages: ``"spot"`` for a spot model, else ``"cell"``
    (``_rows_are_spots``, set by :class:`~deltavae.model._spots.SpotModelMixin`)."""
    return "spot" if getattr(model, "_rows_are_spots", False) else "cell"


def check_training_arguments(
    model,
    max_epochs,
    train_size,
    validation_size,
    batch_size,
    early_stopping,
    plan: dict,
    lr,
    restore_best=False,
    accelerator: str = "auto",
    trainer_kwargs: dict | None = None,
) -> None:
    """Refuse, before anything trains, arguments that would train wrongly, crash late or be
    silently ignored (``plan``: the given ``plan_kwargs``, whose ``lr`` wins over ``lr``;
    ``trainer_kwargs``: the rest, passed on to scvi-tools and Lightning). Each message names
    the model's rows as they are (:func:`rows_unit`: cells, or a spot model's spots), where it
    is written: a regex had rewritten finished messages, the user's quoted values too."""
    unit = rows_unit(model)
    units = f"{unit}s"
    trainer_kwargs = trainer_kwargs or {}
    val_every = trainer_kwargs.get("check_val_every_n_epoch")
    if val_every is None:  # train() validates every epoch (scvi-tools' None: never)
        val_every = 1
    elif not _is_int(val_every) or val_every < 1:  # 0 never validated, -1 and True as 1
        raise ValueError(
            f"check_val_every_n_epoch must be a whole number of epochs, 1 or more, got "
            f"{short_repr(val_every)}; leave it out to validate every epoch."
        )
    monitor = trainer_kwargs.get("early_stopping_monitor")
    given = getattr(model, "_train_given", ())  # the names the user wrote (train/_record.py)
    written = train_size if "train_size" in given else None
    checked_external_split(trainer_kwargs, validation_size, model.adata.n_obs, unit, written)
    split = trainer_kwargs.get("datasplitter_kwargs") or {}
    if "shuffle" in split:  # scvi-tools passes it twice: a raw TypeError
        raise ValueError(
            "datasplitter_kwargs['shuffle'] cannot be set: training minibatches are always "
            f"shuffled. To split the {units} into training and validation in their order, "
            "pass train(..., shuffle_set_split=False)."
        )
    if split.get("load_sparse_tensor"):  # torch's sparse CSR minibatches: the networks refuse
        raise ValueError(
            "datasplitter_kwargs['load_sparse_tensor'] cannot be set: sparse counts are read into "
            f"dense minibatches of {units} here, one at a time; leave it out."
        )
    check_trainer_objects(trainer_kwargs, max_epochs if _is_int(max_epochs) else None)
    check_precision(trainer_kwargs)
    dtypes = {p.dtype for p in model.module.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:  # model.module.double(): its read-outs run, training does not
        raise ValueError(
            f"The module's parameters are {', '.join(sorted(map(str, dtypes)))} (after "
            "model.module.double()?): training runs in float32, as the data loaders yield "
            "it. Call model.module.float() before train; read-outs take either."
        )
    check_plan_names(plan)
    check_optimizer_settings(plan)
    check_plan_numbers(plan, lr, model.module)
    lr = plan.get("lr", lr)
    check_max_epochs(max_epochs, unit)
    if not is_number(train_size) or not 0 < train_size <= 1:
        raise ValueError(
            f"train_size must lie in (0, 1], the fraction of {units} trained on; got "
            f"{train_size!r}."
        )
    if validation_size is not None and (
        not is_number(validation_size)
        or not 0 <= validation_size < 1
        or train_size + validation_size > 1
    ):
        raise ValueError(
            f"validation_size must lie in [0, 1) with train_size + validation_size <= 1; "
            f"got validation_size={validation_size!r}, train_size={train_size!r}."
        )
    check_batch_size(batch_size, optional=False)
    if not isinstance(early_stopping, bool | np.bool_):  # "False" was True
        raise ValueError(f"early_stopping must be True or False, got {early_stopping!r}.")
    shuffle = trainer_kwargs.get("shuffle_set_split", True)
    if not isinstance(shuffle, bool | np.bool_):  # "no" (or "False") shuffled
        raise ValueError(f"shuffle_set_split must be True or False, got {short_repr(shuffle)}.")
    n_rows = model.adata.n_obs
    n_train, n_val = split_sizes(n_rows, train_size, validation_size, split)
    external = split.get("external_indexing") is not None  # its lists, not the fractions
    if validation_size is not None and train_size < 1 and n_val == 0 and not external:
        raise ValueError(
            f"validation_size={validation_size!r} holds out no {unit} of {n_rows} for the "
            f"validation ELBO: pass validation_size=None (the {units} train_size leaves) or a "
            f"larger fraction, or train_size=1.0 to train on every {unit} without validation."
        )
    if (train_size < 1 or validation_size) and n_val == 0 and not external:
        raise ValueError(none_held_out(n_rows, unit, train_size, written is None))
    held_out = (
        f"(datasplitter_kwargs['external_indexing'] has no second list of {units}): list the "
        f"validation {units} second"
        if external
        else "(train_size=1.0): pass train_size < 1, e.g. 0.9"
    )
    check_flag(restore_best, "restore_best")  # 1 was taken as "auto", "no" refused
    restores = restore_best != "auto" and bool(restore_best)  # np.True_ too
    if restores and n_val == 0:
        raise ValueError(
            f"restore_best=True keeps the epoch with the lowest validation_loss, but no {unit} is "
            f"held out for it {held_out}, or restore_best=False."
        )
    if (early_stopping or restores) and _is_int(val_every) and val_every > max_epochs:
        what = "early_stopping" if early_stopping else "restore_best"
        raise ValueError(
            f"{what}=True watches the validation loss, but check_val_every_n_epoch="
            f"{val_every} computes it after more epochs than this run's max_epochs="
            f"{max_epochs}: lower check_val_every_n_epoch."
        )
    check_accelerator(accelerator)
    watched = "the validation loss" if monitor is None else repr(monitor)
    on_training_cells = str(monitor).endswith("_train") or monitor in ("train_loss", "kl_weight")
    if early_stopping and n_val == 0 and not on_training_cells:
        raise ValueError(
            f"early_stopping=True stops when {watched} stops improving, but no {unit} "
            f"is held out for it {held_out}."
        )
    if split.get("drop_last") and batch_size > n_train:
        raise ValueError(
            f"datasplitter_kwargs['drop_last']=True drops every minibatch: batch_size="
            f"{batch_size} is more than the {n_train} training {units}. Pass batch_size={n_train} "
            f"or less, or leave drop_last out (deltavae drops a last minibatch of one {unit})."
        )
    metric = plan.get("lr_scheduler_metric", "elbo_validation")
    if plan.get("reduce_lr_on_plateau") and metric.endswith("_validation") and n_val == 0:
        raise ValueError(
            f"reduce_lr_on_plateau watches {metric!r}, but no {unit} is held out for "
            f"validation {held_out}."
        )
    batch_norm = trains_batch_norm(model)
    if batch_norm and min(batch_size, n_train) < 2:
        fix = (
            "Use batch_size >= 2, or leave it out for the model's default."
            if batch_size < 2
            else f"Train on more {units}: a longer first list of datasplitter_kwargs"
            "['external_indexing']."
            if external
            else f"Train on more {units}: a larger train_size (now {train_size}) or more {units} "
            "in adata."
        )
        raise ValueError(
            f"The model's BatchNorm layers need at least 2 {units} per minibatch; got "
            f"batch_size={batch_size} and {n_train} training {units}. {fix}"
        )
    if batch_norm and split.get("drop_last") is False and n_train % batch_size == 1:
        raise ValueError(
            f"datasplitter_kwargs['drop_last']=False leaves a last minibatch of one {unit} "
            f"({n_train} training {units}, batch_size={batch_size}), which the model's BatchNorm "
            f"layers cannot train on. Leave drop_last out (that one {unit} then sits out each "
            "epoch) or change batch_size."
        )
    if not external:  # after BatchNorm's refusal of a single training cell, which says more
        default = _default_train_size(type(model))
        check_training_share(n_train, n_val, n_rows, train_size, batch_size, unit, default)
    check_monitored(model, monitor, plan.get("lr_scheduler_metric"))  # may read two cells


def trains_batch_norm(model) -> bool:
    """Whether ``model``'s training runs BatchNorm layers on the minibatches' statistics,
    which a minibatch of one cannot give. Not a query model's (load_query_data), in eval
    mode or not: its BatchNorm layers are ``ReferenceBatchNorm1d``, which keep the
    reference's statistics in training mode too (``model/_freeze.py``), read a minibatch
    of one as any other and have no running statistics to lag; not a model without
    BatchNorm (NMFDeconv, SpatialImputer, whose amortised encoders use LayerNorm). A model
    in eval mode otherwise trains in training mode (``_prepare_module``)."""
    return any(
        isinstance(m, torch.nn.BatchNorm1d) and not isinstance(m, ReferenceBatchNorm1d)
        for m in model.module.modules()
    )


def _default_train_size(model_class: type):
    """The ``train_size`` a model's ``train`` trains with when none is given (NMFDeconv's 1.0,
    the others' 0.9), from the first ``train`` along the classes that names it."""
    for cls in model_class.__mro__:
        train = cls.__dict__.get("train")
        if train is not None and "train_size" in inspect.signature(train).parameters:
            return inspect.signature(train).parameters["train_size"].default
    return None


def check_training_share(
    n_train, n_val, n_rows, train_size, batch_size, unit="cell", default=0.9
) -> None:
    """Refuse a split that trains on fewer rows than it validates and than one minibatch:
    ``train_size=0.01`` of 200 cells trained on 2 (an epoch one step on them) while 198
    validated, without a word; scvi-tools refuses only an empty training set. Most likely
    ``train_size`` was read as the validation share. A deliberate small training set passes
    with ``batch_size`` at most its size; one as large as the validation set passes too.

    Examples
    --------
    >>> check_training_share(2, 198, 200, 0.01, 128)
    Traceback (most recent call last):
    ...
    ValueError: train_size=0.01 trains on 2 of the 200 cells and validates on 198: fewer ...
    >>> check_training_share(2, 198, 200, 0.01, 2), check_training_share(45, 5, 50, 0.9, 128)
    (None, None)
    """
    if n_train >= n_val or n_train >= batch_size:
        return
    raise ValueError(
        f"train_size={train_size} trains on {n_train} of the {n_rows} {unit}s and validates "
        f"on {n_val}: fewer {unit}s train than one minibatch (batch_size={batch_size}), too "
        f"few to learn from. train_size is the fraction of {unit}s trained on: to hold out "
        f"{train_size * 100:.4g}% for validation pass train_size={1 - train_size:.4g}, or leave it "
        f"out for the default ({default}). To train on so few {unit}s on purpose, pass "
        f"batch_size={n_train} or less."
    )


#: Metrics every model logs each epoch, besides ``<term>_<split>`` for each of its own terms.
_LOGGED = frozenset(
    {"train_loss", "validation_loss", "kl_weight"}
    | {
        f"{name}_{split}"
        for name in ("elbo", "reconstruction_loss", "kl_local", "kl_global")
        for split in ("train", "validation")
    }
)


def _term_names(model) -> set[str]:
    """The model's own terms of the ELBO and metrics beside it, as training logs them: from
    its module on two cells, in eval mode, with the random state put back."""
    module, device = model.module, model.device
    cells = np.arange(min(2, model.adata.n_obs))
    was_training = module.training
    module.eval()
    try:
        with (
            torch.no_grad(),
            forked_generators(device),
        ):
            loader = model._make_data_loader(adata=model.adata, indices=cells, batch_size=2)
            batch = next(iter(loader))  # a loader's iterator draws its seed
            _, _, out = module(batch)
            names = {*out.kl_local, *(out.extra_metrics or {})}
            if getattr(module, "has_torch_elbo", False):
                args, kwargs = module._get_fn_args_from_batch(batch)
                names |= set(module.negative_elbo(*args, **kwargs)[1])
    finally:
        module.train(was_training)
    return names - {"reconstruction_loss", "kl_local"}


def check_shuffle_block_size(
    shuffle_block_size, distributed: bool, unit: str = "cell", n_train: int | None = None
) -> None:
    """Refuse a ``shuffle_block_size`` that is not a positive integer, one under DDP
    (``unit``: what the rows are, :func:`rows_unit`), and one that leaves fewer than two
    blocks of the ``n_train`` training rows to shuffle: their order was then the same every
    epoch, without a word."""
    if shuffle_block_size is not None and distributed:
        raise ValueError(
            "shuffle_block_size is not supported with strategy='ddp': each process already "
            f"reads its own share of the {unit}s; leave shuffle_block_size=None."
        )
    if shuffle_block_size is not None and (
        not _is_int(shuffle_block_size) or shuffle_block_size < 1
    ):
        raise ValueError(
            f"shuffle_block_size must be a positive integer ({unit}s per block), got "
            f"{shuffle_block_size!r}; None shuffles single {unit}s."
        )
    if shuffle_block_size is not None and n_train and n_train // shuffle_block_size < 2:
        raise ValueError(
            f"shuffle_block_size={shuffle_block_size} leaves the {n_train} training {unit}s "
            f"fewer than two blocks to shuffle: every epoch would read them in the same order. "
            f"Pass at most {max(1, n_train // 2)} (a few blocks per minibatch, e.g. batch_size "
            f"// 4), or leave it out to shuffle single {unit}s."
        )


def check_monitored(model, early_stopping_monitor, lr_scheduler_metric) -> None:
    """The metrics early stopping and the learning-rate schedule watch must be logged by
    training: Lightning says a name is wrong only at the end of the first epoch."""
    given = {
        "early_stopping_monitor": early_stopping_monitor,
        "plan_kwargs['lr_scheduler_metric']": lr_scheduler_metric,
    }
    given = {arg: name for arg, name in given.items() if name is not None and name not in _LOGGED}
    if not given:
        return
    logged = set(_LOGGED)
    logged |= {
        f"{term}_{split}" for term in _term_names(model) for split in ("train", "validation")
    }
    for arg, name in given.items():
        if name not in logged:
            hint = did_you_mean(name, sorted(logged), end=" ")
            raise ValueError(
                f"{arg}={name!r} is not a metric {type(model).__name__} logs in training: "
                f"{hint}It logs {sorted(logged)} (the keys of model.history)."
            )


def lr_into_optim_kwargs(lr, plan_kwargs: dict) -> tuple:
    """``lr`` and ``plan_kwargs`` for scvi-tools' Pyro ``train``, which replaces
    ``plan_kwargs["optim_kwargs"]`` by ``{"lr": lr}`` when given a rate: with both, the rate
    joins the other optimiser settings (weight decay, eps ...), which were dropped; and which
    drops the rate given with ``plan_kwargs["optim"]`` (another optimiser): it is kept."""
    optim = plan_kwargs.get("optim_kwargs")
    if lr is not None and (optim or {}).get("lr", lr) != lr:  # lr won over it, silently
        raise ValueError(
            f"lr={lr!r} and plan_kwargs['optim_kwargs']['lr']={optim['lr']!r} disagree; pass "
            "one of them."
        )
    if lr is None or not (optim or "optim" in plan_kwargs):  # scvi-tools drops lr with optim
        return lr, plan_kwargs
    return None, {**plan_kwargs, "optim_kwargs": {**(optim or {}), "lr": lr}}


def check_max_epochs(max_epochs, unit: str = "cell") -> None:
    """Refuse a ``max_epochs`` that is not a positive integer (``unit``: :func:`rows_unit`)."""
    if not _is_int(max_epochs) or max_epochs < 1:
        raise ValueError(
            f"max_epochs must be a positive integer, got {short_repr(max_epochs)} (None "
            f"chooses it from the number of {unit}s)."
        )


def check_start_epoch(epoch, max_epochs: int) -> None:
    """Refuse a ``max_epochs`` that is not a positive integer (before the start it places:
    ``"10"`` failed on ``//``, and 0 blamed ``mixture_init_epoch=0``), then a
    ``mixture_init_epoch`` at which the mixture would never start: not a whole number of 0 or
    more (``-1``, ``2.5``: no epoch matches), or not before ``max_epochs``."""
    check_max_epochs(max_epochs)
    if epoch is None or (isinstance(epoch, str) and epoch == "auto"):
        return
    if not _is_int(epoch) or epoch < 0:
        raise ValueError(
            f"mixture_init_epoch must be an epoch (an integer of 0 or more), 'auto' or None; "
            f"got {epoch!r}: the mixture would never start."
        )
    if epoch >= max_epochs:
        raise ValueError(
            f"mixture_init_epoch={epoch} is not before max_epochs={max_epochs}: the mixture "
            "would never start. Pass an earlier epoch, 'auto' (a quarter of the epochs), or "
            "None to train without the start."
        )


def check_flag(value, name: str):
    """``value`` if it is True, False or ``"auto"``; anything else (``"False"``, ``None``:
    read as a truth value, a string was True) is refused, naming ``name``."""
    if value == "auto" or isinstance(value, bool | np.bool_):
        return value
    raise ValueError(f"{name} must be True, False or 'auto', got {value!r}.")


def say_if_nothing_restored(asked: bool, best_epoch: int | None) -> None:
    """``train(restore_best=True)`` that found no epoch to restore keeps the last epoch's
    parameters: said, with why (``"auto"`` stays quiet)."""
    if asked and best_epoch is None:
        warn_user(
            "restore_best=True kept the last epoch's parameters: no validation epoch came "
            "after the KL warm-up (and CGMDVAE's mixture start) with a finite loss, so none "
            "could be restored. Train for more epochs than the warm-up and the start."
        )


def check_condition_args(
    model, is_count: bool, condition_alignment, classifier_weight: float, condition_in_prior: bool
) -> float:
    """CGMDVAE's arguments that act on labels or conditions: ``condition_alignment`` a number
    or "auto", returned resolved; any of them set away from its default where the setup has no
    labels or no condition is said to be ignored (it trained as if never given, without a
    word). A loaded model passes the resolved alignment, which is the default's."""
    if not (is_number(condition_alignment) or condition_alignment == "auto"):  # None was 0
        raise ValueError(
            f"condition_alignment must be a number of 0 or more, or 'auto'; got "
            f"{condition_alignment!r}."
        )
    # D8, D14, D17: labels and counts 100; no labels 10; labels, not counts 0.
    auto = (100.0 if is_count else 0.0) if model.label_names else 10.0
    unused = []
    if not model.label_names and classifier_weight != 50.0:
        unused.append(f"classifier_weight={classifier_weight!r}: it weighs the labels, and "
                      "setup_anndata named no labels_key")  # fmt: skip
    if not model.condition_keys:
        changed = {"condition_alignment": condition_alignment not in ("auto", auto),
                   "condition_in_prior": condition_in_prior is not True}  # fmt: skip
        unused += [f"{name}: it acts on conditions, and setup_anndata named no condition_key"
                   for name, given in changed.items() if given]  # fmt: skip
    if unused:
        warn_user("CGMDVAE ignores " + "; ".join(unused) + ".")
    return auto if condition_alignment == "auto" else condition_alignment
