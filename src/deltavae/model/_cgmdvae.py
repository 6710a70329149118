"""CGMDVAE (c*GMΔVÆ): clustering, conditions and generation with a mixture Dirichlet VAE."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, VAEMixin

from .._checks import key_list, plain_keys
from .._slashes import warn_slashed_condition_keys
from .._unchanged_on_failure import unchanged_on_failure
from ..distributions import Likelihood
from ..module import CGMDVAEModule
from ..train._data import DeltaDataManager
from ..train._mixture_init import check_method as check_mixture_init
from ..train._stopping import auto_early_stopping
from ._base import DeltaModelMixin, _OnDevice, callback_list
from ._cgmdvae_generation import GenerationMixin
from ._cgmdvae_mixins import ClustersMixin, ConditionsMixin, CountExpressionMixin, LatentMixin
from ._cgmdvae_sizes import (
    latent_size,
    refuse_novel_clashes,
    refuse_one_label,
    warn_one_value_conditions,
)
from ._cgmdvae_write import WriteMixin
from ._condition_counts import warn_untrained_combinations
from ._count_advice import building_model
from ._de import CheckedExpressionMixin
from ._from_zinbvae import FromZINBVAEMixin, default_max_epochs, first_mixture_epoch
from ._host_results import HostResultsMixin
from ._init_keywords import keyword_hints, setup_hints
from ._label_setup import check_label_setup, refuse_missing_integer_labels, unlabelled_mark
from ._label_votes import label_vote_table, voted_probs
from ._labels import ConditionsByName, LabelsInColumnOrder, small_categories_named
from ._mixture_start import mixture_start, start_kept_pending
from ._modes import latent_draws, unchecked_distributions
from ._obs_checks import check_obs_keys
from ._perturbation import PerturbationMixin
from ._query import QueryMappingMixin
from ._query_checks import building_query
from ._real_values import warn_real_values
from ._refit_kept import refit_or_none
from ._scvi_glue import scvi_init_names
from ._training_checks import check_condition_args, check_flag, check_start_epoch
from ._typicality import fit_score
from ._unlabelled_types import warn_unlabelled_types
from ._validation import check_data, check_model_arguments, check_setup_target

_CAT = REGISTRY_KEYS.CAT_COVS_KEY
_DEFAULT_UNLABELED = "Unknown"


class CGMDVAE(
    FromZINBVAEMixin,
    WriteMixin,
    CountExpressionMixin,
    ConditionsMixin,
    ClustersMixin,
    LatentMixin,
    GenerationMixin,
    QueryMappingMixin,
    PerturbationMixin,
    DeltaModelMixin,
    CheckedExpressionMixin,
    HostResultsMixin,
    VAEMixin,
    BaseModelClass,
):
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
        Above the true number of groups, groups are split (the start makes exactly K). Above
        the number of labels, the others are clusters ``novel_j``; integer labels are then
        read out as strings (``"1"``, ``"novel_0"``: see :attr:`cluster_names`). A type
        none of whose cells is labelled has no cluster of its own at the default and takes a
        label's, without a word: one ``novel_j`` per such type is the remedy
        (benchmarks/README.md, "Cell types without labelled cells").
    n_latent
        Dimensions of z, the cell state. ``"auto"``: 16 for counts without condition covariates,
        else 10; K if larger, up to 64 (full-covariance components cost K x n_latent^2)
        (benchmarks/README.md, Numbers behind the defaults, D1, D16).
    n_latent_w
        Dimensions of w, the continuous variation within each mixture component.
    likelihood
        ``"zinb"`` or ``"nb"`` for raw counts (with the observed library size), ``"normal"``
        for real values about 0 (log-normalised, scaled; features far from 0 for their spread
        are warned, to centre), ``"bernoulli"`` for values in [0, 1] (e.g. MNIST pixels).
    n_hidden
        Units per hidden layer, in every network.
    n_layers
        Hidden layers of the encoder and of the decoder.
    dropout_rate
        Dropout rate of the encoder's hidden layers.
    dirichlet_alpha
        Concentration of p(d); below 1 favours few clusters per cell.
    prior_covariance
        ``"full"`` (the default): each component learns a correlation between the z
        dimensions, shared across w and c, so it can lie along any direction of z; its scales
        still depend on (w, c). ``"diag"``: axis-aligned components, as in the GMVAE paper.
        Full components cluster better (benchmarks/README.md, Numbers behind the defaults, D2).
    condition_in_prior
        Let the mixture components depend on the condition, p(z | w, y, c) (the default).
        ``False`` uses p(z | w, y): the components are shared by all conditions, which then act
        through the encoder and decoder only.
    classifier_weight
        Weight of the classification term for labelled cells.
    condition_alignment
        Weight of a penalty on the distance between the conditions' means of z within each
        cluster (:meth:`deltavae.module.CGMDVAEModule.alignment_penalty`), so that z keeps the
        cell state and the decoder carries the condition's effect, which ``translate`` needs
        (benchmarks/README.md, Numbers behind the defaults, D8, D14, D17). ``"auto"``: 10
        without labels (a strong penalty pulls unsupervised clusters apart); with labels (the
        clusters are known cell types) 100 for counts and 0 for the normal and Bernoulli
        likelihoods.

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
    #: The KL warm-up's "auto" is half the epochs, so the mixture starts (a quarter in) while
    #: z is still informative.
    _warmup_share = 2
    perturbation_methods = ("translate", "latent_shift", "nearest_response")

    @scvi_init_names
    @keyword_hints
    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        *,
        n_latent: int | str = "auto",
        n_latent_w: int = 5,
        likelihood: Literal["zinb", "nb", "normal", "bernoulli"] = "zinb",
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dirichlet_alpha: float = 1.0,
        prior_covariance: Literal["full", "diag"] = "full",
        condition_in_prior: bool = True,
        classifier_weight: float = 50.0,
        condition_alignment: float | str = "auto",
    ):
        super().__init__(adata)
        observation = Likelihood(likelihood)
        check_model_arguments(
            {"n_latent_w": n_latent_w, "n_hidden": n_hidden, "n_layers": n_layers},
            dropout_rate=dropout_rate,
            positive={"dirichlet_alpha": dirichlet_alpha},
            non_negative={
                "classifier_weight": classifier_weight,
                "condition_alignment": getattr(condition_alignment, "real", 0),  # text: below
            },
            flags={"condition_in_prior": condition_in_prior},
        )
        setup = self.registry_["setup_args"]
        if observation.data_kind != "real":  # setup_anndata warned of silent cells and genes
            with building_model("CGMDVAE"):
                check_data(adata, setup["layer"], kind=observation.data_kind, warn_empty=False)
        elif likelihood == "normal":
            warn_real_values(adata, setup["layer"], query=building_query())
        labels = self.label_names
        refuse_one_label(labels, n_clusters)  # one cluster per label would be 1
        n_clusters = self._check_n_clusters(n_clusters)
        refuse_novel_clashes(labels, n_clusters, setup["labels_key"])
        n_latent = latent_size(n_latent, n_clusters, observation.is_count, self.condition_keys)
        condition_alignment = check_condition_args(
            self, observation.is_count, condition_alignment, classifier_weight, condition_in_prior
        )
        # Label codes 0..L-1 are the labels; the unlabelled code is last (LabelsInColumnOrder).
        label_to_cluster = [*range(len(labels)), -1] if labels else None
        n_cats_per_cov = self._n_cats_per_cov()
        warn_one_value_conditions(self.condition_keys, n_cats_per_cov, self, adata)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_clusters=n_clusters,
            n_cats_per_cov=n_cats_per_cov,
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
            condition_alignment=condition_alignment,
        )
        summary = (
            f"CGMDVAE: {n_clusters} clusters, n_latent {n_latent}, n_latent_w {n_latent_w}, "
            f"likelihood {likelihood}, conditions {self.condition_keys or 'none'}, "
            f"labels {setup['labels_key'] or 'none'}"
        )
        self._finish_init(summary, locals())

    # ----------------------------------------------------------------- setup
    @classmethod
    @setup_hints("CGMDVAE")
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
            obs column(s) with categorical conditions (stimulation, batch, donor ...). A
            column named with "/" is warned about: the records of :meth:`sample` and
            :meth:`translate` are keyed by it, which .h5ad files read back nested.
        labels_key
            obs column with known cell labels: every cell labelled is supervised; cells whose
            label is ``unlabeled_category`` make it semi-supervised.
        unlabeled_category
            The label of unlabelled cells. ``None`` (the default): cells labelled
            ``"Unknown"``, if any, are unlabelled; integer labels are all labelled (the mark
            an integer no cell carries: -1 unless -1 is a label). A value no cell carries
            (every cell labelled) trains supervised, as scvi-tools' ``SCANVI`` does, and is
            the mark a query mapped onto the model carries (:meth:`load_query_data`); refused
            where a label looks like another mark (``"unknown"``, ``"NA"``, -1), which would
            train as a cell type.

        Examples
        --------
        >>> dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")  # doctest: +SKIP
        """
        condition_key = plain_keys(condition_key)  # an Index or array: a list, saved as one
        # First, as scvi-tools asks: the arguments only, not the names computed below.
        setup_method_args = cls._get_setup_method_args(**locals())
        conditions = key_list(condition_key)  # a tuple, Index or array too; [] is None
        query = "source_registry" in kwargs  # load_query_data's: scvi-tools fills its labels
        labels_checked = None if query and labels_key not in adata.obs else labels_key
        check_setup_target(adata, kwargs, cls.__name__)
        refuse_missing_integer_labels(adata, labels_checked, unlabeled_category)  # 1.0, NaN
        # The mark the advice for missing labels writes: the one given, when it is text.
        text = unlabeled_category if isinstance(unlabeled_category, str) else _DEFAULT_UNLABELED
        check_obs_keys(
            adata, {"condition_key": conditions, "labels_key": labels_checked}, True, text
        )
        if not query:  # a query model's were the reference's, said at its setup
            warn_slashed_condition_keys(conditions)
        check_data(adata, layer, kind="real")
        if not query:
            check_label_setup(adata, labels_key, unlabeled_category, _DEFAULT_UNLABELED, conditions)
        # `is None`, not `or`: a falsy mark (0 for integer labels, "") is the user's own.
        column = adata.obs.get(labels_key) if labels_key is not None else None
        source = kwargs.get("source_registry")
        mark = unlabelled_mark(column, unlabeled_category, _DEFAULT_UNLABELED, source)
        if labels_key is None:
            labels_field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        else:
            labels_field = LabelsInColumnOrder(REGISTRY_KEYS.LABELS_KEY, labels_key, mark)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            ConditionsByName(_CAT, conditions),
            labels_field,
        ]
        if source is None or REGISTRY_KEYS.BATCH_KEY in source["field_registries"]:
            # scvi-tools' expression API (transform_batch, differential expression, ...) reads
            # the batch field: it mirrors the first condition, which the networks read from
            # the condition field. Models saved before it existed load without it.
            fields.append(
                CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, conditions[0] if conditions else None)
            )
        adata_manager = DeltaDataManager(fields=fields, setup_method_args=setup_method_args)
        unlabelled = {labels_key: mark} if labels_key else {}
        named = small_categories_named(adata, [*(conditions or []), *unlabelled], unlabelled, query)
        with unchanged_on_failure(adata), named:  # its warning made an error: as it was
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(
        self,
        max_epochs: int | None = None,
        mixture_init_epoch: int | str | None = "auto",
        n_epochs_kl_warmup: int | str | None = "auto",
        mixture_init: Literal["leiden", "umap", "spectral", "kmeans"] = "leiden",
        restore_best: bool | str = "auto",
        refit_mixture: bool | Literal["auto"] = "auto",
        early_stopping: bool | str = "auto",
        **kwargs,
    ):
        """Train the model; see :meth:`deltavae.model.ZINBVAE.train` for the common arguments.

        Parameters
        ----------
        max_epochs
            Passes through the training cells; default from the number of cells, as
            scvi-tools (at most 400), and 20 for a model :meth:`from_zinbvae` started and
            not trained since.
        mixture_init_epoch
            Epoch at which the mixture components are placed on clusters of z (each
            condition's mean removed, so clusters are shared by the conditions), named by
            the labelled cells (by the clusters of their nearest cells among the data's
            principal components). ``"auto"``: a quarter of the epochs for a model not
            trained before, or whose runs ended before the start (``mixture_pending_``:
            ``max_epochs=1``, interrupted); 0 for one :meth:`from_zinbvae` built; ``None``
            skips it. The longer z trains as a plain (weakly regularised) autoencoder first,
            the better its groups separate (benchmarks/README.md, Numbers behind the defaults, D3).
        n_epochs_kl_warmup
            Epochs over which the KL weight rises to 1; ``"auto"``: half of the epochs, so
            the mixture starts while z is still informative; none for a model trained before
            (training on keeps the full ELBO, as it keeps the mixture; but half for one whose
            mixture is still to start, as for its start) or one
            :meth:`from_zinbvae` built.
        mixture_init
            How z is clustered at ``mixture_init_epoch``: ``"leiden"`` (default) clusters
            UMAP's neighbour graph of z with Leiden into ``n_clusters`` groups, keeping
            curved or touching groups whole, in a second or two on 10,000 cells; ``"umap"``
            runs k-means on a UMAP layout of that graph (slower); ``"spectral"`` on its
            spectral embedding; ``"kmeans"`` on z, fastest. See
            :class:`deltavae.train.MixtureInitialization` (benchmarks/README.md, D4).
        restore_best
            Keep the parameters of the epoch with the lowest ``validation_loss`` (the
            objective: the negative ELBO plus the classifier and alignment terms) among the
            epochs after the KL warm-up and the mixture start (``best_epoch_`` says which); the last
            epoch's with ``False``. ``"auto"``: when there are validation cells (not with
            ``train_size=1``); ``True`` refuses to train without them.
        refit_mixture
            After training, move each component onto a cluster of the trained z found as at
            the start (count models: with the counts' principal components' neighbours
            joined, D12, D15), keeping what the prior learned of w and the conditions
            (:func:`deltavae.train.refit_mixture`; benchmarks/README.md, D9). ``"auto"``:
            without labels, when the mixture started in this call (a query model keeps the
            reference's mixture: neither starts nor refits it). A refit interrupted or failed
            leaves the mixture as training left it (``train_args_["refit_mixture"]`` False).
        early_stopping
            Stop once ``validation_loss`` has not improved for ``early_stopping_patience``
            validations (45; 75 under ``"auto"``) after its best full-ELBO epoch (the one
            ``restore_best`` keeps). ``"auto"``: when ``restore_best`` keeps an epoch and
            there are validation cells. On PBMC 3k the validation ELBO rose from before the
            warm-up's end on while the training ELBO fell: the epochs after the best one
            overfit and did not better the clusters; the run ends at about 280 of its 400
            epochs with the same model (benchmarks/README.md, CGMDVAE quality).
        **kwargs
            Passed to :meth:`deltavae.model.ZINBVAE.train` (``lr``, ``batch_size``,
            ``early_stopping_patience``, Lightning trainer arguments...).

        Notes
        -----
        A semi-supervised model warns when a group of training cells looks like a cell type
        none of whose cells is labelled, folded into a label's cluster (its own cluster in z
        and in the data, with no labelled cell): train with ``n_clusters`` one higher per
        such group, or label a few of its cells (``deltavae.model._unlabelled_types``).

        Examples
        --------
        >>> g.train(max_epochs=200, early_stopping=True)  # doctest: +SKIP
        """
        check_mixture_init(mixture_init, "mixture_init")
        if max_epochs is None:
            max_epochs = default_max_epochs(self)
        refit_mixture = check_flag(refit_mixture, "refit_mixture")
        refits = refit_mixture != "auto" and bool(refit_mixture)  # "auto": none for a query
        if self.is_query_model and (mixture_init_epoch not in ("auto", None) or refits):
            raise ValueError(
                "A query model keeps the reference's mixture: mixture_init_epoch=None, "
                "refit_mixture=False."
            )
        check_start_epoch(mixture_init_epoch, max_epochs)  # max_epochs first
        if mixture_init_epoch == "auto":
            mixture_init_epoch = first_mixture_epoch(self, max_epochs)
        callbacks = callback_list(kwargs.pop("callbacks", None))
        given = {**kwargs, "callbacks": callbacks}
        stopping = auto_early_stopping(
            early_stopping, restore_best, self.adata.n_obs, max_epochs, given
        )
        kwargs.update(stopping)  # early_stopping, and from "auto" its patience
        started = mixture_init_epoch is not None and mixture_init_epoch < max_epochs
        if started:
            callbacks.append(mixture_start(self, mixture_init_epoch, mixture_init, kwargs))
        refit_mixture = self._resolve_refit(refit_mixture, started)
        if "_train_record" in self.__dict__:  # train_args_ keeps what "auto" came to
            self._train_record["refit_mixture"] = refit_mixture
            self._train_record.update(stopping)
        # Recorded once the fit and its refit end (the refit's clusters), and also of a
        # diverged fit that kept its steps.
        with self._recording_training_cells(), start_kept_pending(self, mixture_init_epoch):
            out = super().train(
                max_epochs=max_epochs,
                callbacks=callbacks,
                n_epochs_kl_warmup=n_epochs_kl_warmup,
                restore_best=restore_best,
                **kwargs,
            )
            if refit_mixture:
                with refit_or_none(self):  # all or nothing; an interrupt says training finished
                    self._refit_mixture(mixture_init)
        self._warn_if_clusters_empty(max_epochs, after_train=True)
        warn_unlabelled_types(self)  # semi-supervised: a type without a labelled cell
        return out

    @property
    def _data_kind(self) -> str:
        return self.module.observation.data_kind

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
        scores: bool = False,
        loader_kwargs: dict | None = None,
        labels: bool = False,
    ) -> dict[str, np.ndarray]:
        """Per cell: z and w (posterior means, or one draw each without ``give_mean``), their
        posterior variances and q(y | z, c) at the mean of z; with ``scores``, also
        typicality's two scores (``fit_score``, float32, cells x 2) from the same inference:
        one pass over the cells for labels and typicality. ``labels``: q(y | z, c) as the labels
        read it (:func:`~deltavae.model._label_votes.voted_probs`)."""
        self._check_if_trained(warn=False)
        if scores and (not give_mean or condition is not None):
            raise ValueError("scores are read at the posterior means under the own conditions.")
        if dataloader is None:
            adata = self._validate_anndata(self._resolve_adata(adata))
            dataloader = self._make_data_loader(
                adata, indices=indices, batch_size=batch_size, **(loader_kwargs or {})
            )
        elif adata is not None or indices is not None or loader_kwargs:
            raise ValueError("Pass either a dataloader or adata/indices (and loader keywords).")
        else:
            dataloader = _OnDevice(dataloader, self.module)
        module = self.module  # in eval mode while its loader is read (see _OnDevice)
        target, votes = None, label_vote_table(self) if labels else None
        if condition is not None:
            if not self.condition_keys:
                raise ValueError("The model has no condition covariate; pass condition=None.")
            if not module.condition_in_prior:
                raise ValueError(
                    "condition= moves z by the condition shifts of p(z | w, y, c); this model "
                    "was built with condition_in_prior=False, so its prior has none."
                )
            target = self._condition_codes(condition, 1, keep_own=True)[0]
        out, moved = {"z": [], "w": [], "probs": [], "z_var": [], "w_var": []}, []
        if scores:
            out["scores"] = []
        # Kept on the device, brought to the host once at the end (a copy each: 6 waits a batch).
        with unchecked_distributions():  # a draw (not give_mean) on the CPU, cell by cell
            drawing = latent_draws(module, not give_mean)[0]
            for tensors in dataloader:
                inf = module.inference(**module._get_inference_input(tensors), **drawing)
                qz, qw = inf["qz"], inf["qw"]
                z, w = (qz.loc, qw.loc) if give_mean else (inf["z"], inf["w"])
                probs = torch.softmax(inf["cluster_logits"], -1)
                if votes is not None:  # a label none of its cells trained with: voted
                    probs = voted_probs(module, votes, qz.loc, tensors[_CAT], probs)
                if target is not None:
                    # Through each component's prior, own condition to target, over q(y | z, c).
                    cats = tensors[_CAT].to(target.device)
                    moved.append(self._moved_codes(target, cats))
                    z = module.move_latent(z, w, probs, cats, moved[-1])
                values = (z, w, probs, qz.variance, qw.variance)
                for key, value in zip(("z", "w", "probs", "z_var", "w_var"), values, strict=True):
                    out[key].append(value)
                if scores:
                    out["scores"].append(fit_score(module, tensors, inf).float())
        # Cells moved to a combination of conditions that never trained: a warning.
        warn_untrained_combinations(self, moved, "get_latent_representation(condition=...)")
        return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}
