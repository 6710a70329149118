"""Behaviour every deltavae model class shares: training defaults, safe save and load."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pyro
from anndata import AnnData
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import PyroSviTrainMixin
from scvi.model.base._save_load import _load_saved_files

from ..train import DeltaTrainingPlan

logger = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        return version("deltavae")
    except PackageNotFoundError:
        return "0.0.0"


class DeltaModelMixin(PyroSviTrainMixin):
    """Training, saving and loading as every deltavae model does them.

    * ``train`` clears Pyro's global param store first (so models never share parameters),
      validates every epoch (``history["elbo_validation"]``), and warms the KL weight up over
      the first quarter of the epochs unless told otherwise.
    * ``save`` refuses to overwrite unless asked; ``load`` refuses genes that differ from the
      training genes and says so when a file is corrupted or truncated.
    """

    _training_plan_cls = DeltaTrainingPlan

    def _record_version(self) -> None:
        # Saved with the model (attributes ending in "_" are), checked on load.
        self.deltavae_version_ = _package_version()

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        train_size: float = 0.9,
        validation_size: float | None = None,
        batch_size: int = 128,
        early_stopping: bool = False,
        lr: float | None = None,
        n_epochs_kl_warmup: int | None | str = "auto",
        plan_kwargs: dict | None = None,
        validate_distributions: bool = False,
        **trainer_kwargs,
    ):
        """Train the model with stochastic variational inference under Lightning.

        Parameters
        ----------
        max_epochs
            Passes through the training cells; default from the data size, as scvi-tools.
        accelerator, device
            Lightning device selection; ``"auto"`` uses a GPU when one is present.
        train_size, validation_size
            Fractions of cells used for training and for the validation ELBO.
        batch_size
            Cells per minibatch.
        early_stopping
            Stop when ``elbo_validation`` stops improving (``early_stopping_patience``,
            ``early_stopping_min_delta`` go in ``trainer_kwargs``).
        lr
            Adam learning rate (default 1e-3).
        n_epochs_kl_warmup
            Epochs of linear KL warm-up; ``"auto"`` is a quarter of ``max_epochs``, ``None``
            trains the full ELBO from the start.
        plan_kwargs
            Passed to :class:`deltavae.train.DeltaTrainingPlan`.
        validate_distributions
            Keep Pyro's distribution-argument checks on during training (slower; for
            debugging a custom module).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (Lightning).

        Examples
        --------
        >>> vae.train(max_epochs=50, early_stopping=True)  # doctest: +SKIP
        >>> vae.history["elbo_validation"].tail()  # doctest: +SKIP
        """
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs, epochs_cap=400)
        if n_epochs_kl_warmup == "auto":
            n_epochs_kl_warmup = max(1, max_epochs // 4)
        plan_kwargs = {"n_epochs_kl_warmup": n_epochs_kl_warmup, **(plan_kwargs or {})}
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        pyro.clear_param_store()
        # Pyro's argument checks cost ~15% of a step; our inputs are checked once, up front.
        with pyro.validation_enabled(validate_distributions):
            out = super().train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                device=device,
                train_size=train_size,
                validation_size=validation_size,
                batch_size=batch_size,
                early_stopping=early_stopping,
                lr=lr,
                plan_kwargs=plan_kwargs,
                **trainer_kwargs,
            )
        self.module.eval()
        return out

    def _resolve_adata(self, adata: AnnData | None) -> AnnData:
        adata = self.adata if adata is None else adata
        if adata is None:
            raise ValueError("No AnnData given and the model holds none.")
        return adata

    def save(self, dir_path: str, overwrite: bool = False, save_anndata: bool = False, **kwargs):
        """Save the model (parameters, setup, training history) to ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to write. It must not exist unless ``overwrite=True``.
        overwrite
            Replace an existing directory.
        save_anndata
            Also write the AnnData the model was set up with.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.

        Examples
        --------
        >>> vae.save("pbmc_vae/", overwrite=True)  # doctest: +SKIP
        """
        if os.path.exists(dir_path) and not overwrite:
            raise ValueError(
                f"Save path {dir_path!r} already exists; pass overwrite=True to replace it."
            )
        super().save(dir_path, overwrite=overwrite, save_anndata=save_anndata, **kwargs)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs):
        """Load a saved model, checking the file and the genes first.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            AnnData with the same genes, in the same order, as the training data. ``None``
            uses the AnnData saved with the model.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ...).

        Examples
        --------
        >>> vae = dv.model.ZINBVAE.load("pbmc_vae/", adata)  # doctest: +SKIP
        """
        if not os.path.isdir(dir_path):
            raise FileNotFoundError(f"No saved model at {dir_path!r} (expected a directory).")
        prefix = kwargs.get("prefix")
        try:
            attr_dict, var_names, _, _ = _load_saved_files(
                dir_path, False, map_location="cpu", prefix=prefix
            )
        except (
            OSError,
            RuntimeError,
            EOFError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
            KeyError,
        ) as e:
            raise ValueError(
                f"The model file in {dir_path!r} is corrupted or truncated and cannot be read "
                f"({type(e).__name__}: {e})."
            ) from e
        model_name = attr_dict["registry_"].get("model_name")
        if model_name is not None and model_name != cls.__name__:
            raise ValueError(
                f"{dir_path!r} holds a {model_name} model; load it with that class, not "
                f"{cls.__name__}."
            )
        saved_version = attr_dict.get("deltavae_version_")
        if saved_version is None or saved_version.split(".")[0] != _package_version().split(".")[0]:
            raise ValueError(
                f"{dir_path!r} was saved by deltavae {saved_version}, which this version "
                f"({_package_version()}) cannot read; retrain or load it with that version."
            )
        if adata is not None and not np.array_equal(np.asarray(adata.var_names), var_names):
            missing = len(set(var_names) - set(adata.var_names))
            raise ValueError(
                f"The AnnData's genes differ from the {len(var_names)} genes the model was "
                f"trained on ({missing} missing, {adata.n_vars} given); subset and order it "
                "with adata[:, saved_gene_names] first."
            )
        return super().load(dir_path, adata=adata, **kwargs)
