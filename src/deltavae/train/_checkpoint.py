"""Keep the parameters of the epoch with the best validation ELBO, in memory.

scvi-tools' ``SaveCheckpoint`` writes a full model save to disk at every improvement (under
the working directory by default); a model of a few megabytes is cheaper to copy in memory,
and nothing is left behind on disk.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)

MONITOR = "elbo_validation"


def best_epoch_in_history(history: dict, start_epoch: int = 0, max_kl_weight: float = 1.0):
    """The epoch :class:`RestoreBestValidation` keeps, read from a model's ``history``.

    Under DDP the callback runs in the worker processes; the history comes back to the
    calling one, so the kept epoch is read from it. None when no epoch qualifies.
    """
    if MONITOR not in history or "kl_weight" not in history:
        return None
    frame = history[MONITOR].join(history["kl_weight"], how="inner")
    frame = frame[(frame.index >= start_epoch) & (frame["kl_weight"] >= max_kl_weight)]
    frame = frame[frame[MONITOR].astype(float).map(math.isfinite)]
    return None if frame.empty else int(frame[MONITOR].astype(float).idxmin())


class RestoreBestValidation(Callback):
    """Lightning callback: at the end of training, load the epoch with the best validation ELBO.

    Only epochs trained on the full ELBO count: the KL weight must have reached its maximum
    (an annealed epoch's ELBO is not comparable with a later one) and the epoch must be at
    least ``start_epoch``. Without validation cells it does nothing.

    Parameters
    ----------
    start_epoch
        First epoch that may be kept (for example the one after the mixture start).

    Attributes
    ----------
    best_epoch
        Epoch whose parameters were kept (``None`` before any eligible validation epoch).
    best_score
        Its ``elbo_validation`` (negative ELBO per cell).

    Examples
    --------
    ``train(restore_best=True)`` adds it:

    >>> vae.train(max_epochs=100, restore_best=True)  # doctest: +SKIP
    >>> vae.best_epoch_  # doctest: +SKIP
    """

    def __init__(self, start_epoch: int = 0):
        super().__init__()
        self.start_epoch = start_epoch
        self.best_epoch: int | None = None
        self.best_score = math.inf
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.current_epoch < self.start_epoch:
            return
        if float(pl_module.kl_weight) < float(getattr(pl_module, "max_kl_weight", 1.0)):
            return
        score = trainer.callback_metrics.get(MONITOR)
        if score is None or not math.isfinite(float(score)) or float(score) >= self.best_score:
            return
        self.best_score, self.best_epoch = float(score), trainer.current_epoch
        state = pl_module.module.state_dict()
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def on_train_end(self, trainer, pl_module):
        if self._state is None:
            return
        pl_module.module.load_state_dict(self._state)
        logger.info(
            "Restored epoch %d, the best %s (%.3f) of the full-ELBO epochs.",
            self.best_epoch,
            MONITOR,
            self.best_score,
        )
        self._state = None
