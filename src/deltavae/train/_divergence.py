"""Stopping a training run whose loss stops being finite, with the last finite parameters
kept (a mixin of :class:`~deltavae.train.DeltaTrainingPlan`).

Checking that a loss is finite means reading it on the host. On the CPU that is free, and
every step is checked. On an accelerator each read waits for the device to finish its queue,
which costs the overlap of the host's work with the device's at every step; there the losses
are gathered and read together every :data:`CHECK_EVERY` steps and before anything else reads
the parameters (a validation pass, the epoch's end), and the parameters are kept at each
check that found every loss finite. A validation pass's losses are read together at its end
(there, and under DDP, where the processes agree on every read).
"""

from __future__ import annotations

import torch

from .._rng import forked_generators

#: Training steps between two reads of the losses on an accelerator (1 on the CPU).
CHECK_EVERY = 20


class TrainingDivergedError(RuntimeError):
    """Training met a non-finite loss (NaN or infinite) and stopped.

    ``message`` is the error's text (it names the epoch, the step and a lower learning rate to
    try); ``epoch`` and ``step`` say where. The model keeps the last parameters that gave a
    finite loss, those used at ``restored_at`` = (epoch, step); ``None`` when they are the ones
    it started this run with.
    """

    def __init__(self, message: str, epoch: int, step: int, restored_at: tuple[int, int] | None):
        super().__init__(message)
        self.epoch, self.step, self.restored_at = epoch, step, restored_at


