"""The Lightning training plan shared by every deltavae model.

scvi-tools' ``PyroTrainingPlan`` steps Pyro's SVI (optimiser state in Pyro's global param store)
and logs no validation ELBO. We use the lower-level plan instead: the ELBO is a differentiable
loss and a torch optimiser owns ``module.parameters()``. That keeps every parameter in the
module's ``state_dict`` (so save/load and two models in one process are safe), lets Lightning
handle devices and gradient synchronisation, and makes early stopping on the validation
objective possible.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import sys
import warnings
from collections.abc import Callable

import pyro
import torch
from scvi import REGISTRY_KEYS
from scvi.train import LowLevelPyroTrainingPlan

from .._close_names import did_you_mean
from .._rng import forked_generators
from ._checkpoint import keep_frozen_entries
from ._convergence import DEFAULT_LR, record_stop
from ._custom_optimizer import check_custom_optimizer, created_optimizer
from ._distributed import own_random_stream
from ._divergence import DivergenceGuard, trained_state

# Freed minibatch buffers fragment the C heap by about 0.3 MiB a step: trimmed every 100 steps,
# the peak of one 100k-cell epoch rose to +91 MiB over the start of training, every 10 steps it
# stays at +50 MiB, in the same time (benchmarks/README.md, issue 19's memory rows).
_TRIM_EVERY = 10
# A module without a torch-side ELBO needs a second pass for the training-set terms
# (reconstruction, KL): every 10th step keeps their epoch means (scvi-tools' history names) at
# about 3% of the training time. A module with one (``has_torch_elbo``) gets them every step,
# from the step's own pass.
_TERMS_EVERY = 10
# A module whose objective is the ELBO plus other terms (CGMDVAE's weighted classifier and
# alignment terms) leaves their per-cell mean for the draw its Pyro ``model`` just ran in its
# ``objective_penalty`` attribute; the plan subtracts it from that draw's loss, so that
# ``elbo_*`` is the ELBO and ``train_loss``/``validation_loss`` the objective.
_PENALTY = "objective_penalty"
_OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}


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


def _fused_if_possible(optim, params, optim_kwargs: dict) -> dict:
    """``optim_kwargs`` with ``fused=True`` for torch's Adam and AdamW on CPU or CUDA float
    parameters, unless the caller chose an implementation: one kernel for all parameters
    instead of the loop over them that is the CPU's default (the same updates to the bit on
    the CPU, measured over 200 steps; a step about 4x faster on PBMC's ZINBVAE)."""
    if optim not in (torch.optim.Adam, torch.optim.AdamW) or {"fused", "foreach"} & set(
        optim_kwargs
    ):
        return optim_kwargs
    if not params or not all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    ):
        return optim_kwargs
    return {**optim_kwargs, "fused": True}


