"""ZINBVAE: scVI's zero-inflated negative-binomial VAE, as a Pyro program on scvi-tools."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Literal

import numpy as np
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import (
    CategoricalObsField,
    LayerField,
    NumericalObsField,
)
from scvi.model.base import (
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)

from .._checks import key_list
from .._docs import doc_params, doc_write_keyed
from .._unchanged_on_failure import unchanged_on_failure
from ..module import ZINBVAEModule
from ..train._data import DeltaDataManager
from ._backed import writes_backed
from ._base import DeltaModelMixin
from ._de import CheckedExpressionMixin
from ._host_results import HostResultsMixin
from ._init_keywords import keyword_hints, setup_hints
from ._labels import ConditionsByName, small_categories_named
from ._library_stats import batch_library_prior
from ._load_state import saved_state
from ._obs_checks import check_obs_keys, check_size_factors
from ._perturbation import PerturbationMixin
from ._query import QueryMappingMixin
from ._readout_docs import OBSERVED_LIBRARY, with_note
from ._scvi_glue import scvi_init_names
from ._validation import (
    check_data,
    check_key_added,
    check_model_arguments,
    check_setup_target,
    warn_user,
)

logger = logging.getLogger(__name__)


class _NoLatentLibrary(ValueError, RuntimeError):
    """A latent library size asked of a model that reads the observed one: a ValueError, and
    a RuntimeError as scvi-tools' own refusal is, which code written for SCVI catches."""