def trained_state(module: torch.nn.Module, parameters: bool = True) -> dict:
    """What training changes: the parameters (unless ``parameters=False``) and BatchNorm's
    running statistics. Other buffers (a reference's counts, signatures) never change, and
    copying them every step would hold them twice more in (GPU) memory.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    >>> net.register_buffer("reference", torch.ones(5))
    >>> sorted(trained_state(net, parameters=False))
    ['1.num_batches_tracked', '1.running_mean', '1.running_var']
    """
    state = dict(module.named_parameters()) if parameters else {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            for key, buffer in sub.named_buffers(recurse=False):
                state[f"{name}.{key}" if name else key] = buffer
    return state


class DivergenceGuard:
    """Lightning hooks and checks that stop training at a non-finite loss (see the module's
    docstring); the plan provides ``module``, ``trainer``, ``current_epoch``,
    ``global_step``, ``device``, ``_lr``, ``_default_lr`` (the model's default rate), ``_loss``
    and ``_take_penalty``."""

    def _reset_guard(self) -> None:
        # The module's state at the last checked step whose loss was finite, that (epoch,
        # step), and the training losses not yet read, each with its (epoch, step).
        self._finite_state: dict[str, torch.Tensor] | None = None
        self._finite_at: tuple[int, int] | None = None
        self._live_state: list[torch.Tensor] = []
        self._unread: list[tuple[torch.Tensor, tuple[int, int]]] = []
        self._steps_since_kept = 0
        # The validation pass's losses, read together at its end (on an accelerator).
        self._unread_validation: list[torch.Tensor] = []

    @property
    def check_every(self) -> int:
        """Training steps between two reads of the losses, 1 on the CPU, ``CHECK_EVERY`` (20)
        on an accelerator."""
        return 1 if self.device.type == "cpu" else CHECK_EVERY

    def _keep_finite_state(self, where: tuple[int, int] | None) -> None:
        """Copy the module's state, which just gave a finite loss at ``where`` (epoch, step)."""
        if self._finite_state is None:
            state = trained_state(self.module)
            self._finite_state = {k: v.detach().clone() for k, v in state.items()}
            # Detached parameters and buffers share storage with them.
            self._live_state = [v.detach() for v in state.values()]
        else:
            torch._foreach_copy_(list(self._finite_state.values()), self._live_state)
        self._finite_at = where

    def on_train_start(self):
        """Keep the starting parameters: the fallback should the first step diverge."""
        self._finite_state, self._unread, self._steps_since_kept = None, [], 0
        self._keep_finite_state(None)
        # Where cells validate, the starting state too: a validation loss not finite with it
        # comes from those cells' data, not from an update (one more copy of the parameters).
        validates = self.trainer.limit_val_batches != 0
        self._start_state = (
            {k: v.clone() for k, v in self._finite_state.items()} if validates else None
        )

    def note_training_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Take a training step's loss (of step ``batch_idx`` of the epoch), before the
        optimiser uses it; every :attr:`check_every` steps, read the losses taken and keep
        the parameters that gave this one when all are finite, or stop (see
        :meth:`read_training_losses`). The count runs on across epochs, whose ends read the
        losses too but keep nothing (the parameters then are past the last update, whose
        loss nobody has seen)."""
        where = (self.current_epoch, batch_idx)
        self._unread.append((loss.detach(), where))
        self._steps_since_kept += 1
        if self._steps_since_kept >= self.check_every:
            self.read_training_losses()
            if self.global_step > 0:  # at step 0 the state is the one kept by on_train_start
                self._keep_finite_state(where)
            self._steps_since_kept = 0

    def read_training_losses(self) -> None:
        """Stop at the first non-finite training loss not yet read, if any (one wait for the
        device), with the last finite parameters kept restored.

        Under DDP every process stops when any one met a non-finite loss: a process that
        stopped alone would leave the others waiting in the next gradient exchange. All
        processes read their losses at the same steps, so they agree there (one all-reduce).
        """
        if not self._unread:
            return
        n = len(self._unread)
        bad = ~torch.isfinite(torch.stack([loss for loss, _ in self._unread]))
        first = torch.where(bad, torch.arange(n, device=bad.device), n).min()  # n: none
        anywhere = n
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            agreed = first.clone()
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            anywhere = int(agreed)
        here = int(first)
        what = "training loss"
        if here == n and anywhere < n:  # finite here, not in another process
            here, what = anywhere, "training loss of another process"
        if here == n:
            self._unread.clear()
            return
        loss, (epoch, step) = self._unread[here]
        self._unread.clear()
        if what != "training loss":
            loss = loss.new_tensor(float("nan"))  # the other process's value is not here
        self._stop(loss, epoch, step, what)

    def on_validation_start(self):
        """A validation pass reads the parameters: the training losses first."""
        self.read_training_losses()
        self._unread_validation = []

    def note_validation_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Take a validation batch's loss (of batch ``batch_idx``): checked at once on the
        CPU, read with the pass's other losses at its end on an accelerator and under DDP,
        where the processes must agree (:meth:`read_validation_losses`)."""
        if self.check_every == 1 and self.trainer.world_size == 1:
            self.stop_if_diverged(loss, batch_idx, "validation loss")
        else:
            self._unread_validation.append(loss.detach().reshape(-1))

    def read_validation_losses(self) -> None:
        """Stop if a validation loss of this pass was not finite, in this process or (under
        DDP) in another: one wait for the device and one all-reduce a pass, the same number
        in every process whatever its count of validation batches."""
        losses = torch.cat(self._unread_validation) if self._unread_validation else None
        self._unread_validation = []
        if losses is None and self.trainer.world_size == 1:
            return
        if losses is None:  # no validation batch in this process
            bad = torch.zeros((), dtype=torch.bool, device=self.device)
        else:
            bad = (~torch.isfinite(losses)).any()
        anywhere = bad.float()
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        if not bool(anywhere):
            return
        # Every process takes part in the check with the starting parameters (its own
        # validation cells, then one all-reduce), whichever process met the loss.
        from_data = self._validation_not_finite_from_start()
        if losses is not None and bool(bad):
            self._stop(losses, self.current_epoch, 0, "validation loss", from_data)
        nan = torch.tensor(float("nan"))  # the other process's value is not here
        self._stop(nan, self.current_epoch, 0, "validation loss of another process", from_data)

    def on_validation_epoch_end(self):
        """The validation pass's losses, before anything reads its metrics."""
        self.read_validation_losses()

    def on_train_end(self):
        """The losses of steps after the last check (an epoch cut short by ``max_steps``)."""
        self.read_training_losses()

    def stop_if_diverged(self, loss: torch.Tensor, batch_idx: int, what: str) -> None:
        """Stop at once at a non-finite ``loss`` (any tensor) with the last finite parameters
        restored.

        Raises :class:`TrainingDivergedError` naming the epoch, the step (``batch_idx``) and
        what was not finite (``what``, e.g. ``"validation loss"``), and suggesting a lower
        learning rate.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            self._stop(loss, self.current_epoch, batch_idx, what)

    def _unreadable_values(self) -> str:
        """The data values the module's likelihood cannot take, said for it: counts that
        overflow, or (a normal likelihood) features far from 0, which the decoder starts at
        and the encoder's BatchNorm reads with running means at 0 (plus 1,000: NaN in the
        first validation pass; ``model/_real_values.py``)."""
        if getattr(self.module, "likelihood", None) == "normal":
            return (
                "features far from 0 for their spread, which likelihood='normal' starts at 0: "
                "centre each feature first, adata.X = adata.X - adata.X.mean(axis=0)"
            )
        return "counts so large that they overflow, e.g. above 1e30"

    def _validation_not_finite_from_start(self) -> bool:
        """Whether the validation cells' loss is not finite with the run's starting parameters
        too: one more pass over the validation cells, only after one gave a non-finite loss,
        with the random state kept and the parameters kept put back after. (Not with the
        parameters kept: at lr=0.1 those gave finite training losses and NaN on the validation
        cells, through BatchNorm's blown running statistics.) Under DDP each process checks
        its own validation cells and all agree (one all-reduce): every process must call it.
        """
        found = self._validation_cells_not_finite_from_start()
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            agreed = torch.tensor(float(found), device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            found = bool(agreed)
        return found

    def _validation_cells_not_finite_from_start(self) -> bool:
        loaders = getattr(self.trainer, "val_dataloaders", None)
        start = getattr(self, "_start_state", None)
        if loaders is None or start is None:
            return False
        from lightning.pytorch.utilities import move_data_to_device

        self.module.load_state_dict(start, strict=False)
        try:
            with torch.no_grad(), forked_generators(self.device):
                for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
                    for batch in loader:
                        loss = self._loss(move_data_to_device(batch, self.device), 1.0)[0]
                        self._take_penalty()
                        if not bool(torch.isfinite(loss).all()):
                            return True
            return False
        finally:
            self.module.load_state_dict(self._finite_state, strict=False)

    def _stop(self, loss: torch.Tensor, epoch: int, batch_idx: int, what: str, from_data=None):
        self.module.load_state_dict(self._finite_state, strict=False)
        if self._finite_at is None:
            kept = (
                "its parameters from before this training run (the first updates already diverged)"
            )
        else:
            kept = (
                f"the last parameters that gave a finite loss (epoch {self._finite_at[0]}, "
                f"step {self._finite_at[1]})"
            )
        n_steps = self.trainer.num_training_batches
        steps = f" of {n_steps}" if isinstance(n_steps, int) else ""
        # A validation pass runs after the epoch's training steps: its batches are not steps.
        where = (
            f"after epoch {epoch}'s training steps"
            if what.startswith("validation")
            else f"at epoch {epoch}, step {batch_idx}{steps}"
        )
        value = loss.detach()
        value = value[~torch.isfinite(value)][0] if value.dim() else value
        # A tenth of the rate that diverged, or the model's own default where that is lower
        # (a spot model's is 0.02 to 0.05: 1e-3, the VAEs' default, was too slow for it).
        lower = min(self._lr / 10, self._default_lr)
        advice = (
            f"Train again with a lower learning rate, e.g. train(lr={lower:g}) (this run used "
            f"lr={self._lr:g}), on a model built anew if this one diverges again (the "
            "parameters kept may be too far off to train on)."
        )
        if what == "training loss" and (epoch, batch_idx) == (0, 0):
            # The first step's loss is the starting parameters': no update made it so.
            where += ", before any update"
            kept = "its parameters from before this training run"
            advice = (
                "No learning rate can help: the parameters the run started from already give "
                "it. Check the data for values the likelihood cannot take "
                f"({self._unreadable_values()}), and the model for parameters that are not "
                "finite (build it anew)."
            )
        elif what.startswith("validation loss") and (
            self._validation_not_finite_from_start() if from_data is None else from_data
        ):
            # The held-out cells' data (a count that overflows) gives it before any update.
            if self._finite_at is None:
                kept = "its parameters from before this training run"
            advice = (
                "No learning rate can help: the parameters the run started from give it on "
                "the validation cells too. Check those cells for values the likelihood cannot "
                f"take ({self._unreadable_values()})."
            )
        raise TrainingDivergedError(
            f"Training diverged: the {what} became {float(value)} {where}. The model "
            f"keeps {kept}. {advice}",
            epoch=epoch,
            step=batch_idx,
            restored_at=self._finite_at,
        )
