"""scvi-tools' training runner, without its print on a failed fit or two Lightning messages,
with a history of floats."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pandas as pd
import torch
from scvi.train import TrainRunner
from scvi.train._trainrunner import _safe_load_logger_history

from ..model._condition_counts import warn_categories_without_training_cells
from ..model._fit_cells import record_fit_cells
from ._data import DeltaDataSplitter
from ._record import cells_digest, commit_train_args

_LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# Lightning's advice about its step logging; deltavae's history is per epoch.
_LOG_EVERY = r"The number of training batches \(\d+\) is smaller than the logging interval"
# Lightning's advice to add loader workers on a machine with more than two CPUs: deltavae reads
# minibatches in the training process: 0.3-0.6 ms per in-memory minibatch, 1-2% of a step
# (benchmarks/README.md, "Why 1M cells looked slower"); forked workers would share a backed
# file's HDF5 handle.
_WORKERS = r"The '\w+' does not have many workers which may be a bottleneck"
# Lightning's note on modules in eval mode: a query model trains so on purpose (model/_query.py).
_DDP_NO_STOPPING = "early_stopping was automatically disabled due to the use of DDP"
_EVAL_MODE = r"Found \d+ module\(s\) in eval mode at the start of training"


def _interrupted(trainer, err: BaseException) -> bool:
    """Whether ``err`` is Lightning's exit after a KeyboardInterrupt ended a fit (not SIGTERM's
    ``SIGTERMException``, also a ``SystemExit``)."""
    return (
        type(err) is SystemExit
        and isinstance(err.__context__, KeyboardInterrupt)
        and bool(getattr(trainer, "interrupted", False))
    )


#: What the start of a fit records on the model (``commit_train_args``): put back when the fit
#: fails before its first step, which changed no parameter.
_RECORDED_AT_START = (
    "train_args_", "convergence_", "_verdict_before", "trained_categories_",
    "condition_dtypes_", "trained_labels_", "_labels_trained_before",
)  # fmt: skip


def _steps_after(frame: pd.DataFrame | None) -> int:
    """The step after an earlier run's rows indexed by step, logged one an epoch (at its
    start): the last row's step and one epoch's steps, the spacing of the last rows."""
    if frame is None or frame.empty:
        return 0
    steps = frame.index.to_numpy()
    return int(steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 1))


class DeltaTrainRunner(TrainRunner):
    """:class:`scvi.train.TrainRunner` that lets a failed fit raise without printing.

    scvi-tools 1.4 prints ``Exception raised during training. <class 'NameError'> ...`` to
    stdout before re-raising any error of ``Trainer.fit``. deltavae's errors (a diverged run,
    bad input) say what happened themselves; this runner keeps the finished epochs' history
    and raises the error as it is. The rest of a successful run is scvi-tools' own.

    Lightning 2.6's data loading uses torch's ``LeafSpec``, which torch 2.13 deprecates with a
    ``FutureWarning`` at every fit; that warning, which no user of deltavae can act on, is
    silenced for the fit (by its message only: every other warning still shows), as is
    Lightning's advice to lower ``log_every_n_steps`` when an epoch has fewer than 10 steps:
    the history deltavae keeps is per epoch. So is its advice to add data-loader workers on a
    machine with more than two CPUs: minibatches are read in the training process, where an
    in-memory read takes well under a millisecond. A query model (``load_query_data``) trains
    in eval mode on purpose, so Lightning's note that it found modules in eval mode is
    silenced for it.

    The history's columns are floats (scvi-tools' logger leaves them of dtype ``object``, on
    which ``history["elbo_train"].round()`` fails and ``.describe()`` counts values).
    """

    def __init__(self, *args, **trainer_kwargs):
        # scvi-tools' Trainer turns torch.backends.cudnn.benchmark on for every fit, undoing
        # the deterministic GPU runs scvi.settings.seed asked for; deltavae's networks have
        # no convolutions for it to speed up, so the session's setting is left as it is.
        trainer_kwargs.setdefault("benchmark", None)
        with warnings.catch_warnings():
            # Said of every DDP run; deltavae adds the early stopping asked for itself.
            warnings.filterwarnings("ignore", message=_DDP_NO_STOPPING)
            super().__init__(*args, **trainer_kwargs)

    def _update_history(self):
        model = self.model
        if not (
            self.trainer.is_global_zero
            and model.is_trained_ is True
            and isinstance(model.history_, dict)
        ):
            super()._update_history()
        else:
            # A further run: scvi-tools numbers its rows on from each frame's length, which
            # gives validation rows (check_val_every_n_epoch > 1) the wrong epochs, and drops
            # the keys the earlier runs lacked. Every row keeps its epoch, counted on from the
            # epochs trained before this run (set before the fit, whose end or failure is
            # the only caller). Rows by step (LearningRateMonitor's "lr-Adam") count on from
            # the earlier runs' steps.
            for key, frame in (_safe_load_logger_history(self.trainer) or {}).items():
                before = model.history_.get(key)
                by_step = frame.index.name == "step"
                offset = _steps_after(before) if by_step else self._epochs_before
                frame = frame.set_axis(frame.index + offset)
                if key in model.history_:
                    frame = pd.concat([model.history_[key], frame])
                model.history_[key] = frame
        history = self.model.history_
        if isinstance(history, dict):
            for key, frame in history.items():
                if isinstance(frame, pd.DataFrame):
                    history[key] = frame.infer_objects()

    def _interrupt_note(self) -> KeyboardInterrupt:
        """An interrupted fit (Ctrl-C, a notebook's "interrupt kernel"): Lightning stops it and
        exits the interpreter (``SystemExit(1)``), which a notebook shows as a bare
        ``SystemExit: 1`` and which left the model marked untrained whatever it had learnt.
        Instead: the model keeps the parameters of its last step, counts as trained once an
        epoch completed, and the interrupt says so, as ``print(model)`` does after it (its
        first sentence is the run's ``convergence_``)."""
        from ..model._summary import record_verdict

        epochs = self._epochs_done() - self._epochs_before  # this run's
        self.model.module.eval()
        self.model.is_trained_ = bool(self.model.is_trained_ or epochs)
        note = (
            f"Training was interrupted after {epochs} of its {self.trainer.max_epochs} epochs. "
            "The model keeps the parameters of its last step"
            + (" and has not converged." if epochs else "; no epoch completed.")
        )
        record_verdict(self.model, note)
        return KeyboardInterrupt(note)

    def _record_split(self) -> None:
        """The model's ``train_indices``, ``validation_indices`` and ``test_indices``: this
        run's split (also of a failed run, whose steps trained on it), and the cells its
        positions are of (a load onto other cells forgets the split)."""
        splitter = self.data_splitter
        self.model.train_indices = getattr(splitter, "train_idx", None)
        self.model.test_indices = getattr(splitter, "test_idx", None)
        self.model.validation_indices = getattr(splitter, "val_idx", None)
        self.model.split_cells_ = cells_digest(self.model.adata.obs_names)
        record_fit_cells(self.model)  # an in-place subset since is told (model/_fit_cells.py)

    def _drop_unfinished_epoch(self) -> None:
        """After a failed fit, the rows of the epoch it did not finish (validated, say, before
        a callback raised at the epoch's end, but without ``elbo_train``): the next run numbers
        its epochs on from the finished ones and would give that epoch's rows twice."""
        history = self.model.history_
        if isinstance(history, dict) and "elbo_train" in history:
            done = self._epochs_done()
            for key, frame in history.items():
                if frame.index.name != "step":  # rows by epoch
                    history[key] = frame[frame.index < done]

    def _no_step_taken(self) -> bool:
        """Whether this fit, in one process, ended before its first optimiser step."""
        trainer = self.trainer
        return (
            trainer.world_size == 1
            and trainer.global_step == 0
            and self._epochs_done() == self._epochs_before
        )

    def _epochs_done(self) -> int:
        """Epochs in the model's history (of every run)."""
        history = self.model.history_ or {}
        return len(history["elbo_train"]) if "elbo_train" in history else 0

    def _run_training_core(self):
        # The fit starts: the model keeps the arguments of the train call that runs it, with
        # the values its defaults resolved to.
        resolved = {
            "max_epochs": self.trainer.max_epochs,
            "lr": getattr(self.training_plan, "_lr", None),
            "batch_size": self.data_splitter.data_loader_kwargs.get("batch_size"),
        }
        from ._checkpoint import RestoreBestValidation
        from ._mixture_init import MixtureInitialization

        callbacks = self.trainer.callbacks
        starts = [cb.epoch for cb in callbacks if isinstance(cb, MixtureInitialization)]
        automatic = {  # what arguments left to "auto" came to
            "n_epochs_kl_warmup": getattr(self.training_plan, "n_epochs_kl_warmup", None),
            "mixture_init_epoch": starts[0] if starts else None,
            "restore_best": any(isinstance(cb, RestoreBestValidation) for cb in callbacks),
        }
        if isinstance(self.data_splitter, DeltaDataSplitter):
            # Split here, once: DDP's workers keep this split, and the model records it.
            self.data_splitter.split()
        # Validation and test cells give no gradient: a category only they hold is untrained.
        split = self.data_splitter
        warn_categories_without_training_cells(
            self.model, getattr(split, "train_idx", None), getattr(split, "val_idx", None)
        )
        held_out = [getattr(self.data_splitter, f"{k}_idx", None) for k in ("val", "test")]
        held_out = [np.asarray(idx) for idx in held_out if idx is not None]
        before = {k: vars(self.model)[k] for k in _RECORDED_AT_START if k in vars(self.model)}
        commit_train_args(
            self.model, resolved, automatic, np.concatenate(held_out) if held_out else None
        )
        self._epochs_before = self._epochs_done()
        was_trained = bool(self.model.is_trained_)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_LEAFSPEC, category=FutureWarning)
                warnings.filterwarnings("ignore", message=_LOG_EVERY)
                warnings.filterwarnings("ignore", message=_WORKERS)
                if getattr(self.model, "is_query_model", False):
                    warnings.filterwarnings("ignore", message=_EVAL_MODE)
                self.trainer.fit(self.training_plan, self.data_splitter, ckpt_path=self.ckpt_path)
        except BaseException as err:
            self.model.is_trained_ = self.model.is_trained_ or was_trained
            self._update_history()
            self._drop_unfinished_epoch()
            if self._no_step_taken():
                # Failed before its first step (the optimiser refused its settings, a
                # callback raised at the fit's start): the model keeps the record and split
                # of the run that trained its parameters.
                for key in _RECORDED_AT_START:
                    vars(self.model).pop(key, None)
                vars(self.model).update(before)
            elif hasattr(self.data_splitter, "train_idx"):  # this run's cells changed the model
                self._record_split()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if _interrupted(self.trainer, err):
                raise self._interrupt_note() from err
            raise
        # scvi-tools' SaveCheckpoint (enable_checkpointing=True) marks the model untrained
        # after each save: a model trained before would lose the earlier runs' history.
        self.model.is_trained_ = self.model.is_trained_ or was_trained
        # Fit succeeded: the base class's call fits nothing more, it records the run. Its
        # trainer.fit is replaced by a no-op for that call only.
        fit, self.trainer.fit = self.trainer.fit, lambda *args, **kwargs: None
        try:
            super()._run_training_core()
        finally:
            self.trainer.fit = fit
        self._record_split()
        record, rate = self.model.train_args_ or {}, getattr(self.training_plan, "_lr", None)
        if "lr" in record and record["lr"] is None and rate is not None:
            record["lr"] = rate  # an optimizer_creator's: known once it made the optimiser
        steps = self.trainer.global_step  # 0 in the launching process of a spawned DDP run
        if not was_trained and steps == 0 and self._epochs_done() == self._epochs_before:
            # No step, no epoch (max_time reached at once): nothing was learnt; read-outs say
            # the model is untrained.
            self.model.is_trained_ = False
