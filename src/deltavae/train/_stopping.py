"""``train(early_stopping=True)`` and ``restore_best`` judging the same epochs by the same
quantity.

Both look only at the epochs trained on the full ELBO (the KL weight at its maximum from the
epoch's first step, and from the first epoch that may be kept on: after CGMDVAE's mixture
start), and both rank the validation objective ``validation_loss`` (the negative ELBO, plus
CGMDVAE's classifier and alignment terms), unless the user names another metric with
``early_stopping_monitor``. scvi-tools' early stopping watched
``elbo_validation`` from epoch 0: an Archetypes run of 80 epochs (300 cells, patience 5) took
its best at epoch 2 of a 20-epoch warm-up, signalled its stop at epoch 7, and ended on the
warm-up floor at epoch 24 while its ELBO still fell (restore_best kept epoch 21).
"""

from __future__ import annotations

import numpy as np
from scvi.train._callbacks import LoudEarlyStopping

from .._checks import short_repr

#: What early stopping watches, and restore_best keeps the best epoch of, by default.
MONITOR = "validation_loss"
#: The history logs the KL weight in float32: a maximum of 0.7 came back as 0.69999999.
KL_TOLERANCE = 1e-6


class FullElboEpochs:
    """Mixin of a Lightning callback: whether the epoch now training is one trained on the
    full ELBO at or after ``start_epoch`` (:meth:`full_elbo`). The KL weight is read at the
    epoch's first step: a warm-up by steps that ends inside an epoch leaves that epoch
    annealed (its logged ``kl_weight``, the epoch's mean, is below the maximum)."""

    start_epoch: int = 0
    max_kl_weight: float = 1.0
    _full_weight: bool = False

    def on_train_epoch_start(self, trainer, pl_module):
        weight = float(getattr(pl_module, "kl_weight", self.max_kl_weight))
        self._full_weight = weight >= self.max_kl_weight - KL_TOLERANCE

    def full_elbo(self, trainer) -> bool:
        """Whether this epoch may stop the run or be kept."""
        return trainer.current_epoch >= self.start_epoch and self._full_weight


class FullElboEarlyStopping(FullElboEpochs, LoudEarlyStopping):
    """scvi-tools' ``LoudEarlyStopping`` that neither takes a best score nor counts its
    patience before :meth:`full_elbo` epochs begin (the KL warm-up, CGMDVAE's mixture
    start, and scvi-tools' ``early_stopping_warmup_epochs``, counted here as epochs), so
    that a run stops ``patience`` checks without improvement after its best full-ELBO epoch.
    Under DDP it runs in every process and only the first prints why it stopped.

    Examples
    --------
    >>> stop = FullElboEarlyStopping(start_epoch=10, patience=5)
    >>> stop.monitor, stop.patience, stop.start_epoch
    ('validation_loss', 5, 10)
    """

    def __init__(
        self, start_epoch: int = 0, max_kl_weight: float = 1.0, warmup_epochs: int = 0, **kwargs
    ):
        kwargs.setdefault("monitor", MONITOR)
        super().__init__(warmup_epochs=0, **kwargs)
        self.start_epoch = max(int(start_epoch), int(warmup_epochs or 0))
        self.max_kl_weight = max_kl_weight

    def _run_early_stopping_check(self, trainer) -> None:
        # Every DDP process is at the same epoch and KL weight: all skip or all reduce.
        if self.full_elbo(trainer):
            super()._run_early_stopping_check(trainer)

    def teardown(self, trainer, pl_module, stage: str | None = None) -> None:
        if getattr(trainer, "is_global_zero", True):
            super().teardown(trainer, pl_module, stage)


#: ``train``'s keywords for the early stopping, as scvi-tools names them, and its defaults.
_KEYWORDS = {
    "early_stopping_monitor": ("monitor", MONITOR),
    "early_stopping_min_delta": ("min_delta", 0.0),
    "early_stopping_patience": ("patience", 45),
    "early_stopping_mode": ("mode", "min"),
    "early_stopping_warmup_epochs": ("warmup_epochs", 0),
}