class DeltaTrainingPlan(DivergenceGuard, LowLevelPyroTrainingPlan):
    """Train a deltavae Pyro module with per-cell ELBOs for training and validation.

    The module's ``model`` and ``guide`` describe the whole data set (their cell plate has
    size ``module.n_obs``); the plan scales the loss by ``1 / n_obs`` so the logged
    ``elbo_train`` and ``elbo_validation`` are negative ELBOs per cell, comparable across data
    sets and with scvi-tools; both are the full ELBO (KL weight 1), also during the KL
    warm-up, while ``train_loss`` is the annealed loss the optimiser minimised and
    ``validation_loss`` the objective on the validation cells. For most models the objective
    is the ELBO; a labelled or condition-aligned CGMDVAE adds its weighted classifier and
    alignment terms to it (logged as ``classifier_*`` and ``alignment_*``), which the
    ``elbo_*`` values leave out, as scvi-tools' SCANVI does.

    Parameters
    ----------
    pyro_module
        A :class:`~scvi.module.base.PyroBaseModuleClass` whose ``model`` and ``guide`` take
        ``kl_weight`` as a keyword argument.
    optim_kwargs
        Keyword arguments for the optimiser (default ``lr=1e-3``, ``eps=0.01`` as in
        scvi-tools).
    n_epochs_kl_warmup
        Epochs over which the KL weight rises linearly from ``min_kl_weight`` to 1.
    min_kl_weight
        Starting KL weight. 0 trains (the default loss is the module's torch-side ELBO);
        a Pyro ``loss_fn`` other than plain ``Trace_ELBO`` runs through Pyro's ``scale``
        handler, which needs it positive (``train`` refuses 0 there).
    lr, weight_decay, eps, optimizer
        scvi-tools' names for the optimiser's settings (``optimizer``: ``"Adam"`` or
        ``"AdamW"``); they override ``optim_kwargs``. Weight decay is 0 unless given, for
        AdamW too (torch's own default there is 0.01); a query model's fixed reference
        weights stay fixed under it.
    optimizer_creator
        With ``optimizer="Custom"`` (scvi-tools' way), a function of the learning
        parameters that returns the torch optimiser, its rate and settings its own (``lr``,
        ``eps``, ``weight_decay``, ``optim`` and ``optim_kwargs`` are refused beside it).
    reduce_lr_on_plateau, lr_factor, lr_patience, lr_threshold, lr_scheduler_metric, lr_min
        scvi-tools' learning-rate schedule: multiply the rate by ``lr_factor`` when
        ``lr_scheduler_metric`` has not improved by ``lr_threshold`` for ``lr_patience``
        epochs (for a validation metric, validations: ``check_val_every_n_epoch``), down to
        ``lr_min``.
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
        lr: float | None = None,
        weight_decay: float | None = None,
        eps: float | None = None,
        optimizer: str = "Adam",
        optimizer_creator: Callable | None = None,
        reduce_lr_on_plateau: bool = False,
        lr_factor: float = 0.6,
        lr_patience: int = 30,
        lr_threshold: float = 0.0,
        lr_scheduler_metric: str = "elbo_validation",
        lr_min: float = 0.0,
        **kwargs,
    ):
        settings = {"lr": lr, "eps": eps, "weight_decay": weight_decay}
        settings |= {"optim": kwargs.get("optim"), "optim_kwargs": optim_kwargs}
        check_custom_optimizer(optimizer, optimizer_creator, settings)
        self._optimizer_creator = optimizer_creator
        optimizer = "Adam" if optimizer == "Custom" else optimizer  # the creator's, at fit
        optim_kwargs = dict(optim_kwargs or {})
        if lr is not None:
            optim_kwargs["lr"] = lr
        if eps is not None:
            optim_kwargs["eps"] = eps
        if weight_decay is not None:
            optim_kwargs["weight_decay"] = weight_decay
        if optimizer not in _OPTIMIZERS:
            hint = did_you_mean(optimizer, [*_OPTIMIZERS, "Custom"])  # "adam": 'Adam'
            raise ValueError(
                f"optimizer must be one of {sorted(_OPTIMIZERS)} or 'Custom' (with "
                f"optimizer_creator), got {optimizer!r}{f' ({hint})' if hint else ''}; for "
                "another, pass its class, e.g. plan_kwargs={'optim': torch.optim.SGD}."
            )
        kwargs.setdefault("optim", _OPTIMIZERS[optimizer])
        # scvi-tools' eps, and a weight decay never the optimiser's own (AdamW's is 0.01): 0
        # unless asked for; to an optimiser that takes them (torch's SGD has no eps).
        takes = inspect.signature(kwargs["optim"]).parameters
        defaults = {"lr": DEFAULT_LR, "eps": 0.01, "weight_decay": 0.0}
        optim_kwargs = {
            **{k: v for k, v in defaults.items() if k in takes or k == "lr"},
            **optim_kwargs,
        }
        super().__init__(
            pyro_module,
            optim_kwargs=optim_kwargs,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            min_kl_weight=min_kl_weight,
            **kwargs,
        )
        self.reduce_lr_on_plateau = reduce_lr_on_plateau
        self.lr_factor, self.lr_patience = lr_factor, lr_patience
        self.lr_threshold, self.lr_min = lr_threshold, lr_min
        self.lr_scheduler_metric = lr_scheduler_metric
        # A creator's rate is known once it has made the optimiser (configure_optimizers).
        self._lr = None if optimizer_creator is not None else optim_kwargs["lr"]
        # The model's own default rate, for a diverged run's advice: a spot model's, set on its
        # module as it trains (see deltavae.model._spots.spot_rate), else the VAEs'.
        self._default_lr = getattr(pyro_module, "default_lr", DEFAULT_LR)
        self._reset_guard()
        # Sums over the epoch's training steps of each logged term (times cells), and cells.
        self._epoch_sums: dict[str, torch.Tensor] = {}
        self._epoch_cells: dict[str, int] = {}
        # Logged metrics that are not terms of the ELBO (labelled CGMDVAE's classifier term).
        self._extra_names: set[str] = set()

    def configure_optimizers(self):
        """The optimiser over the learning parameters, and scvi-tools' plateau scheduler when
        ``reduce_lr_on_plateau``."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self._optimizer_creator is not None:
            optimizer = created_optimizer(self._optimizer_creator, params)
            self._lr = optimizer.param_groups[0]["lr"]
        else:
            optim_kwargs = _fused_if_possible(self.optim, params, self.optim_kwargs)
            optimizer = self.optim(params, **optim_kwargs)
        keep_frozen_entries(self.module, optimizer)
        if not self.reduce_lr_on_plateau:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            patience=self.lr_patience,
            factor=self.lr_factor,
            threshold=self.lr_threshold,
            min_lr=self.lr_min,
            threshold_mode="abs",
        )
        # A validation metric exists only at the epochs that validate: the schedule steps there
        # (Lightning refused the epochs between them with check_val_every_n_epoch > 1).
        every = getattr(self._trainer, "check_val_every_n_epoch", None) or 1
        validated = self.lr_scheduler_metric.endswith("_validation") or (
            self.lr_scheduler_metric == "validation_loss"
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.lr_scheduler_metric,
                "frequency": every if validated else 1,
            },
        }

    @property
    def n_obs_training(self):
        """Number of training cells, the cell plate's size and the per-cell ELBO divisor."""
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

    @property
    def uses_torch_elbo(self) -> bool:
        """Whether the loss is the module's torch-side ``negative_elbo`` rather than Pyro's
        ``Trace_ELBO`` over ``model`` and ``guide`` (the same value and gradients, without
        Pyro's tracing): when the module has one and the loss is Pyro's plain ``Trace_ELBO``."""
        return getattr(self.module, "has_torch_elbo", False) and (
            type(self.loss_fn) is pyro.infer.Trace_ELBO
        )

    def _loss(self, batch, kl_weight: float) -> tuple[torch.Tensor, int, dict | None]:
        """The scaled negative ELBO of a minibatch, its number of cells and, from a torch-side
        ELBO, the per-cell terms to log (``None`` from Pyro's)."""
        args, kwargs = self.module._get_fn_args_from_batch(batch)
        if self.use_kl_weight:
            kwargs["kl_weight"] = kl_weight
        n = args[0].shape[0]
        if self.uses_torch_elbo:
            per_cell, terms = self.module.negative_elbo(*args, **kwargs)
            self._extra_names.update(set(terms) & set(self.module.terms_beside_elbo))
            # Pyro's scaling: the cell plate (size n_obs, n cells drawn) times scale_elbo.
            scale = (self.module.n_obs or n) / n * self.scale_elbo
            return per_cell.sum() * scale, n, terms
        with warnings.catch_warnings():  # a NaN is stop_if_diverged's to report, with advice
            warnings.filterwarnings("ignore", message="Encountered NaN")
            loss = self.differentiable_loss_fn(
                self.scale_fn(self.module.model), self.scale_fn(self.module.guide), *args, **kwargs
            )
        return loss, n, None

    def _take_penalty(self) -> torch.Tensor | None:
        """The module's terms outside the ELBO in the loss just computed (``None`` when its
        objective is the ELBO), taken so that a later loss does not read them again."""
        penalty = self.module.__dict__.pop(_PENALTY, None)
        return None if penalty is None else penalty.to(self.device)

    def training_step(self, batch, batch_idx):
        """One SVI step: the annealed negative ELBO per cell as a torch loss.

        A NaN or infinite loss stops training with :class:`TrainingDivergedError`, the module
        back at the last parameters that gave a finite loss (on an accelerator, those of the
        last read of the losses: see :class:`~deltavae.train._divergence.DivergenceGuard`).
        """
        kl_weight = float(self.kl_weight)
        torch_elbo = self.uses_torch_elbo
        if not torch_elbo and batch_idx % _TERMS_EVERY == 0:
            # Before the step's own pass: restoring BatchNorm's statistics after it would
            # change tensors its backward pass still needs.
            with torch.no_grad():
                n = batch[REGISTRY_KEYS.X_KEY].shape[0]
                self._add_to_epoch(self._module_terms(batch), n)
        loss, n, terms = self._loss(batch, kl_weight)
        penalty = self._take_penalty()
        if penalty is not None:
            self._add_to_epoch({_PENALTY: penalty}, n, per_cell=False)
        self.note_training_loss(loss, batch_idx)
        if terms is not None:
            self._add_to_epoch(terms, n)
        # Summed on the host (a copy to the device would wait for it), moved at the epoch's end.
        self._add_to_epoch({"kl_weight": torch.tensor(kl_weight)}, n, per_cell=False)
        self.training_step_outputs.append({"loss": loss.detach(), "n": n})
        return {"loss": loss}

    def on_fit_start(self):
        """Under DDP, each process draws its own noise (``own_random_stream``)."""
        own_random_stream(self.trainer)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """Every ``_TRIM_EVERY`` steps, give the C heap's free pages back (see
        ``release_free_memory``)."""
        if batch_idx % _TRIM_EVERY == _TRIM_EVERY - 1:
            release_free_memory()

    def on_train_end(self):
        """Read the last steps' losses, and record what stopped the run where the caller reads
        it also under DDP (``record_stop``)."""
        super().on_train_end()
        record_stop(self.trainer)

    def on_train_epoch_start(self):
        """Start the epoch's sums of the logged training terms afresh."""
        self._epoch_sums, self._epoch_cells = {}, {}

    def _add_to_epoch(self, terms: dict[str, torch.Tensor], n: int, per_cell: bool = True):
        """Add a step's terms (per-cell tensors, or a scalar for the whole step when not
        ``per_cell``), weighted by its ``n`` cells, to the epoch's sums: logged once, at the
        epoch's end, instead of one Lightning ``log`` call per term and step."""
        for name, value in terms.items():
            value = value.detach()
            total = value.sum() if per_cell else value * n
            if name in self._epoch_sums:
                self._epoch_sums[name] += total
                self._epoch_cells[name] += n
            else:
                self._epoch_sums[name], self._epoch_cells[name] = total, n

    def on_train_epoch_end(self):
        """Log ``train_loss``, the annealed loss per cell over the epoch's minibatches (what
        the optimiser minimised), and ``elbo_train``, the negative ELBO at full KL weight, as
        scvi-tools logs them: during the KL warm-up the loss is the ELBO with its KL terms
        down-weighted, so ``elbo_train`` adds the missing part, (1 - kl_weight) times the
        epoch's KL (from the logged terms); after it the two are equal. Also ``kl_weight`` and
        the epoch means of the ELBO's terms (see ``_log_terms``)."""
        self.read_training_losses()  # nothing non-finite is logged
        # Per cell, as the validation ELBO and the terms: a last, smaller minibatch weighs
        # its cells, not as much as a full one (its ELBO differed from its terms' sum by 0.3%).
        outputs = self.training_step_outputs
        cells = torch.tensor([float(out["n"]) for out in outputs], device=outputs[0]["loss"].device)
        loss = (torch.stack([out["loss"] for out in outputs]) * cells).sum() / cells.sum()
        self.training_step_outputs.clear()
        # On the module's device: DDP's sync_dist all-reduces them; NCCL refuses CPU tensors.
        means = {k: (v / self._epoch_cells[k]).to(loss.device) for k, v in self._epoch_sums.items()}
        elbo = loss
        kl_weight = means.pop("kl_weight", None)
        penalty = means.pop(_PENALTY, None)
        kl = self._kl_terms(means)
        # Terms the module keeps at full weight during the warm-up (ZINBVAE's latent library,
        # as in scVI) are in the loss already.
        kl = {k: v for k, v in kl.items() if k not in getattr(self.module, "unannealed_terms", ())}
        if kl_weight is not None and "reconstruction_loss" in means and kl:
            elbo = loss + (1.0 - kl_weight) * sum(kl.values()).to(loss.device)
        if penalty is not None:
            elbo = elbo - penalty.to(loss.device)
        self.log("elbo_train", elbo, prog_bar=True, sync_dist=self._sync_dist)
        self.log("train_loss", loss, sync_dist=self._sync_dist)
        if kl_weight is not None:
            self.log("kl_weight", kl_weight, sync_dist=self._sync_dist)
        if means:
            self._log_terms(means, "train", {"sync_dist": self._sync_dist})
        self._epoch_sums, self._epoch_cells = {}, {}

    def _kl_terms(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The KL terms among the logged ``means``: neither the reconstruction term nor a
        metric beside the ELBO."""
        return {
            k: v
            for k, v in means.items()
            if k != "reconstruction_loss" and k not in self._extra_names
        }

    def _module_terms(self, batch) -> dict[str, torch.Tensor]:
        """The ELBO's per-cell terms from a second, torch-side pass of the module (its
        ``loss``): ``reconstruction_loss`` and each local KL term."""
        # The terms sample again; a forked RNG keeps training draws independent of them, and
        # BatchNorm's running statistics are put back, so logging never changes training.
        changing = trained_state(self.module, parameters=False).values()
        buffers = [(b, b.clone()) for b in changing] if self.training else []
        with forked_generators(self.device):
            _, _, terms = self.module(batch)
        for buffer, kept in buffers:
            buffer.copy_(kept)
        n = batch[REGISTRY_KEYS.X_KEY].shape[0]
        # Metrics beside the ELBO (CGMDVAE's classifier term, a mean over the minibatch),
        # spread over its cells so that they add up per epoch as the terms do.
        extra = {
            name: torch.as_tensor(value).float().reshape(-1).expand(n)
            for name, value in (terms.extra_metrics or {}).items()
            if torch.as_tensor(value).numel() == 1
        }
        self._extra_names = set(extra)
        recon = sum(terms.reconstruction_loss.values())
        return {"reconstruction_loss": recon, **terms.kl_local, **extra}

    def _log_terms(self, means: dict[str, torch.Tensor], split: str, log: dict) -> None:
        """Log the ELBO's terms (``means``: per-cell means) under scvi-tools' names:
        ``reconstruction_loss_<split>``, ``kl_local_<split>`` (the sum of the KL terms),
        ``kl_global_<split>`` (0: no global latent) and ``<term>_<split>`` for each local
        term and each metric beside the ELBO (``classifier_<split>`` for labelled CGMDVAE)."""
        kl = self._kl_terms(means)
        self.log(f"reconstruction_loss_{split}", means["reconstruction_loss"], **log)
        self.log(f"kl_local_{split}", sum(kl.values()), **log)
        # A zero made on the device: Lightning would copy a number there, a wait each batch.
        self.log(f"kl_global_{split}", means["reconstruction_loss"].new_zeros(()), **log)
        for name, value in means.items():
            # kl_local: a module without named terms, whose sum says it all.
            if name not in ("reconstruction_loss", "kl_local"):
                self.log(f"{name}_{split}", value, **log)

    def validation_step(self, batch, batch_idx):
        """Full negative ELBO per cell on held-out cells, and each of its terms.

        Logs ``validation_loss`` (the objective), ``elbo_validation`` (the objective less the
        module's terms outside the ELBO, if any) and the terms of the ELBO (see
        ``_log_terms``): from the same pass with a torch-side ELBO, from the module's
        torch-side ``loss`` otherwise.
        """
        loss, n, terms = self._loss(batch, 1.0)
        penalty = self._take_penalty()  # of this loss's draw, before anything runs again
        self.note_validation_loss(loss, batch_idx)
        log = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": self._sync_dist}
        if terms is None:
            terms = self._module_terms(batch)
        elbo = loss if penalty is None else loss - penalty
        self.log("elbo_validation", elbo, **log)
        self.log("validation_loss", loss, **log)
        self._log_terms({k: v.mean() for k, v in terms.items()}, "validation", log)
        return loss
