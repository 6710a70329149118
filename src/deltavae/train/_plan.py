"""The Lightning training plan shared by every deltavae model.

scvi-tools' ``PyroTrainingPlan`` steps Pyro's SVI (optimiser state in Pyro's global param store)
and logs no validation ELBO. We use the lower-level plan instead: the ELBO is a differentiable
loss and a torch optimiser owns ``module.parameters()``. That keeps every parameter in the
module's ``state_dict`` (so save/load and two models in one process are safe), lets Lightning
handle devices and gradient synchronisation, and makes early stopping on ``elbo_validation``
possible.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import torch
from scvi.train import LowLevelPyroTrainingPlan

_TRIM_EVERY = 100


class TrainingDivergedError(RuntimeError):
    """Training met a non-finite loss (NaN or infinite) and stopped.

    ``epoch`` and ``step`` say where. The model keeps the last parameters that gave a finite
    loss, those used at ``restored_at`` = (epoch, step); ``None`` when they are the ones it
    started this run with.
    """

    def __init__(self, message: str, epoch: int, step: int, restored_at: tuple[int, int] | None):
        super().__init__(message)
        self.epoch, self.step, self.restored_at = epoch, step, restored_at


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries and systems."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the operating system (glibc only).

    Every minibatch allocates and frees arrays of about a megabyte (more when read from a
    backed file, whose rows vary in size); glibc keeps the freed pages, fragmented, so the
    resident memory of a long epoch creeps up with the number of minibatches (+250 MiB over
    one epoch of 1M cells, backed). Trimming every ``_TRIM_EVERY`` steps keeps it flat; dask's
    workers do the same.

    Returns
    -------
    Whether a trim was possible here.

    Examples
    --------
    >>> isinstance(release_free_memory(), bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class DeltaTrainingPlan(LowLevelPyroTrainingPlan):
    """Train a deltavae Pyro module with per-cell ELBOs for training and validation.

    The module's ``model`` and ``guide`` describe the whole data set (their cell plate has
    size ``module.n_obs``); the plan scales the loss by ``1 / n_obs`` so the logged
    ``elbo_train`` and ``elbo_validation`` are negative ELBOs per cell, comparable across data
    sets and with scvi-tools. The validation ELBO is always the full ELBO (KL weight 1).

    Parameters
    ----------
    pyro_module
        A :class:`~scvi.module.base.PyroBaseModuleClass` whose ``model`` and ``guide`` take
        ``kl_weight`` as a keyword argument.
    optim_kwargs
        Keyword arguments for :class:`torch.optim.Adam` (default ``lr=1e-3``, ``eps=0.01`` as
        in scvi-tools).
    n_epochs_kl_warmup
        Epochs over which the KL weight rises linearly from ``min_kl_weight`` to 1.
    min_kl_weight
        Starting KL weight; Pyro's ``scale`` handler needs it positive.
    **kwargs
        Passed to :class:`~scvi.train.LowLevelPyroTrainingPlan`.

    Examples
    --------
    >>> plan = DeltaTrainingPlan(vae.module, n_epochs_kl_warmup=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        pyro_module,
        optim_kwargs: dict | None = None,
        n_epochs_kl_warmup: int | None = None,
        min_kl_weight: float = 1e-6,
        **kwargs,
    ):
        optim_kwargs = {"lr": 1e-3, "eps": 0.01, **(optim_kwargs or {})}
        super().__init__(
            pyro_module,
            optim_kwargs=optim_kwargs,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            min_kl_weight=min_kl_weight,
            **kwargs,
        )
        self._lr = optim_kwargs["lr"]
        # The module's state at the last step whose loss was finite, and that (epoch, step).
        self._finite_state: dict[str, torch.Tensor] | None = None
        self._finite_at: tuple[int, int] | None = None

    @property
    def n_obs_training(self):
        """Number of training cells: the cell plate's size and the per-cell ELBO divisor."""
        return self._n_obs_training

    @n_obs_training.setter
    def n_obs_training(self, n_obs: int | None):
        self._n_obs_training = n_obs
        if n_obs:
            self.module.n_obs = n_obs
            self.scale_elbo = 1.0 / n_obs

    @property
    def _sync_dist(self) -> bool:
        # Under DDP each process sees its own cells: log the mean over processes.
        return self.trainer.world_size > 1

    def _loss(self, batch, kl_weight: float) -> tuple[torch.Tensor, int]:
        args, kwargs = self.module._get_fn_args_from_batch(batch)
        if self.use_kl_weight:
            kwargs["kl_weight"] = kl_weight
        loss = self.differentiable_loss_fn(
            self.scale_fn(self.module.model), self.scale_fn(self.module.guide), *args, **kwargs
        )
        return loss, args[0].shape[0]

    def _keep_finite_state(self, where: tuple[int, int] | None) -> None:
        """Copy the module's state, which just gave a finite loss at ``where`` (epoch, step)."""
        state = self.module.state_dict()
        if self._finite_state is None:
            self._finite_state = {k: v.detach().clone() for k, v in state.items()}
        else:
            for key, value in state.items():
                self._finite_state[key].copy_(value)
        self._finite_at = where

    def on_train_start(self):
        """Keep the starting parameters: the fallback should the first step diverge."""
        self._finite_state = None
        self._keep_finite_state(None)

    def stop_if_diverged(self, loss: torch.Tensor, batch_idx: int, what: str) -> None:
        """Stop at a non-finite ``loss`` (any tensor) with the last finite parameters restored.

        Raises :class:`TrainingDivergedError` naming the epoch, the step and what was not
        finite, and suggesting a lower learning rate.
        """
        if bool(torch.isfinite(loss.detach())):
            return
        epoch = self.current_epoch
        self.module.load_state_dict(self._finite_state)
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
        lower = self._lr / 10 if self._lr <= 1e-2 else 1e-3
        raise TrainingDivergedError(
            f"Training diverged: the {what} became {float(loss.detach())} at epoch {epoch}, step "
            f"{batch_idx}{steps}. The model keeps {kept}. Train again with a lower learning "
            f"rate, e.g. train(lr={lower:g}) (this run used lr={self._lr:g}).",
            epoch=epoch,
            step=batch_idx,
            restored_at=self._finite_at,
        )

    def training_step(self, batch, batch_idx):
        """One SVI step: the annealed negative ELBO per cell as a torch loss.

        A NaN or infinite loss stops training with :class:`TrainingDivergedError`, the module
        back at the end of the last epoch whose losses were all finite.
        """
        kl_weight = float(self.kl_weight)
        loss, n = self._loss(batch, kl_weight)
        self.stop_if_diverged(loss, batch_idx, "training loss")
        if self.global_step > 0:  # at step 0 the state is the one kept by on_train_start
            self._keep_finite_state((self.current_epoch, batch_idx))
        self.log(
            "kl_weight",
            kl_weight,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=self._sync_dist,
        )
        self.training_step_outputs.append({"loss": loss.detach()})
        return {"loss": loss}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """Every ``_TRIM_EVERY`` steps, give the C heap's free pages back (see
        :func:`release_free_memory`)."""
        if batch_idx % _TRIM_EVERY == _TRIM_EVERY - 1:
            release_free_memory()

    def on_train_epoch_end(self):
        """Log ``elbo_train``: the mean annealed loss of the epoch's minibatches."""
        elbo = torch.stack([out["loss"] for out in self.training_step_outputs]).mean()
        self.log("elbo_train", elbo, prog_bar=True, sync_dist=self._sync_dist)
        self.training_step_outputs.clear()

    def validation_step(self, batch, batch_idx):
        """Full negative ELBO per cell on held-out cells, and each of its terms.

        Logs ``elbo_validation`` (the Pyro ELBO) and, from the module's torch-side ``loss``,
        ``reconstruction_loss_validation`` and ``<term>_validation`` for every KL term.
        """
        loss, n = self._loss(batch, 1.0)
        self.stop_if_diverged(loss, batch_idx, "validation loss")
        log = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": self._sync_dist}
        self.log("elbo_validation", loss, **log)
        # The term split samples again; a forked RNG keeps training draws independent of it.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            _, _, terms = self.module(batch)
        self.log("reconstruction_loss_validation", terms.reconstruction_loss_sum / n, **log)
        for name, value in terms.kl_local.items():
            self.log(f"{name}_validation", value.mean(), **log)
        return loss
