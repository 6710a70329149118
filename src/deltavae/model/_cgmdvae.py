"""CGMDVAE (c*GMΔVÆ): clustering, conditions and generation with a mixture Dirichlet VAE."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
)
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import (
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)
from torch.distributions import Categorical, Dirichlet

from ..module import CGMDVAEModule
from ..module._cgmdvae import COUNT_LIKELIHOODS, LIKELIHOODS
from ..train import MixtureInitialization
from ..train._mixture_init import check_method as check_mixture_init
from ._base import DeltaModelMixin, _OnDevice
from ._transfer import QueryMappingMixin
from ._validation import check_data, check_model_arguments, check_obs_keys, warn_user

logger = logging.getLogger(__name__)

_CAT = REGISTRY_KEYS.CAT_COVS_KEY
_DEFAULT_UNLABELED = "Unknown"


class CGMDVAE(DeltaModelMixin, RNASeqMixin, VAEMixin, QueryMappingMixin, BaseModelClass):
    """Conditional Gaussian-mixture Dirichlet VAE (c*GMΔVÆ).

    p(x | z, c) p(z | w, y, c) p(y | d) p(d) p(w), with p(w) = N(0, I), p(d) = Dir(alpha),
    p(y | d) = Cat(d) and p(z | w, y, c) = N(mu_y(w, c), sigma_y(w, c)); inference
    q(z | x, c) q(w | x, c) q(y | z, c) q(d | z, c). It clusters cells (``y``), corrects for
    conditions (``c``, given to every network) and generates cells per cluster and condition.
    Unsupervised, supervised (every cell labelled) and semi-supervised (some cells carry
    ``unlabeled_category``) in one class.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_clusters
        Number of mixture components K; default the number of labels, or 10 without labels.
        It may exceed the true number of groups: empty clusters are reported.
    n_latent
        Dimensions of z, the cell state. ``"auto"``: 10, or one dimension per cluster when
        ``n_clusters`` exceeds 10, as more room lets more components sit apart
        (benchmarks/README.md, Numbers behind the defaults, D1).
    n_latent_w
        Dimensions of w, the continuous variation within each mixture component.
    likelihood
        ``"zinb"`` or ``"nb"`` for raw counts (with the observed library size), ``"normal"``
        for real values, ``"bernoulli"`` for values in [0, 1] (e.g. MNIST pixels).
    n_hidden
        Units per hidden layer, in every network.
    n_layers
        Hidden layers of the encoder and of the decoder.
    dropout_rate
        Dropout rate of the encoder's hidden layers.
    dirichlet_alpha
        Concentration of p(d); below 1 favours few clusters per cell.
    classifier_weight
        Weight of the classification term for labelled cells.
    condition_in_prior
        Let the mixture components depend on the condition, p(z | w, y, c) (the default).
        ``False`` uses p(z | w, y): the components are shared by all conditions, which then act
        through the encoder and decoder only.
    prior_covariance
        ``"full"`` (the default): each component learns a correlation between the z
        dimensions, shared across w and c, so it can lie along any direction of z; its scales
        still depend on (w, c). ``"diag"``: axis-aligned components, as in the GMVAE paper.
        Full components cluster better (benchmarks/README.md, Numbers behind the defaults, D2).

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.kang_ifnb()
    >>> dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    >>> g = dv.model.CGMDVAE(adata, n_clusters=8)
    >>> g.train(max_epochs=200)  # doctest: +SKIP
    >>> g.write_to_adata()  # doctest: +SKIP
    """

    _module_cls = CGMDVAEModule

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int | str = "auto",
        n_latent_w: int = 5,
        likelihood: str = "zinb",
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dirichlet_alpha: float = 1.0,
        classifier_weight: float = 50.0,
        condition_in_prior: bool = True,
        prior_covariance: str = "full",
    ):
        super().__init__(adata)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
        check_model_arguments(
            {"n_latent_w": n_latent_w, "n_hidden": n_hidden, "n_layers": n_layers},
            dropout_rate=dropout_rate,
            positive={"dirichlet_alpha": dirichlet_alpha},
            non_negative={"classifier_weight": classifier_weight},
        )
        setup = self.registry_["setup_args"]
        if likelihood in COUNT_LIKELIHOODS:
            check_data(adata, setup["layer"], kind="counts")
        elif likelihood == "bernoulli":
            check_data(adata, setup["layer"], kind="binary")
        labels = self.label_names
        n_clusters = n_clusters if n_clusters is not None else (len(labels) or 10)
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
            raise ValueError(f"n_clusters must be an integer, got {n_clusters!r}.")
        if n_clusters < 2:
            raise ValueError(f"n_clusters must be at least 2, got {n_clusters}.")

        if n_clusters < len(labels):
            raise ValueError(
                f"n_clusters={n_clusters} is smaller than the {len(labels)} labels in "
                f"{setup['labels_key']!r} ({', '.join(labels)}); every label needs a cluster."
            )
        if n_latent == "auto":
            n_latent = max(10, n_clusters)
        elif not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
            raise ValueError(f"n_latent must be a positive integer or 'auto', got {n_latent!r}.")
        label_to_cluster = None
        if labels:
            # Label codes 0..L-1 are the labels (scvi-tools puts the unlabelled code last).
            label_to_cluster = [*range(len(labels)), -1]
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_clusters=n_clusters,
            n_cats_per_cov=self._n_cats_per_cov(),
            n_latent=n_latent,
            n_latent_w=n_latent_w,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            likelihood=likelihood,
            dirichlet_alpha=dirichlet_alpha,
            classifier_weight=classifier_weight,
            label_to_cluster=label_to_cluster,
            condition_in_prior=condition_in_prior,
            prior_covariance=prior_covariance,
        )
        self._model_summary_string = (
            f"CGMDVAE: {n_clusters} clusters, n_latent {n_latent}, n_latent_w {n_latent_w}, "
            f"likelihood {likelihood}, conditions {self.condition_keys or 'none'}, "
            f"labels {setup['labels_key'] or 'none'}"
        )
        self._record_version()
        self.init_params_ = self._get_init_params(locals())

    # ----------------------------------------------------------------- setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        condition_key: str | list[str] | None = None,
        labels_key: str | None = None,
        unlabeled_category: str | None = None,
        **kwargs,
    ) -> None:
        """Register data, conditions and (optional) labels; the data are checked first.

        Parameters
        ----------
        adata
            AnnData, cells x features.
        layer
            Layer with the data; ``None`` for ``adata.X``.
        condition_key
            obs column(s) with categorical conditions (stimulation, batch, donor ...).
        labels_key
            obs column with known cell labels: every cell labelled is supervised; cells whose
            label is ``unlabeled_category`` make it semi-supervised.
        unlabeled_category
            The label of unlabelled cells (default ``"Unknown"``). Passing it explicitly asks
            for semi-supervised training, so it must occur in the labels column.

        Examples
        --------
        >>> dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")  # doctest: +SKIP
        """
        conditions = [condition_key] if isinstance(condition_key, str) else condition_key
        # A query (load_query_data) may lack the labels or have none: scvi-tools fills them.
        query = "source_registry" in kwargs
        labels_checked = None if query and labels_key not in adata.obs else labels_key
        check_obs_keys(adata, {"condition_key": conditions, "labels_key": labels_checked})
        check_data(adata, layer, kind="real")
        if not query and labels_key is not None and unlabeled_category is not None:
            if not (adata.obs[labels_key].astype(str) == str(unlabeled_category)).any():
                raise ValueError(
                    f"unlabeled_category={unlabeled_category!r} does not occur in "
                    f"adata.obs[{labels_key!r}], so no cell is unlabelled. Mark unlabelled cells "
                    "with it, or omit it for supervised training."
                )
        if not query and labels_key is not None:
            n_labels = adata.obs[labels_key].astype(str).nunique()
            unlabelled = unlabeled_category or _DEFAULT_UNLABELED
            if n_labels - int((adata.obs[labels_key].astype(str) == unlabelled).any()) < 1:
                raise ValueError(f"labels_key={labels_key!r} holds no labelled cell.")
        setup_method_args = cls._get_setup_method_args(**locals())
        if labels_key is None:
            labels_field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        else:
            labels_field = LabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category or _DEFAULT_UNLABELED
            )
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalJointObsField(_CAT, conditions),
            labels_field,
        ]
        source = kwargs.get("source_registry")
        if source is None or REGISTRY_KEYS.BATCH_KEY in source["field_registries"]:
            # scvi-tools' expression API (transform_batch, differential expression, ...) reads
            # the batch field: it mirrors the first condition, which the networks read from
            # the condition field. Models saved before it existed load without it.
            fields.append(
                CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, conditions[0] if conditions else None)
            )
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(
        self,
        max_epochs: int | None = None,
        mixture_init_epoch: int | str | None = "auto",
        n_epochs_kl_warmup: int | str | None = "auto",
        mixture_init: str = "umap",
        restore_best: bool = True,
        **kwargs,
    ):
        """Train the model; see :meth:`deltavae.model.ZINBVAE.train` for the common arguments.

        Parameters
        ----------
        max_epochs
            Passes through the training cells.
        mixture_init_epoch
            Epoch at which the mixture components are placed on clusters of z (each
            condition's mean removed, so clusters are shared by the conditions) and on the
            labelled cells' means. ``"auto"``: a quarter of the epochs for a model not
            trained before; ``None`` skips it. The longer z trains as a plain (weakly
            regularised) autoencoder first, the better its groups separate
            (benchmarks/README.md, Numbers behind the defaults, D3).
        n_epochs_kl_warmup
            Epochs over which the KL weight rises to 1; ``"auto"``: half of the epochs, so
            the mixture starts while z is still informative.
        mixture_init
            How z is clustered at ``mixture_init_epoch``: ``"umap"`` (default) runs k-means
            on a UMAP embedding of z, which keeps curved or touching groups whole;
            ``"kmeans"`` runs it on z directly, which is faster (no UMAP). See
            :class:`deltavae.train.MixtureInitialization` and benchmarks/README.md, Numbers
            behind the defaults, D4.
        restore_best
            Keep the parameters of the epoch with the best validation ELBO among the epochs
            after the KL warm-up and the mixture start (``best_epoch_`` says which); the last
            epoch's with ``False`` or without validation cells (``train_size=1``).
        **kwargs
            Passed to :meth:`deltavae.model.ZINBVAE.train` (``lr``, ``batch_size``,
            ``early_stopping``, Lightning trainer arguments...).

        Examples
        --------
        >>> g.train(max_epochs=200, early_stopping=True)  # doctest: +SKIP
        """
        check_mixture_init(mixture_init, "mixture_init")
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs, epochs_cap=400)
        if self.is_query_model and mixture_init_epoch not in ("auto", None):
            raise ValueError(
                "A query model keeps the reference's mixture: mixture_init_epoch=None."
            )
        if mixture_init_epoch == "auto":
            trained = self.is_trained_ or self.is_query_model
            mixture_init_epoch = None if trained else max(1, max_epochs // 4)
        if n_epochs_kl_warmup == "auto":
            n_epochs_kl_warmup = max(1, max_epochs // 2)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if mixture_init_epoch is not None and mixture_init_epoch < max_epochs:
            train_size = kwargs.get("train_size", 0.9)
            n_train = int(np.ceil(train_size * self.adata.n_obs)) if 0 < train_size <= 1 else 0
            if 0 < n_train < self.module.n_clusters:
                raise ValueError(
                    f"The mixture start clusters the training cells into "
                    f"{self.module.n_clusters} clusters, but only {n_train} cells train "
                    f"(train_size={train_size} of {self.adata.n_obs}). Use fewer clusters, "
                    "train_size=1.0, or skip the start with mixture_init_epoch=None."
                )
            callbacks.append(
                MixtureInitialization(
                    mixture_init_epoch, seed=settings.seed or 0, method=mixture_init
                )
            )
        out = super().train(
            max_epochs=max_epochs,
            callbacks=callbacks,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            restore_best=restore_best,
            _restore_best_start=0 if mixture_init_epoch is None else mixture_init_epoch + 1,
            **kwargs,
        )
        self._warn_if_clusters_empty(max_epochs)
        return out

    def _warn_if_clusters_empty(self, max_epochs: int) -> None:
        """Say so when training ends with clusters no cell is assigned to."""
        sizes = np.bincount(self.predict_clusters(), minlength=self.module.n_clusters)
        empty = [name for name, size in zip(self.cluster_names, sizes, strict=True) if not size]
        if not empty:
            return
        k = self.module.n_clusters
        warn_user(
            f"{len(empty)} of {k} clusters are empty after training ({', '.join(empty[:10])}"
            f"{', ...' if len(empty) > 10 else ''}). If the data hold {k} groups, training "
            f"was too short ({max_epochs} epochs): train longer (max_epochs=None chooses the "
            f"number from the data size). If they hold fewer, n_clusters={k - len(empty)} "
            "fits them."
        )

    @property
    def _data_kind(self) -> str:
        likelihood = self.module.likelihood
        return (
            "counts"
            if likelihood in COUNT_LIKELIHOODS
            else ("binary" if likelihood == "bernoulli" else "real")
        )

    def _needs_counts(self, what: str) -> None:
        if self.module.likelihood not in COUNT_LIKELIHOODS:
            raise NotImplementedError(
                f"{what} reads expression frequencies of a count likelihood ('zinb' or 'nb'); "
                f"this model's likelihood is {self.module.likelihood!r}, whose decoded values "
                "are the data themselves. Use translate(...).X or sample(...).layers"
                "['expected'] for the model's expectation."
            )

    @functools.wraps(RNASeqMixin.get_normalized_expression)
    def get_normalized_expression(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._needs_counts("get_normalized_expression")
        return super().get_normalized_expression(*args, **kwargs)

    @functools.wraps(RNASeqMixin.differential_expression)
    def differential_expression(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._needs_counts("differential_expression")
        return super().differential_expression(*args, **kwargs)

    @functools.wraps(RNASeqMixin.get_likelihood_parameters)
    def get_likelihood_parameters(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._needs_counts("get_likelihood_parameters")
        return super().get_likelihood_parameters(*args, **kwargs)

    def get_importance_weights(self, *args, **kwargs):
        """Not offered: scvi-tools' importance weights assume a N(0, I) prior on z.

        CGMDVAE's prior is a mixture over clusters that depends on w and the condition; use
        ``differential_expression(weights="uniform")`` (the default).
        """
        raise NotImplementedError(
            "Importance-weighted differential expression assumes a N(0, I) prior on z; "
            "CGMDVAE's prior is a mixture over clusters and conditions. Use "
            "differential_expression(weights='uniform') (the default)."
        )

    def _get_transform_batch_gen_kwargs(self, batch):
        """scvi-tools' ``transform_batch`` is a category of the first condition: its code."""
        if batch is None or not self.condition_keys:
            return {"transform_batch": None}
        names = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        known = [str(v) for v in self._cat_state().mappings[self.condition_keys[0]]]
        return {"transform_batch": known.index(str(names[int(batch)]))}

    # ----------------------------------------------------------------- registry helpers
    @property
    def condition_keys(self) -> list[str]:
        """obs columns registered as conditions."""
        if self.registry_["setup_args"]["condition_key"] is None:
            return []
        return list(self._cat_state().field_keys)

    def _cat_state(self):
        return self.adata_manager.get_state_registry(_CAT)

    def _n_cats_per_cov(self) -> list[int]:
        if _CAT not in self.adata_manager.data_registry:
            return []
        return list(self._cat_state().n_cats_per_key)

    @property
    def label_names(self) -> list[str]:
        """Known labels (empty when unsupervised)."""
        if self.registry_["setup_args"]["labels_key"] is None:
            return []
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        return [str(v) for v in mapping.categorical_mapping[:-1]]

    @property
    def cluster_names(self) -> list[str]:
        """Name of every cluster: the labels first, then ``novel_j`` (or ``"0"`` to ``"K-1"``)."""
        labels = self.label_names
        extra = range(self.module.n_clusters - len(labels))
        return labels + [f"novel_{j}" if labels else str(j) for j in extra]

    def _condition_codes(self, condition, n: int, seed: int | None = None) -> torch.Tensor | None:
        """Codes of the requested condition(s) for n cells; None when unconditioned."""
        keys = self.condition_keys
        if not keys:
            if condition is not None:
                raise ValueError("The model has no condition covariate; pass condition=None.")
            return None
        if not isinstance(condition, dict):
            if len(keys) > 1:
                raise ValueError(f"Give one value per condition as a dict over {keys}.")
            condition = {keys[0]: condition}
        codes = np.zeros((n, len(keys)), dtype=np.int64)
        mappings = self._cat_state().mappings
        for j, key in enumerate(keys):
            known = [str(v) for v in mappings[key]]
            value = condition.get(key)
            if value is None:
                # Draw from the conditions' frequencies in the training data.
                freq = self.adata.obs[key].astype(str).value_counts(normalize=True)
                p = np.array([freq.get(v, 0.0) for v in known])
                codes[:, j] = np.random.default_rng(seed).choice(len(known), size=n, p=p / p.sum())
            elif str(value) not in known:
                raise ValueError(
                    f"Condition {key}={value!r} was never seen in training; known: {known}."
                )
            elif str(value) not in self._seen_conditions(key):
                raise ValueError(
                    f"Condition {key}={value!r} was never seen in training: it is a category "
                    f"of adata.obs[{key!r}] without cells, so the model learned nothing of it. "
                    f"Conditions seen: {sorted(self._seen_conditions(key))}."
                )
            else:
                codes[:, j] = known.index(str(value))
        return torch.as_tensor(codes, device=self.module.device)

    def _seen_conditions(self, key: str) -> set[str]:
        """Values of condition ``key`` that training cells carry (for a query model, also
        those the reference knew)."""
        seen = set(self.adata.obs[key].astype(str).unique())
        if self.is_query_model:
            new = set(self.query_mapping_["new_categories"].get(key, []))
            seen |= {str(v) for v in self._cat_state().mappings[key] if str(v) not in new}
        return seen

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def _posterior(
        self,
        adata,
        indices=None,
        batch_size=None,
        condition=None,
        give_mean: bool = True,
        dataloader=None,
    ) -> dict[str, np.ndarray]:
        """Per cell: z and w (posterior means, or one draw each without ``give_mean``), their
        posterior variances and q(y | z, c) at the mean of z."""
        self._check_if_trained(warn=False)
        if dataloader is None:
            adata = self._validate_anndata(self._resolve_adata(adata))
            dataloader = self._make_data_loader(adata, indices=indices, batch_size=batch_size)
        elif adata is not None or indices is not None:
            raise ValueError("Pass either a dataloader or adata/indices, not both.")
        else:
            dataloader = _OnDevice(dataloader, self.module)
        module = self.module.eval()
        target = None
        if condition is not None:
            if not self.condition_keys:
                raise ValueError("The model has no condition covariate; pass condition=None.")
            if not module.condition_in_prior:
                raise ValueError(
                    "condition= moves z by the condition shifts of p(z | w, y, c); this model "
                    "was built with condition_in_prior=False, so its prior has none."
                )
            target = self._condition_codes(condition, 1)[0]
        out = {"z": [], "w": [], "probs": [], "z_var": [], "w_var": []}
        for tensors in dataloader:
            inf = module.inference(**module._get_inference_input(tensors))
            qz, qw = inf["qz"], inf["qw"]
            z, w = (qz.loc, qw.loc) if give_mean else (inf["z"], inf["w"])
            probs = torch.softmax(inf["cluster_logits"], -1)
            if target is not None:
                # Through each component's prior, own condition to target, over q(y | z, c).
                cats = tensors[_CAT]
                z = module.move_latent(z, w, probs, cats, target.expand(cats.shape).to(cats.dtype))
            for key, value in (
                ("z", z),
                ("w", w),
                ("probs", probs),
                ("z_var", qz.variance),
                ("w_var", qw.variance),
            ):
                out[key].append(value.cpu())
        return {k: torch.cat(v).numpy() for k, v in out.items()}

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices=None,
        representation: str = "z",
        batch_size: int | None = None,
        condition=None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        return_dist: bool = False,
        dataloader=None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior mean of z (``representation="z"``) or of w (``"w"``), cells x dims.

        Parameters
        ----------
        adata
            AnnData set up like the training data; default the training AnnData.
        indices
            Cells to return (default all).
        representation
            ``"z"`` or ``"w"``.
        batch_size
            Cells per minibatch.
        condition
            For z: move every cell to this condition (a dict over several condition keys).
            p(z | w, y, c) shifts and scales each component with the condition, so z keeps the
            condition apart; with ``condition``, each cell's z is carried through its
            clusters' priors, mean_y(w, condition) + (z - mean_y(w, own)) * scale_y(w,
            condition) / scale_y(w, own), weighted by q(y | z, c). Cells of every condition
            then share one latent space, for neighbors, UMAP and integration scores. Needs
            ``condition_in_prior=True`` (the default).
        give_mean
            As in scvi-tools: the posterior mean; ``False`` returns one draw from q.
        mc_samples
            Accepted for scvi-tools' signature; q is Gaussian, so its mean needs no sampling.
        return_dist
            As in scvi-tools: return ``(mean, variance)`` of q instead (not with
            ``condition``).
        dataloader
            Minibatches to read instead of ``adata``/``indices`` (scvi-tools' argument).

        Examples
        --------
        >>> g.get_latent_representation(representation="w").shape  # doctest: +SKIP
        (1556, 5)
        >>> z_ctrl = g.get_latent_representation(condition="ctrl")  # doctest: +SKIP
        >>> adata.obsm["X_cgmdvae_ctrl"] = z_ctrl  # doctest: +SKIP
        """
        if representation not in ("z", "w"):
            raise ValueError(f"representation must be 'z' or 'w', got {representation!r}.")
        if condition is not None and representation != "z":
            raise ValueError("condition= moves z; w has no condition shift.")
        if return_dist and condition is not None:
            raise ValueError("return_dist=True returns q itself; it cannot be moved (condition=).")
        post = self._posterior(
            adata,
            indices,
            batch_size,
            condition,
            give_mean=give_mean or return_dist,
            dataloader=dataloader,
        )
        if return_dist:
            return post[representation], post[f"{representation}_var"]
        return post[representation]

    def predict_clusters(
        self, adata: AnnData | None = None, soft: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """Cluster of every cell from q(y | z, c) at the posterior mean of z.

        Parameters
        ----------
        adata
            AnnData set up like the training data; default the training AnnData.
        soft
            Return cells x K probabilities instead of cluster indices.
        batch_size
            Cells per minibatch.

        Examples
        --------
        >>> g.predict_clusters()[:5]  # doctest: +SKIP
        array([3, 3, 0, 7, 1])
        """
        probs = self._posterior(adata, None, batch_size)["probs"]
        return probs if soft else probs.argmax(1)

    def predict_labels(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Label of every cell, from q(y | z, c), with its confidence.

        The label is the reference label of the most probable cluster (its name
        ``novel_j`` for a cluster no label claimed, or the cluster index without labels); the
        confidence is that cluster's probability. For a query model (see
        :meth:`load_query_data`) this is label transfer from the reference.

        Parameters
        ----------
        adata
            AnnData set up like the model's; default the model's (the query).
        batch_size
            Cells per minibatch.

        Returns
        -------
        DataFrame indexed by cell with ``label`` (categorical over :attr:`cluster_names`) and
        ``confidence`` (in [1/K, 1]).

        Examples
        --------
        >>> q.predict_labels().head()  # doctest: +SKIP
        """
        adata = self._resolve_adata(adata)
        probs = self._posterior(adata, None, batch_size)["probs"]
        label = pd.Categorical.from_codes(probs.argmax(1), categories=self.cluster_names)
        return pd.DataFrame(
            {"label": label, "confidence": probs.max(1).astype(np.float32)},
            index=adata.obs_names.copy(),
        )

    def write_to_adata(self, adata: AnnData | None = None, batch_size: int | None = None):
        """Write latents, clusters and cluster probabilities into the AnnData.

        Writes ``obsm["X_cgmdvae"]`` (z mean), ``obsm["X_cgmdvae_w"]`` (w mean),
        ``obs["cgmdvae_cluster"]`` (categorical over all K clusters, empty ones included),
        ``obsm["cgmdvae_cluster_probs"]`` and ``uns["cgmdvae"]`` (cluster sizes and the list of
        empty clusters); for a query model also ``obs["cgmdvae_label"]`` and
        ``obs["cgmdvae_label_confidence"]`` (see :meth:`predict_labels`).

        Returns
        -------
        The keys written, as ``"slot/key"`` strings.

        Examples
        --------
        >>> g.write_to_adata()  # doctest: +SKIP
        ['obsm/X_cgmdvae', 'obsm/X_cgmdvae_w', 'obs/cgmdvae_cluster', ...]
        """
        adata = self._resolve_adata(adata)
        post = self._posterior(adata, None, batch_size)
        names = self.cluster_names
        clusters = post["probs"].argmax(1)
        sizes = np.bincount(clusters, minlength=len(names))
        empty = [names[k] for k in np.flatnonzero(sizes == 0)]
        if empty:
            logger.info("%d of %d clusters are empty: %s", len(empty), len(names), empty)
        adata.obsm["X_cgmdvae"] = post["z"].astype(np.float32)
        adata.obsm["X_cgmdvae_w"] = post["w"].astype(np.float32)
        adata.obs["cgmdvae_cluster"] = pd.Categorical.from_codes(clusters, categories=names)
        adata.obsm["cgmdvae_cluster_probs"] = post["probs"].astype(np.float32)
        adata.uns["cgmdvae"] = {
            "cluster_names": np.array(names, dtype=object),
            "cluster_sizes": sizes,
            "empty_clusters": np.array(empty, dtype=object),
        }
        written = [
            "obsm/X_cgmdvae",
            "obsm/X_cgmdvae_w",
            "obs/cgmdvae_cluster",
            "obsm/cgmdvae_cluster_probs",
            "uns/cgmdvae",
        ]
        if self.is_query_model:
            adata.obs["cgmdvae_label"] = adata.obs["cgmdvae_cluster"].copy()
            adata.obs["cgmdvae_label_confidence"] = post["probs"].max(1).astype(np.float32)
            written += ["obs/cgmdvae_label", "obs/cgmdvae_label_confidence"]
        return written

    # ----------------------------------------------------------------- generation
    def _expected(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.module.likelihood in COUNT_LIKELIHOODS:
            return params["mu"] * (1 - torch.sigmoid(params["zi_logits"]))
        if self.module.likelihood == "bernoulli":
            return torch.sigmoid(params["out"])
        return params["out"]

    def _cluster_index(self, cluster) -> int:
        names = self.cluster_names
        if isinstance(cluster, str):
            if cluster not in names:
                raise ValueError(f"cluster={cluster!r} is not a cluster; clusters: {names}.")
            return names.index(cluster)
        if not 0 <= int(cluster) < len(names):
            raise ValueError(f"cluster={cluster} is out of range 0..{len(names) - 1}.")
        return int(cluster)

    @torch.inference_mode()
    def sample(
        self,
        n_cells: int = 100,
        cluster: int | str | None = None,
        condition=None,
        seed: int | None = None,
    ) -> AnnData:
        """Generate cells from the model: d, y, w, z and x, ancestrally.

        Parameters
        ----------
        n_cells
            Number of cells.
        cluster
            Cluster index or name for every cell; ``None`` draws y from p(y | d) p(d).
        condition
            Value of the condition (or a dict over several condition keys); ``None`` draws
            from the training frequencies.
        seed
            Random seed for reproducible samples.

        Returns
        -------
        AnnData with samples in ``X`` (counts for count likelihoods), their expectation in
        ``layers["expected"]``, and ``obs["cluster"]`` plus one column per condition.

        Examples
        --------
        >>> cells = g.sample(100, cluster=3, condition="stim")  # doctest: +SKIP
        """
        if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
            raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}.")
        module = self.module.eval()
        device = module.device
        # Fork the generator of the module's device only: forking "cuda" on a CPU build fails.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            cats = self._condition_codes(condition, n_cells, seed)
            y_given = None if cluster is None else self._cluster_index(cluster)
            self._check_if_trained(warn=False)
            if cluster is None:
                d = Dirichlet(module.alpha).sample((n_cells,))
                y = Categorical(probs=d).sample()
            else:
                y = torch.full((n_cells,), y_given, device=device)
            w = torch.randn(n_cells, module.n_latent_w, device=device)
            pz = module.prior_distribution(w, cats)
            rows = torch.arange(n_cells, device=device)
            z = pz.sample()[rows, y]
            library = None
            if module.likelihood in COUNT_LIKELIHOODS:
                library = self._library_sampler(n_cells, device)
            params = module.decode(z, cats, library)
            x = module._torch_likelihood(params).sample()
            expected = self._expected(params)
        obs = pd.DataFrame(index=[f"sample_{i}" for i in range(n_cells)])
        obs["cluster"] = pd.Categorical.from_codes(y.cpu().numpy(), categories=self.cluster_names)
        if cats is not None:
            for j, key in enumerate(self.condition_keys):
                known = [str(v) for v in self._cat_state().mappings[key]]
                obs[key] = pd.Categorical.from_codes(cats[:, j].cpu().numpy(), categories=known)
        out = AnnData(X=x.cpu().numpy().astype(np.float32), obs=obs)
        out.var_names = self.adata.var_names.copy()
        out.layers["expected"] = expected.cpu().numpy().astype(np.float32)
        return out

    def _library_sampler(self, n: int, device) -> torch.Tensor:
        # Log library sizes drawn from a normal fitted to the training cells.
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        log_lib = np.log(np.maximum(np.asarray(x.sum(1)).ravel(), 1.0))
        mean, sd = float(log_lib.mean()), float(log_lib.std())
        return torch.randn(n, 1, device=device) * sd + mean

    @torch.inference_mode()
    def translate(
        self,
        adata: AnnData,
        target_condition,
        batch_size: int | None = None,
        residual: bool = False,
    ) -> AnnData:
        """Counterfactual expression of the given cells under another condition.

        Each cell is encoded with its own condition (posterior mean of z) and decoded with the
        target condition, at its own library size for count data.

        Parameters
        ----------
        adata
            Cells to translate, set up like the training data.
        target_condition
            Value of the condition to translate to (a dict over several condition keys).
        batch_size
            Cells per minibatch.
        residual
            ``likelihood="normal"`` only: add the model's change, decoded under the target
            minus under the cell's own condition, to the cell's observed data (clipped at 0,
            the floor of log-normalized data) instead of returning the decoded target. What
            the model does not reconstruct of a cell is kept as observed.

        Returns
        -------
        AnnData with the predicted expression under the target condition in ``X`` (the
        expectation; for count likelihoods ``layers["counts"]`` holds one draw of counts from
        the posterior predictive, to be normalized exactly like real cells), and the cells'
        obs with the condition column(s) set to the target.

        Examples
        --------
        >>> stim_pred = g.translate(adata[adata.obs.condition == "ctrl"], "stim")  # doctest: +SKIP
        """
        if not self.condition_keys:
            raise ValueError("The model has no condition covariate to translate.")
        if residual and self.module.likelihood != "normal":
            raise ValueError(
                f"residual=True needs likelihood='normal'; this model's is "
                f"{self.module.likelihood!r}."
            )
        target = self._condition_codes(target_condition, 1)[0]
        adata = self._validate_anndata(adata)
        self._check_if_trained(warn=False)
        module = self.module.eval()
        outs, counts = [], []
        for tensors in self._make_data_loader(adata, batch_size=batch_size):
            x, cats = tensors[REGISTRY_KEYS.X_KEY], tensors[_CAT]
            qz, _ = module.encode(x, cats)
            new_cats = target.expand(cats.shape).to(cats.dtype)
            params = module.decode(qz.loc, new_cats, module._library(x))
            expected = self._expected(params)
            if residual:
                own = self._expected(module.decode(qz.loc, cats))
                expected = (x + expected - own).clamp(min=0.0)
            outs.append(expected.cpu())
            if module.likelihood in COUNT_LIKELIHOODS:
                counts.append(module._torch_likelihood(params).sample().cpu())
        obs = adata.obs.copy()
        for key in self.condition_keys:
            value = (
                target_condition[key] if isinstance(target_condition, dict) else target_condition
            )
            obs[key] = str(value)
        out = AnnData(X=torch.cat(outs).numpy().astype(np.float32), obs=obs, var=adata.var.copy())
        if counts:
            out.layers["counts"] = torch.cat(counts).numpy().astype(np.float32)
        for key in [k for k in obs if k.startswith("_scvi")]:
            del out.obs[key]
        return out