def early_stopping_callback(
    trainer_kwargs: dict, start_epoch: int = 0, max_kl_weight: float = 1.0
) -> FullElboEarlyStopping:
    """The early stopping of ``train(early_stopping=True)``, from (and taking out of)
    ``trainer_kwargs``' ``early_stopping_*`` arguments, on one process or under DDP (where
    scvi-tools turns its own off; the monitored metric is reduced over the processes, and
    any one's stop stops them all).

    Examples
    --------
    >>> kwargs = {"early_stopping_patience": 5, "max_time": None}
    >>> stop = early_stopping_callback(kwargs, start_epoch=3)
    >>> stop.monitor, stop.patience, stop.start_epoch, kwargs
    ('validation_loss', 5, 3, {'max_time': None})
    """
    given = {arg: trainer_kwargs.pop(key, default) for key, (arg, default) in _KEYWORDS.items()}
    _check_keywords(given)
    # A metric of the training cells is logged at the epoch's end, and checked there (after a
    # validation, or with none at all, it was never checked: the run trained every epoch).
    on_training_cells = not on_validation_cells(given["monitor"])
    return FullElboEarlyStopping(
        start_epoch, max_kl_weight, check_on_train_epoch_end=on_training_cells or None, **given
    )


def _check_keywords(given: dict) -> None:
    """Refuse, before training, an early stopping Lightning would take and then fail on at
    its first check without improvement (``patience="5"``: "'>=' not supported between
    instances of 'int' and 'str'", epochs into the run), or silently read otherwise (a
    negative patience as 0, a negative min_delta as a worsening allowed)."""
    patience, delta, mode = given["patience"], given["min_delta"], given["mode"]
    warmup = given["warmup_epochs"]
    for name, value in (("patience", patience), ("warmup_epochs", warmup)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(
                f"early_stopping_{name} must be a whole number of 0 or more (epochs), got "
                f"{short_repr(value)}."
            )
    number = isinstance(delta, int | float | np.integer | np.floating) and not isinstance(
        delta, bool
    )
    if not number or not np.isfinite(delta) or delta < 0:
        raise ValueError(
            f"early_stopping_min_delta must be a number of 0 or more (the least fall of the "
            f"monitored metric that counts as an improvement), got {short_repr(delta)}."
        )
    if mode not in ("min", "max"):
        raise ValueError(
            f"early_stopping_mode must be 'min' (lower is better, as for the losses and "
            f"ELBOs) or 'max', got {short_repr(mode)}."
        )


def warn_unused_keywords(trainer_kwargs: dict) -> None:
    """Warn of ``early_stopping_*`` arguments given to a ``train`` without
    ``early_stopping=True``, which nothing reads then (scvi-tools drops them without a word):
    a user passing ``early_stopping_patience=10`` wants the run to stop early, and trained
    up to max_epochs (or until a callback or ``max_time`` of their own ended it). A warning,
    not a refusal: a call written for scvi-tools (the settings kept while early stopping is
    switched off) still runs, and says before training what it ignores and how to stop
    early."""
    from ..model._validation import warn_user

    given = [key for key in _KEYWORDS if key in trainer_kwargs]
    if given:
        named = ", ".join(f"{key}={short_repr(trainer_kwargs[key])}" for key in given)
        warn_user(
            f"{named} {'is' if len(given) == 1 else 'are'} ignored: early stopping is off "
            "in this run, so nothing stops the run on "
            f"{'it' if len(given) == 1 else 'them'}: it trains up to max_epochs, unless a "
            "callback (EarlyStopping) or max_time of your own ends it sooner. "
            "Pass early_stopping=True to stop early, or leave "
            f"{'it' if len(given) == 1 else 'them'} out."
        )


def restored_quantity(early_stopping: bool, trainer_kwargs: dict) -> tuple[str, str]:
    """The metric and mode ``restore_best`` ranks: what early stopping watches, where it runs
    and watches a validation metric (the user's ``early_stopping_monitor``: keeping the best
    epoch of what stopped the run, as Keras' ``restore_best_weights``), else
    ``validation_loss``, lowest first. A metric of the training cells is logged after the
    validation that keeps an epoch: ``validation_loss`` is ranked then."""
    monitor = trainer_kwargs.get("early_stopping_monitor")
    if not early_stopping or monitor is None or not on_validation_cells(monitor):
        return MONITOR, "min"
    return monitor, trainer_kwargs.get("early_stopping_mode", "min")


def on_validation_cells(metric: str) -> bool:
    """Whether ``metric`` is logged on the validation cells (else on the training cells)."""
    return metric == MONITOR or str(metric).endswith("_validation")


def add_stopping(
    callbacks: list,
    trainer_kwargs: dict,
    early_stopping: bool,
    restore_best: bool,
    start_epoch: int,
    max_kl_weight: float,
):
    """Add ``train``'s early stopping and ``restore_best`` callbacks to ``callbacks``, both
    on the full-ELBO epochs from ``start_epoch`` on and ranking the same quantity; return the
    restore_best one (or None). ``trainer_kwargs``' ``early_stopping_*`` are taken out."""
    from ._checkpoint import RestoreBestValidation

    if not early_stopping:
        warn_unused_keywords(trainer_kwargs)
    best = None
    if restore_best:
        quantity = restored_quantity(early_stopping, trainer_kwargs)
        best = RestoreBestValidation(start_epoch, max_kl_weight, *quantity)
        callbacks.append(best)
    stopper = early_stopping_callback(trainer_kwargs, start_epoch, max_kl_weight)
    if early_stopping:  # scvi-tools' own is never added: it watched from epoch 0
        callbacks.append(stopper)
    return best


#: Patience of CGMDVAE's ``early_stopping="auto"`` (validations without a better
#: ``validation_loss``): 45, scvi-tools' default and ``early_stopping=True``'s, ended one of
#: three Kang runs at epoch 277 on a flat stretch, keeping epoch 232 instead of 356 (ARI 0.740
#: against 0.750, iLISI 0.886 against 0.898); from 60 up, all six PBMC and Kang runs kept the
#: epoch the full run keeps (benchmarks/README.md, CGMDVAE quality).
AUTO_PATIENCE = 75


def auto_early_stopping(
    early_stopping, restore_best, n_cells: int, max_epochs: int, train_kwargs: dict
) -> dict:
    """What CGMDVAE's ``train(early_stopping="auto")`` comes to, as ``train`` arguments: on,
    with a patience of :data:`AUTO_PATIENCE` unless ``early_stopping_patience`` is given,
    where ``restore_best`` keeps the best epoch (not ``False``), cells are held out to
    validate on, validation comes within ``max_epochs`` and no ``EarlyStopping`` of the
    user's is among the callbacks; else off. ``True`` and ``False`` pass through; any other
    value is refused.

    The run then ends once the validation loss has not improved for the patience after its
    best full-ELBO epoch, and keeps that epoch as the full run would have: on PBMC 3k the
    validation ELBO rose from before the KL warm-up's end on while the training ELBO fell
    (overfitting), and the epochs after the best changed no cluster for the better
    (benchmarks/README.md, CGMDVAE quality, "The epochs after the warm-up").

    Examples
    --------
    >>> auto_early_stopping("auto", "auto", 100, 400, {})
    {'early_stopping': True, 'early_stopping_patience': 75}
    >>> auto_early_stopping("auto", "auto", 100, 400, {"early_stopping_patience": 9})
    {'early_stopping': True}
    >>> auto_early_stopping("auto", "auto", 100, 400, {"train_size": 1.0})
    {'early_stopping': False}
    >>> auto_early_stopping("auto", False, 100, 400, {}), auto_early_stopping(True, False, 1, 1, {})
    ({'early_stopping': False}, {'early_stopping': True})
    """
    from lightning.pytorch.callbacks import EarlyStopping

    from ._data import split_sizes

    if isinstance(early_stopping, bool | np.bool_):
        return {"early_stopping": bool(early_stopping)}
    if not isinstance(early_stopping, str) or early_stopping != "auto":
        raise ValueError(
            f"early_stopping must be True, False or 'auto', got {short_repr(early_stopping)}."
        )
    off = {"early_stopping": False}
    if restore_best is False:  # stopping would keep the last, worse, epoch
        return off
    split = train_kwargs.get("datasplitter_kwargs") or {}
    try:
        n_val = split_sizes(
            n_cells, train_kwargs.get("train_size", 0.9), train_kwargs.get("validation_size"), split
        )[1]
    except (TypeError, ValueError):  # refused by train's own checks, with their message
        return off
    every = train_kwargs.get("check_val_every_n_epoch")
    if isinstance(every, int | np.integer) and not isinstance(every, bool) and every > max_epochs:
        return off
    callbacks = train_kwargs.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list | tuple) else [callbacks]
    if n_val == 0 or any(isinstance(cb, EarlyStopping) for cb in callbacks):
        return off
    if "early_stopping_patience" in train_kwargs:
        return {"early_stopping": True}
    return {"early_stopping": True, "early_stopping_patience": AUTO_PATIENCE}
