"""Behaviour every deltavae model class shares: training defaults, safe save and load."""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile

import pyro
import torch
from scvi.model.base import PyroSviTrainMixin

from .._anndata_or_folder import check_anndata
from .._unchanged_on_failure import unchanged_on_failure
from ..module._base import lay_out_contiguously
from ..train import DeltaDataSplitter, DeltaTrainingPlan, TrainingDivergedError
from ..train._distributed import workers_stopped
from ..train._record import records_train_args
from ..train._runner import DeltaTrainRunner
from ..train._stopping import add_stopping
from ._adata_reads import AnnDataReadsMixin
from ._adata_setter import AnnDataSetter
from ._backing import open_files_for_calls
from ._count_advice import note_non_negative
from ._history import HistoryMixin
from ._reference_record import warn_if_diverged
from ._saved import Saving, _package_version, own_fitted_attributes
from ._scvi_glue import Picklable, _OnDevice, loader_arguments
from ._summary import SummaryMixin
from ._train_steps import (
    add_splitter_arguments,
    check_data_to_train,
    devices_and_strategy,
    epochs_trained,
    record_divergence,
    record_run,
    resolved_arguments,
    validation_split,
)
from ._training_checks import callback_list
from ._validation import check_flags

logger = logging.getLogger(__name__)


def kept_if_refused(init):
    """``init`` (a model's ``__init__``) leaving the AnnData as it was when it raises: built
    on an AnnData another model was set up on since, a model takes its own setup back
    (obs["_scvi_batch"], uns["_scvi_manager_uuid"] rewritten) before it checks its arguments,
    and a refused one left the AnnData with its codes and ids in place of the setup the user
    made last, and its registration in scvi-tools' store of the class. A file's name or a
    table passed for the AnnData is refused first, naming what to pass (scvi-tools failed on
    it: "'str' object has no attribute 'uns'")."""

    @functools.wraps(init)
    def kept(self, adata=None, *args, **kwargs):
        check_anndata(adata, call=f"{type(self).__name__}(adata, ...)")
        with unchanged_on_failure(adata, stores=(type(self)._per_instance_manager_store,)):
            return init(self, adata, *args, **kwargs)

    return kept