class ZINBVAE(
    QueryMappingMixin,
    PerturbationMixin,
    DeltaModelMixin,
    CheckedExpressionMixin,
    HostResultsMixin,
    VAEMixin,
    BaseModelClass,
):
    """Zero-inflated negative-binomial VAE for raw single-cell counts (scVI's model, in Pyro).

    Latents, normalized expression, differential expression and likelihood parameters come
    from scvi-tools' mixins (``get_latent_representation``, ``get_normalized_expression``,
    ``differential_expression``, ``get_reconstruction_error`` ...).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Dimension of the latent space.
    n_hidden
        Units per hidden layer.
    n_layers
        Hidden layers in the encoder and the decoder.
    dropout_rate
        Dropout in the encoder.
    likelihood
        ``"zinb"`` (zero-inflated negative binomial) or ``"nb"``.
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: one per gene and batch.
    use_observed_lib_size
        Use each cell's observed library size (or registered size factor); ``False`` learns a
        latent library size with a per-batch log-normal prior. With a ``size_factor_key``
        registered, the size factor is the library, as in scVI: ``False`` is ignored (with a
        warning).
    encode_covariates
        Give the batch and categorical covariates to the encoder too (they always reach the
        decoder); scVI's default is ``False``.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.pbmc3k()
    >>> dv.model.ZINBVAE.setup_anndata(adata)
    >>> vae = dv.model.ZINBVAE(adata, n_latent=10)
    >>> vae.train(max_epochs=100)  # doctest: +SKIP
    >>> vae.write_to_adata()  # doctest: +SKIP
    ['obsm/X_zinbvae']
    """

    _module_cls = ZINBVAEModule
    latent_key = "X_zinbvae"

    @scvi_init_names
    @keyword_hints
    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        likelihood: Literal["zinb", "nb"] = "zinb",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        use_observed_lib_size: bool = True,
        encode_covariates: bool = True,
    ):
        super().__init__(adata)
        if likelihood not in ("zinb", "nb"):
            raise ValueError(f"likelihood must be 'zinb' or 'nb', got {likelihood!r}.")
        check_model_arguments(
            {"n_latent": n_latent, "n_hidden": n_hidden, "n_layers": n_layers},
            dropout_rate=dropout_rate,
            flags={
                "use_observed_lib_size": use_observed_lib_size,
                "encode_covariates": encode_covariates,
            },
        )
        n_batch = self.summary_stats.n_batch
        cat_registry = self.adata_manager.data_registry.get(REGISTRY_KEYS.CAT_COVS_KEY)
        n_cats_per_cov = (
            self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key
            if cat_registry is not None
            else None
        )
        size_factor_key = self.registry_["setup_args"]["size_factor_key"]
        uses_size_factor = size_factor_key is not None
        if uses_size_factor and not use_observed_lib_size:
            warn_user(
                f"use_observed_lib_size=False is ignored: setup_anndata registered "
                f"size_factor_key={size_factor_key!r}, which is each cell's library (as in "
                "scVI). Set up without size_factor_key to learn a latent library size."
            )
        library_log_means = library_log_vars = None
        saved = saved_state(self)  # a load: its buffers replace a pass over the cells
        if not use_observed_lib_size and not uses_size_factor and saved is not None:
            library_log_means, library_log_vars = (
                saved["library_log_means"],
                saved["library_log_vars"],
            )
        elif not use_observed_lib_size and not uses_size_factor:
            library_log_means, library_log_vars = batch_library_prior(self.adata_manager, n_batch)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=n_batch,
            n_cats_per_cov=n_cats_per_cov,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            likelihood=likelihood,
            use_observed_lib_size=use_observed_lib_size or uses_size_factor,
            use_size_factor_key=uses_size_factor,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            encode_covariates=encode_covariates,
        )
        summary = (
            f"ZINBVAE: n_latent {n_latent}, n_hidden {n_hidden}, n_layers {n_layers}, "
            f"likelihood {likelihood}, dispersion {dispersion}, batches {n_batch}"
        )
        self._finish_init(summary, locals())

    @classmethod
    @setup_hints("ZINBVAE")
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: str | list[str] | None = None,
        size_factor_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register the AnnData fields the model reads; the data are checked first.

        Parameters
        ----------
        adata
            AnnData with raw counts (cells x genes).
        layer
            Layer with the raw counts; ``None`` for ``adata.X``.
        batch_key
            obs column with the batch (or condition) of each cell.
        categorical_covariate_keys
            obs columns with further categorical covariates (one column may be given as a
            string).
        size_factor_key
            obs column with a size factor per cell (linear scale, e.g. of mean 1), used instead
            of the observed library size; as in scVI, the normalized expression is then not
            constrained to sum to 1.

        Examples
        --------
        >>> import deltavae as dv
        >>> adata = dv.datasets.kang_ifnb()
        >>> dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
        """
        # A tuple, pandas Index or numpy array as a list: scvi-tools read a tuple as one key.
        categorical_covariate_keys = key_list(categorical_covariate_keys)
        check_setup_target(adata, kwargs, cls.__name__)
        check_obs_keys(
            adata,
            {"batch_key": batch_key, "categorical_covariate_keys": categorical_covariate_keys},
        )
        if batch_key is not None and batch_key in (categorical_covariate_keys or []):
            # Decoded under another batch (transform_batch, latent_shift), the covariate's copy
            # would keep each cell's own.
            raise ValueError(
                f"batch_key={batch_key!r} is also in categorical_covariate_keys; name it once, "
                "as batch_key."
            )
        check_size_factors(adata, size_factor_key)
        check_data(adata, layer, kind="counts")
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            ConditionsByName(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        ]
        adata_manager = DeltaDataManager(fields=fields, setup_method_args=setup_method_args)
        columns = [k for k in (batch_key, *(categorical_covariate_keys or [])) if k]
        named = small_categories_named(adata, columns, query="source_registry" in kwargs)
        with unchanged_on_failure(adata), named:  # its warning made an error: as it was
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @functools.wraps(CheckedExpressionMixin.get_latent_library_size)
    def get_latent_library_size(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        call = inspect.signature(RNASeqMixin.get_latent_library_size).bind(self, *args, **kwargs)
        if call.arguments.get("give_mean", True) and self.module.use_observed_lib_size:
            # scvi-tools' RuntimeError spoke of "the module" and its posterior.
            raise _NoLatentLibrary(
                "This ZINBVAE uses each cell's observed library size (use_observed_lib_size="
                "True, the default, or a size_factor_key), so it learns no library size to "
                "give the mean of: read it as adata's total counts (np.asarray(adata.X.sum(1))"
                ".ravel(), or of the counts layer), or pass give_mean=False for the library "
                "the model reads. To learn a latent library size, build "
                "ZINBVAE(adata, use_observed_lib_size=False)."
            )
        return super().get_latent_library_size(*args, **kwargs)

    get_latent_library_size.__doc__ = with_note(get_latent_library_size.__doc__, OBSERVED_LIBRARY)

    @writes_backed
    @doc_params(write=doc_write_keyed)
    def write_to_adata(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        key_added: str = "zinbvae",
    ) -> list[str]:
        """Write the posterior mean latent to ``adata.obsm["X_zinbvae"]``.

        {write}

        Examples
        --------
        >>> vae.write_to_adata()  # doctest: +SKIP
        ['obsm/X_zinbvae']
        >>> vae_seed1.write_to_adata(adata, key_added="zinbvae_seed1")  # doctest: +SKIP
        ['obsm/X_zinbvae_seed1']
        """
        key = f"X_{check_key_added(key_added, embedding=True)}"
        adata = self._write_target(adata)
        latent = self.get_latent_representation(adata, batch_size=batch_size)
        adata.obsm[key] = np.asarray(latent, dtype=np.float32)
        return [f"obsm/{key}"]
