"""Keep the parameters of the epoch with the best validation objective, in memory; and keep
a query module's frozen entries as they were through every optimiser step.

scvi-tools' ``SaveCheckpoint`` writes a full model save to disk at every improvement (under
the working directory by default); a model of a few megabytes is cheaper to copy in memory,
and nothing is left behind on disk.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch.callbacks import Callback

from ._stopping import KL_TOLERANCE, MONITOR, FullElboEpochs

logger = logging.getLogger(__name__)


class RestoreBestValidation(FullElboEpochs, Callback):
    """Lightning callback: at the end of training, load the epoch with the best validation loss.

    The loss is the objective trained on (``history["validation_loss"]``): the negative ELBO,
    plus CGMDVAE's classifier and alignment terms where it has them; or the validation
    metric early stopping watches (``monitor``, ``mode``), so that the run stops and keeps
    by the same quantity.

    Only epochs trained on the full ELBO count, as for early stopping
    (:class:`~deltavae.train._stopping.FullElboEarlyStopping`): the KL weight must have
    reached its maximum (an annealed epoch's ELBO is not comparable with a later one) and the
    epoch must be at least ``start_epoch``. Without validation cells it does nothing.

    Parameters
    ----------
    start_epoch
        First epoch that may be kept (for example the one after the mixture start).
    max_kl_weight
        The training plan's maximum KL weight; epochs below it are still warming up.
    monitor, mode
        The validation metric ranked, and whether its lowest (``"min"``) or highest is best.

    Attributes
    ----------
    best_epoch
        Epoch whose parameters were kept (``None`` before any eligible validation epoch).
    best_score
        Its ``monitor`` value (``validation_loss``: the objective per cell).

    Examples
    --------
    ``train(restore_best=True)`` adds it:

    >>> vae.train(max_epochs=100, restore_best=True)  # doctest: +SKIP
    >>> vae.best_epoch_  # doctest: +SKIP
    """

    def __init__(
        self,
        start_epoch: int = 0,
        max_kl_weight: float = 1.0,
        monitor: str = MONITOR,
        mode: str = "min",
    ):
        super().__init__()
        self.start_epoch = start_epoch
        self.max_kl_weight = max_kl_weight
        self.monitor, self.sign = monitor, -1.0 if mode == "max" else 1.0
        self.best_epoch: int | None = None
        self.best_score = self.sign * math.inf  # the worst
        self._state: dict[str, torch.Tensor] | None = None

    def eligible(self, epoch, kl_weight, score) -> bool:
        """Whether an epoch trained on the full ELBO, after ``start_epoch``, to a finite score."""
        # The history logs the weight in float32: max_kl_weight=0.7 came back as 0.69999999,
        # and no epoch was eligible there (best_epoch_ None, "nothing restored") though this
        # callback, reading the plan's float, had restored one.
        return (
            epoch >= self.start_epoch
            and float(kl_weight) >= self.max_kl_weight - KL_TOLERANCE
            and math.isfinite(float(score))
        )

    def best_epoch_in(self, history: dict, epochs_before: int = 0) -> int | None:
        """The epoch this callback keeps, read from the run's rows of a model's ``history``
        (None if none), numbered as in the history: the run's first epoch is
        ``epochs_before``, the epochs the model had trained before it.

        Under DDP the callback runs in the worker processes; the history comes back to the
        calling one, so the kept epoch is read from it.
        """
        if self.monitor not in history or "kl_weight" not in history:
            # A logger of the user's keeps no history: the epoch this process kept, if any.
            return None if self.best_epoch is None else self.best_epoch + epochs_before
        frame = history[self.monitor].join(history["kl_weight"], how="inner").astype(float)
        frame = frame[frame.index >= epochs_before]
        keep = [self.eligible(e - epochs_before, k, s) for e, s, k in frame.itertuples(name=None)]
        scores = self.sign * frame.loc[keep, self.monitor]
        return None if scores.empty else int(scores.idxmin())  # the first of equal bests

    def on_validation_epoch_end(self, trainer, pl_module):
        score = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or score is None or not self.full_elbo(trainer):
            return
        score = float(score)
        # NaN: the divergence guard stops the run.
        if not math.isfinite(score) or self.sign * score >= self.sign * self.best_score:
            return
        self.best_score, self.best_epoch = score, trainer.current_epoch
        state = pl_module.module.state_dict()
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def on_train_end(self, trainer, pl_module):
        if self._state is None:
            return
        pl_module.module.load_state_dict(self._state)
        logger.info(
            "Restored epoch %d, the best %s (%.3f) of the full-ELBO epochs.",
            self.best_epoch,
            self.monitor,
            self.best_score,
        )
        self._state = None


#: Attribute of a query module: (parameter, mask of the entries that learn) for each
#: parameter of which only some entries learn (``model/_freeze.py`` sets it).
PARTLY_TRAINABLE = "_partly_trainable"


def keep_frozen_entries(module, optimizer) -> None:
    """After every step of ``optimizer``, put back the entries a query module keeps fixed
    (``_partly_trainable``: parameters of which only the masked entries learn). Their
    gradients are masked already; weight decay would still shrink them."""
    partly = module.__dict__.get(PARTLY_TRAINABLE)
    if not partly:
        return
    # Taken now, on the device the module trains on (Lightning moved it before this call).
    kept = [(p, mask.to(p.device), p.detach().clone()) for p, mask in partly]

    def restore(*_):
        with torch.no_grad():
            for param, learns, fixed in kept:
                param.copy_(torch.where(learns, param, fixed))

    optimizer.register_step_post_hook(restore)