class DeltaModelMixin(
    AnnDataReadsMixin,  # first: where its methods stood in the lookup order, when defined here
    SummaryMixin,
    AnnDataSetter,
    HistoryMixin,
    Picklable,
    Saving,
    PyroSviTrainMixin,
):
    """Training, saving and loading as every deltavae model does them.

    * ``train`` clears Pyro's global param store first (so models never share parameters),
      validates every epoch (``history["elbo_validation"]``), and warms the KL weight up over
      the first quarter of the epochs unless told otherwise.
    * ``train`` streams minibatches from an AnnData opened ``backed="r"`` and runs on several
      processes or GPUs with ``strategy="ddp", devices=N`` (see :meth:`train`).
    * ``write_to_adata`` on an AnnData opened ``backed="r+"`` also writes the results into
      its file (each model decorates its own with :func:`~deltavae.model._backed.writes_backed`).
    * ``save`` refuses to overwrite unless asked; ``load`` names a corrupted or truncated file.
    * ``load`` and read-outs on new cells read the genes by name: reordered ones are put in the
      training order (with a warning), an AnnData of more genes (the whole of a model trained
      on its highly variable ones) is read on the training genes, missing genes are refused.
    """

    _training_plan_cls = DeltaTrainingPlan
    #: What the model reads (see :func:`~deltavae.model._validation.check_data`).
    _data_kind = "counts"
    _train_runner_cls = DeltaTrainRunner
    _data_splitter_cls = DeltaDataSplitter
    #: ``n_epochs_kl_warmup="auto"`` warms up over this fraction (1 / share) of the epochs.
    _warmup_share: int = 4
    #: The last ``train`` call's divergence, repeated by every read-out; None if it finished.
    diverged_: str | None = None
    #: A query model's reference's divergence (its frozen weights'), said by every read-out.
    reference_diverged_: str | None = None
    #: Epoch (numbered as in ``history``) the last ``train(restore_best=True)`` restored, or None.
    best_epoch_: int | None = None
    #: Arguments of the last ``train`` call that trained, only (``max_epochs``, ``lr``,
    #: ``batch_size`` resolved) and ``seed``, the ``scvi.settings.seed`` it ran under; saved
    #: with the model. None before training (a query model: before its own, on the query).
    train_args_: dict | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # a refused model leaves the AnnData as it was
            cls.__init__ = kept_if_refused(cls.__dict__["__init__"])
        if "train" in cls.__dict__:  # each model's own train records what it was called with
            cls.train = records_train_args(cls.__dict__["train"])
        open_files_for_calls(cls)  # a backed file the user closed stays closed after a call

    @property
    def is_query_model(self) -> bool:
        """Whether the model was built by query mapping (see ``load_query_data``)."""
        return False

    def _after_load(self) -> None:
        """Hook :meth:`load` runs after the parameters; mixins keeping more state extend it."""

    def _training_context(self) -> contextlib.AbstractContextManager:
        """Context :meth:`train` runs the fit in; a mixin may quiet what it expects there."""
        return contextlib.nullcontext()

    def _first_restorable_epoch(self, callbacks: list) -> int:
        """First epoch ``train(restore_best=True)`` may keep (a hook: a model whose training
        changes course mid-run keeps only epochs after that)."""
        return 0

    @classmethod
    def _spots_to_load(cls, adata, attr_dict: dict, state_dict: dict):
        return adata  # models fitted per spot load onto their spots (SpotModelMixin)

    def _finish_init(self, summary: str, init_locals: dict) -> None:
        """The end of every model's ``__init__``: its one-line summary, the deltavae version
        (saved with the model, checked on load) and the arguments ``load`` rebuilds it with
        (``init_locals``: the ``__init__``'s ``locals()``)."""
        self._model_summary_string = summary
        lay_out_contiguously(self.module)  # the same sums built, loaded or from any frame
        note_non_negative(self)  # a change in place of its data is refused at read-outs
        self._record_version()
        self.init_params_ = self._get_init_params(init_locals)

    def _record_version(self) -> None:
        self.deltavae_version_ = _package_version()  # saved with the model, checked on load
        own_fitted_attributes(self)  # the class's "_"-ending defaults, held as load holds them

    @records_train_args
    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        train_size: float = 0.9,
        validation_size: float | None = None,
        batch_size: int | None = 128,
        early_stopping: bool = False,
        lr: float | None = None,
        n_epochs_kl_warmup: int | None | str = "auto",
        plan_kwargs: dict | None = None,
        validate_distributions: bool = False,
        shuffle_block_size: int | None = None,
        restore_best: bool | str = False,
        **trainer_kwargs,
    ):
        """Train the model with stochastic variational inference under Lightning.

        A query model with nothing to learn returns (``load_query_data`` said so; a query
        model loaded from its folder says it here). The
        call's arguments and ``scvi.settings.seed`` replace ``train_args_`` (saved): a model
        one call trained repeats with that seed set before it is built (README, "Seeding").
        Each call starts a fresh optimiser (Adam's moments are neither kept nor saved, as in
        scvi-tools), so a loaded model trains on as the model it was saved from would. A
        further call trains on: ``history`` adds its epochs; ``train_args_``, ``best_epoch_``,
        the split and the convergence verdict are its own; ``trained_categories_`` join all.

        Parameters
        ----------
        max_epochs
            Passes through the training cells; default from the data size, as scvi-tools.
        accelerator, device
            Lightning device selection; ``"auto"`` uses a GPU when one is present.
        train_size
            Fraction of cells that train.
        validation_size
            Fraction of cells that validate (default: the rest); where
            ``datasplitter_kwargs={"external_indexing": [train, validation]}`` lists the cells,
            validation_size is refused.
        batch_size
            Cells per minibatch; ``None``: ``scvi.settings.batch_size`` (128 unless set), as
            SCVI and SCANVI read it.
        early_stopping
            Stop when ``validation_loss`` (what ``restore_best`` ranks: ``elbo_validation``
            plus a model's terms beside the ELBO) has not improved for
            ``early_stopping_patience`` validations (45 if not given; ``early_stopping_min_delta``,
            ``early_stopping_mode`` and ``early_stopping_monitor`` go in ``trainer_kwargs``,
            as in scvi-tools). Only epochs on the full ELBO count, as for ``restore_best``:
            none of the KL warm-up (nor CGMDVAE's before its mixture start) sets the best or
            uses up the patience.
        lr
            Adam learning rate (default 1e-3), also of an optimiser given as
            ``plan_kwargs["optim"]``.
        n_epochs_kl_warmup
            Epochs of linear KL warm-up; ``"auto"`` is a quarter of ``max_epochs`` for a
            model not trained before and none for one trained before (it trains on under the
            full ELBO, not from KL 0 again); ``None`` trains the full ELBO from the start.
        plan_kwargs
            Passed to :class:`deltavae.train.DeltaTrainingPlan`: scvi-tools' names (``lr``,
            ``weight_decay``, ``eps``, ``optimizer``: ``"Custom"`` with ``optimizer_creator``,
            ``reduce_lr_on_plateau``, ``lr_*``, ``max_kl_weight`` ...); another key
            (``on_step`` too), a setting in ``optim_kwargs`` the optimiser does not take, or
            a number no run trains with, is refused before training.
        validate_distributions
            Keep Pyro's distribution-argument checks on during training (slower; for
            debugging a custom module).
        shuffle_block_size
            Shuffle the training cells in blocks of this many neighbours in the file rather
            than one by one: each minibatch then reads ``batch_size / shuffle_block_size``
            contiguous stretches of an on-disk matrix (for zarr stores several times faster;
            block sampling as in scDataset). Single process only; ``None``
            (default) shuffles single cells.
        restore_best
            At the end, load the parameters of the epoch with the lowest ``validation_loss``
            (the objective: ``elbo_validation``, plus CGMDVAE's classifier and alignment
            terms where it has them), or with early stopping on another validation metric
            (``early_stopping_monitor``) the best of that one, among those trained on the
            full ELBO (after the KL warm-up); the epoch is kept in
            ``best_epoch_``. Needs validation cells (``train_size < 1``; ``"auto"``: only when
            there are some); a copy of the parameters is held in memory, nothing is written
            to disk. Each call of ``train`` is a run of its own.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (Lightning). scvi-tools 1.4's
            ``plan_config`` and ``trainer_config`` (a dict, or ``scvi.train.TrainingPlanConfig``
            and ``TrainerConfig``, of which only the settings given count, not the class's
            defaults) are read as ``plan_kwargs`` and as these keywords, those given in the
            call overriding theirs key by key; a ``trainer_config`` setting that is one of
            train's arguments (``max_epochs``, ``early_stopping`` ...) is taken where the call
            leaves it out (scvi-tools drops it even then). ``strategy="ddp"`` with
            ``devices=N`` trains on N processes (CPU, gloo) or N GPUs (nccl), each process
            reading its own share of the cells (``devices=N`` alone, N > 1, means the same);
            Lightning's DDP averages the gradients: a step reads N x ``batch_size`` cells
            (``batch_size`` is per process), as one process with N x ``batch_size`` would (not
            one process's run of the same seed); logged ELBOs are averaged over processes.
            The processes are forked: this works from scripts, notebooks and tests (see
            ``deltavae.train._distributed``); so does ``early_stopping`` (scvi-tools turns
            it off under DDP; deltavae adds it, and any process's stop stops them all).
            Forking a process whose thread pools already ran (a kernel that trained before)
            can hang in the children: start DDP early in a fresh kernel, or from a script.

        Notes
        -----
        Larger-than-memory data: open the .h5ad file with ``anndata.read_h5ad(path,
        backed="r")`` (sparse CSR or dense X; anndata holds an .h5ad's layers in memory), set
        it up and train as usual. Each
        minibatch is read from disk by scvi-tools' data loader; memory holds the model, one
        minibatch per process, and ``obs``. Minibatches list their cells in file order, so a
        backed and an in-memory run with the same seed give the same model. A file opened
        ``"r+"`` is refused. A zarr store (sparse ``X``) streams the same way once opened with
        :func:`deltavae.read_lazy`, which also opens .h5ad files backed.

        Examples
        --------
        >>> vae.train(max_epochs=50, early_stopping=True)  # doctest: +SKIP
        >>> vae.history["elbo_validation"].tail()  # doctest: +SKIP
        >>> adata = anndata.read_h5ad("atlas.h5ad", backed="r")  # doctest: +SKIP
        >>> dv.model.ZINBVAE.setup_anndata(adata)  # doctest: +SKIP
        >>> dv.model.ZINBVAE(adata).train(strategy="ddp", devices=4)  # doctest: +SKIP
        """
        check_flags(validate_distributions=validate_distributions)  # torch: a bare ValueError
        args = resolved_arguments(
            self, max_epochs, train_size, validation_size, batch_size, early_stopping, lr,
            n_epochs_kl_warmup, plan_kwargs, restore_best, accelerator, trainer_kwargs,
        )  # fmt: skip
        n_train, validates = validation_split(
            self.adata.n_obs, train_size, validation_size, trainer_kwargs
        )
        epochs_before = epochs_trained(self)
        check_data_to_train(self)
        device, distributed = devices_and_strategy(self, accelerator, device, trainer_kwargs)
        add_splitter_arguments(
            self, args.batch_size, shuffle_block_size, n_train, distributed, device, trainer_kwargs
        )
        # Early stopping and restore_best ("auto": with validation cells) on the same epochs.
        best = self._stopping_callbacks(
            trainer_kwargs, early_stopping, restore_best and validates, args.plan_kwargs
        )
        self._prepare_module()
        out = self._fit(
            args, train_size, validation_size, accelerator, device, distributed,
            validate_distributions, trainer_kwargs,
        )  # fmt: skip
        record_run(self, epochs_before, best, restore_best, args, early_stopping)
        return out

    def _stopping_callbacks(
        self, trainer_kwargs: dict, early_stopping: bool, restore_best, plan_kwargs: dict
    ):
        """Early stopping and ``restore_best`` into ``trainer_kwargs["callbacks"]``, from the
        first epoch that may be kept or stop the run (after CGMDVAE's mixture start); the
        restore_best callback, or None."""
        trainer_kwargs["callbacks"] = callbacks = callback_list(trainer_kwargs.get("callbacks"))
        first = self._first_restorable_epoch(callbacks)
        return add_stopping(callbacks, trainer_kwargs, early_stopping, restore_best, first,
                            plan_kwargs.get("max_kl_weight", 1.0))  # fmt: skip

    def _prepare_module(self) -> None:
        """The module's own Pyro parameters cleared from the global store, and its training
        mode set."""
        self.module.clear_own_params()
        if not self.is_query_model:
            # Lightning keeps the modules' modes at the start of fit: a model trained before
            # (or loaded) is in eval mode and would train on without dropout and with frozen
            # BatchNorm statistics. A query model keeps eval mode on purpose (load_query_data).
            self.module.train()

    def _fit(
        self, args, train_size, validation_size, accelerator, device, distributed: bool,
        validate_distributions: bool, trainer_kwargs: dict,
    ):  # fmt: skip
        """scvi-tools' training (Pyro's SVI under Lightning) in the contexts it needs; the
        module in eval mode after it, whatever happened."""
        # Pyro's argument checks cost ~15% of a step; our inputs are checked once, up front.
        # Under DDP, rank 0 hands the history to this process through a file; scvi-tools would
        # put it under the working directory.
        history_dir = (
            tempfile.TemporaryDirectory(prefix="deltavae_ddp_")
            if distributed and "log_save_dir" not in trainer_kwargs
            else contextlib.nullcontext()
        )
        with (
            pyro.validation_enabled(validate_distributions),
            self._training_context(),
            workers_stopped(distributed),
            history_dir as log_dir,
        ):
            if log_dir is not None:
                trainer_kwargs["log_save_dir"] = log_dir
            try:
                return super().train(
                    max_epochs=args.max_epochs,
                    accelerator=accelerator,
                    device=device,
                    train_size=train_size,
                    validation_size=validation_size,
                    batch_size=args.batch_size,
                    early_stopping=False,  # added by _stopping_callbacks
                    lr=args.lr,
                    plan_kwargs=args.plan_kwargs,
                    **trainer_kwargs,
                )
            except TrainingDivergedError as err:
                record_divergence(self, err)
                raise
            finally:  # also after any error (a user's callback): read-outs run in eval mode
                self.module.eval()

    def _auto_warmup(self, max_epochs: int, plan_kwargs: dict) -> int | None:
        """``n_epochs_kl_warmup="auto"``: ``plan_kwargs``' own if given (scvi-tools' way); none
        for a model trained before or warmed up by steps; else ``1 / _warmup_share`` of them."""
        if "n_epochs_kl_warmup" in plan_kwargs:
            return plan_kwargs["n_epochs_kl_warmup"]
        if self.is_trained_ or "n_steps_kl_warmup" in plan_kwargs:
            return None
        return max(1, max_epochs // self._warmup_share)

    def _check_if_trained(self, warn: bool = True, message: str | None = None) -> None:
        """scvi-tools' check before every read-out, which also says when the last training
        diverged (or a query model's reference's): the parameters kept are the last finite
        ones, maybe far from a fit. An untrained query model is told how to train: scvi-tools'
        "untrained model" read as if the reference itself were."""
        if message is None and self.is_query_model and not self.is_trained_:
            message = (
                f"This {type(self).__name__} query model has not trained: load_query_data "
                "starts its new categories' weights untrained. Train the query model first, "
                "query_model.train(max_epochs=50) as in load_query_data's example, then read "
                "it out."
            )
        super()._check_if_trained(warn, *([message] if message else []))
        warn_if_diverged(self)  # a query model's reference's too (its weights, frozen)

    def _make_data_loader(self, *args, **kwargs):
        """scvi-tools' inference loader, with every minibatch moved to the module's device."""
        kwargs = loader_arguments(self, args, kwargs)  # indices checked, read in their order
        if not kwargs.get("shuffle"):
            # torch's DataLoader draws each iteration's base seed from the global generator:
            # a read-out moved the user's torch.manual_seed stream (the next training, or their
            # own draws, then differed for having read a model out). Its own generator instead.
            kwargs.setdefault("generator", torch.Generator())
        return _OnDevice(super()._make_data_loader(**kwargs), self.module)
