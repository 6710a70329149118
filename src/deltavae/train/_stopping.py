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
            "(early_stopping=False, the default), so nothing stops the run on "
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
