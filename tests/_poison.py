"""Lightning callbacks that break a fit on purpose (a NaN loss, a Ctrl-C), for the tests of
what a diverged or interrupted fit keeps, records and says."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class PoisonAt(Callback):
    """Makes the module's first parameter NaN after a step of ``epoch`` (``step``: that step
    only; ``None``: every step of the epoch): the next loss is NaN."""

    def __init__(self, epoch: int, step: int | None = None):
        self.epoch, self.step = epoch, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and self.step in (None, batch_idx):
            with torch.no_grad():
                next(pl_module.module.parameters()).fill_(float("nan"))


class InterruptAt(Callback):
    """Raises KeyboardInterrupt (Ctrl-C) at the end of ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt
