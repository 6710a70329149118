"""Query mapping (scArches): a query registered and mapped onto a trained reference.

scvi-tools' :class:`~scvi.model.base.ArchesMixin` registers the query against the reference's
setup (adding new condition categories), builds the query model and loads the reference's
weights. Two things it does not do right for deltavae's Pyro modules are fixed here (with the
weight freezing in :mod:`deltavae.model._freeze`):

* its freezing hooks let every condition column of a first layer learn, reference categories
  included, and leave the parameters of blocks it does not know by name (CGMDVAE's cluster
  head and mixture prior) with ``requires_grad`` set by a key pattern; here every reference
  weight is frozen and only the columns of the new categories learn;
* with several covariates, its padding appends the new columns at the end of a weight, so the
  columns of a later covariate shift; here each covariate's block is rebuilt in place.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import ArchesMixin

from .._anndata_or_folder import check_anndata
from ..module._base import clear_own_params
from ._base import DeltaModelMixin
from ._condition_counts import upgrade_saved_counts
from ._device_args import check_device_args
from ._freeze import _freeze_for_query, _restrict_learning
from ._gene_advice import refuse_no_shared_genes
from ._genes import align_query_genes, warn_missing_genes
from ._label_colours import reference_label_colours
from ._labels import refuse_untrained_query_categories
from ._load_state import reads_once
from ._query_checks import (
    check_query_data,
    check_query_obs,
    query_being_built,
    refuse_backed,
    warn_cells_without_reference_genes,
    warn_lookalike_categories,
)
from ._query_padding import _PREPARE_NOTES, _as_given, _docstring_of, _restore
from ._query_source import follow_query, keep_write_target, registration_twin
from ._reference_record import forget_reference_training
from ._registered import category_mappings
from ._saved import read_saved
from ._scvi_glue import scvi_init_names
from ._typicality import settle_record
from ._validation import check_flags, warn_user

logger = logging.getLogger(__name__)


def _nothing_to_learn(model) -> str:
    """What a query model with no new condition category says (its own methods named)."""
    names = ("get_latent_representation", "predict", "predict_labels")  # SCANVI's and ours
    methods = [m for m in names if hasattr(model, m)]
    return (
        "The query adds no new condition category, so nothing is left to learn: the query "
        "model maps cells exactly as the reference does and is ready to use "
        f"({', '.join([*methods, 'write_to_adata'])}); train() has nothing to do and returns."
    )


# obs columns a query must carry when the reference registered them.
@contextlib.contextmanager
def _quiet_frozen_parameters():
    """Pyro warns once per frozen parameter that it leaves out of the param store while a
    module trains; for a query model that is the point of freezing. Silenced inside the block
    only, so the user's own warning filters stay as they are."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*was not registered in the param store because requires_grad=False",
            category=UserWarning,
        )
        yield


def _reference_state(cls, reference) -> tuple[dict, np.ndarray, dict]:
    """attr_dict, gene names and state dict of a reference model or saved directory."""
    if isinstance(reference, str | os.PathLike):
        attr_dict, var_names, state_dict = read_saved(
            cls, reference, what="reference model", use="load_query_data"
        )
        where = repr(os.fspath(reference))
    elif isinstance(reference, cls):
        attr_dict = {
            "registry_": reference.registry_,
            "deltavae_version_": getattr(reference, "deltavae_version_", None),
            "is_trained_": reference.is_trained_,
            "init_params_": reference.init_params_,
            "trained_categories_": getattr(reference, "trained_categories_", None),
        }
        var_names = reference.get_var_names()
        state_dict = {k: v.detach().cpu().clone() for k, v in reference.module.state_dict().items()}
        where = "the reference model"
    else:
        raise TypeError(
            f"reference_model must be a trained {cls.__name__} or the directory it was saved to; "
            f"got {type(reference).__name__}."
            + (
                f" The query comes first: {cls.__name__}.load_query_data(adata, reference_model)."
                if isinstance(reference, AnnData)
                else ""
            )
        )
    if not attr_dict.get("is_trained_", False):
        raise ValueError(
            f"{where} is untrained; train the reference (reference.train()) before mapping a "
            "query onto it."
        )
    return attr_dict, np.asarray(var_names), state_dict


def _covariate_sizes(registry: dict, without: dict | None = None) -> list[int]:
    """Categories per covariate, in the order deltavae's networks receive them; ``without``
    ({obs key: categories}) are not counted."""
    without = without or {}
    fields = registry["field_registries"]
    sizes = []
    cat = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    if REGISTRY_KEYS.BATCH_KEY in fields:
        batch = fields[REGISTRY_KEYS.BATCH_KEY]
        key = batch["state_registry"].get("original_key")
        # CGMDVAE's batch field mirrors its first condition for scvi-tools' expression API;
        # only the condition field reaches its networks.
        if key not in cat.get("field_keys", []):
            sizes.append(int(batch["summary_stats"]["n_batch"]) - len(without.get(key, [])))
    for key, n in zip(cat.get("field_keys", []), cat.get("n_cats_per_key", []), strict=True):
        sizes.append(int(n) - len(without.get(key, [])))
    return sizes


class QueryMappingMixin(ArchesMixin):
    """scArches query mapping onto a trained reference.

    Mixed into :class:`~deltavae.model.ZINBVAE` and :class:`~deltavae.model.CGMDVAE` before
    :class:`~deltavae.model._base.DeltaModelMixin`, in place of scvi-tools'
    :class:`~scvi.model.base.ArchesMixin`, which it wraps. It overrides the base's hooks:
    :meth:`_after_load` (a loaded query model learns what it learned before saving) and
    :meth:`_training_context` (Pyro's notes on frozen parameters are expected).
    """

    @property
    def is_query_model(self) -> bool:
        """Whether the model was built by :meth:`load_query_data`."""
        return getattr(self, "query_mapping_", None) is not None

    @property
    def summary_string(self) -> str:
        """scvi-tools' summary (``print(model)``); a query model says it is one."""
        summary = super().summary_string
        if self.is_query_model:
            summary += "\nQuery model: mapped onto its reference with load_query_data"
        return summary

    def _training_context(self) -> contextlib.AbstractContextManager:
        """A query model trains with Pyro's notes on its frozen parameters silenced."""
        if not self.is_query_model:
            return super()._training_context()
        return _quiet_frozen_parameters()

    @classmethod
    @scvi_init_names
    @reads_once  # a saved reference's model file read from disk once
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model,
        min_gene_overlap: float = 0.5,
        accelerator: str = "auto",
        device: int | str = "auto",
    ):
        """Map query cells onto a trained reference, scArches-style.

        The query is registered with the reference's setup; new condition (batch, covariate)
        categories are added. The query model starts from the reference's weights, all frozen
        except the weights of the new categories' one-hot columns (and, for a per-batch
        dispersion, the new batches' dispersions; for a latent library, its encoder whole, as
        in scVI); BatchNorm keeps the reference's statistics. Training the query model then
        trains on the query alone and leaves the reference's mapping of its own conditions
        (its z) unchanged. A query model saved and loaded again keeps
        the same frozen weights. The query trains in eval mode, without dropout, as
        scvi-tools' does. scvi-tools' switches at values that change nothing here are taken:
        ``unfrozen=False``, ``freeze_dropout`` (either value), ``freeze_expression``,
        ``freeze_decoder_first_layer``, ``freeze_batchnorm_encoder`` and ``freeze_classifier``
        at their default True (frozen, as here), ``freeze_batchnorm_decoder`` True, and its
        default False where the decoder has no BatchNorm (count models), and
        ``transfer_batch=True`` (new batches learn); values that would let other weights
        learn, or refuse new batches, are refused.

        Only those columns learn, so the query's labels, where it has some, do not change the
        mapping, and a new donor mixes with the reference less than in one model trained on
        all donors (a trial on Kang's two donors: donor 15-NN accuracy 0.76 on the joint z,
        0.60-0.62 trained together, chance 0.61; within CD4 T cells 0.69 after 50 query
        epochs, 0.76 after 200). For donors at hand, train one model on all of them; map a
        query when the reference cannot be retrained. A new condition (a stimulation) is
        taken up mostly into z by the encoder's new column, so ``translate`` into or out of it
        predicts little of its change (said with a warning): on Kang IFN-beta, stimulated
        cells mapped onto a control reference, R² 0.00-0.05 of a held-out type's change on
        its top-100 genes, against 0.34-0.56 for one model trained on both conditions
        (``benchmarks/query_translation.py``). To predict a perturbation, train one model,
        or map a query that holds labelled cells of both conditions: translate between them
        reads its observed responses alone by default (R² 0.65-0.82 there, the model's
        0.00-0.16).

        Parameters
        ----------
        adata
            Query cells with the data where the reference had them (``X`` or the same layer)
            and every condition column the reference registered. A query without the
            reference's labels column, or with unlabelled cells, is fine. A category the
            reference registered but held no training cell of (an unused category of a pandas
            Categorical, kept after subsetting) is refused: rename it to learn it as new. A new
            category written as one of the reference's but for case, spaces or number format
            ('ctrl ', 'STIM', 1015.0) is learned as new, with a warning that gives the line
            renaming it.
        reference_model
            A trained model of this class, or the directory it was saved to.
        min_gene_overlap
            Smallest fraction of the reference's genes the query must have (a number;
            scvi-tools' third argument, the bool ``inplace_subset_query_vars``, is refused).
            Genes are matched by name: a reordered query is aligned, missing genes are
            filled with zeros (with a warning that gives their number), extra genes are
            dropped.
        accelerator, device
            Where the query model lives.

        Returns
        -------
        The query model; ``model.adata`` holds the query: a gene-aligned copy when alignment
        was needed, else an AnnData sharing its matrices, so that the query's own obs and uns
        are left as they were (a query opened backed is registered itself). scvi-tools'
        query model holds the query itself, and registering it adds ``_scvi_*`` columns and
        uuids to the user's AnnData (SCANVI's also a labels column of the unlabelled mark
        where the query had none); here ``model.adata is query`` is False: put results into
        the query (``query.obsm["X"] = model.get_latent_representation()``, or
        ``write_to_adata()``), not into ``model.adata``. Its methods take
        ``adata`` itself, genes as they are (its data replaced since, ``adata.X = other``,
        are read as they are then), and ``write_to_adata()`` writes into it. A query changed
        in place since (cells filtered, ``sc.pp.filter_cells``; its counts replaced) is read
        as it is then by every call, those without an AnnData and ``train()`` too: the
        model's own AnnData is made again from it.
        ``model.query_mapping_`` records the new categories and the missing genes. A query
        that adds no condition category leaves nothing to learn: the model is ready to use as
        it is, and ``train()`` returns (said once, here). The query model keeps no record of
        the reference's training run: its ``history`` (and ``best_epoch_``, ``train_args_``,
        ``convergence_``) are None until it trains, then those of its own training (epochs
        numbered from 0), as in scvi-tools after query training; ``trained_categories_`` (and
        CGMDVAE's ``condition_counts_``) join the query's to the reference's. Of a reference
        whose last training diverged, the query model keeps that run's weights frozen: its
        ``reference_diverged_`` says what diverged, and every read-out warns of it, however
        the query trains (its own training's divergence is its ``diverged_``).

        Examples
        --------
        >>> q = dv.model.CGMDVAE.load_query_data(query, "reference_model/")  # doctest: +SKIP
        >>> q.train(max_epochs=50)  # doctest: +SKIP
        >>> q.predict_labels().head()  # doctest: +SKIP
        """
        # A file's name or the reference's folder as the query: named as prepare_query_anndata
        # and load name them (check_query_obs said "got str").
        call = f"{cls.__name__}.load_query_data(adata, reference_model)"
        check_anndata(adata, call=call, optional=False)
        check_device_args(accelerator, device)  # before any work: Lightning's names no fix
        if not isinstance(reference_model, str | os.PathLike):
            settle_record(reference_model)  # typicality's record, carried to the query model
        attr_dict, genes, ref_state = _reference_state(cls, reference_model)
        registry = attr_dict["registry_"]
        setup_args = dict(registry["setup_args"])
        if setup_args.get("labels_key") is not None:
            mapping = registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
            setup_args["_reference_labels"] = list(mapping["categorical_mapping"])
        where = f"the {cls.__name__} reference"
        check_query_obs(adata, registry, setup_args, where)
        refuse_untrained_query_categories(adata, registry, attr_dict.get("trained_categories_"))
        check_query_data(adata, attr_dict, setup_args.get("layer"))
        missing = pd.Index(genes)[~pd.Index(genes).isin(adata.var_names)]
        n_missing = len(missing)
        aligned = align_query_genes(adata, genes, min_gene_overlap, setup_args.get("layer"))
        if aligned is not adata:  # the setup's "all zeros in adata.X" would not name them so
            warn_cells_without_reference_genes(aligned, setup_args.get("layer"))
        if aligned is adata and not adata.is_view and not adata.isbacked:
            aligned = registration_twin(adata)
        clear_own_params()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Missing labels key.*")
            # The genes the alignment filled with zeros were announced above; told to filter
            # them out, a user would drop genes the reference's networks read.
            warnings.filterwarnings("ignore", message=r".* genes in .* are zero in every")
            if aligned is not adata:  # said above in the query's terms
                warnings.filterwarnings("ignore", message=r"\d+ cells in adata\.\S+ are all zeros")
            # Told when the reference was built; inside load_query_data its advice (map query
            # data of another condition with load_query_data) would only confuse.
            warnings.filterwarnings("ignore", message=r"condition_key .* holds one value")
            # scvi-tools tells a saved model from a trained one by str only, and reads "~" as a
            # folder of that name, as save and load do not.
            reference = (
                os.path.expanduser(os.fspath(reference_model))
                if isinstance(reference_model, str | os.PathLike)
                else reference_model
            )
            with query_being_built():  # its mixture is the reference's, not fit to the query
                model = super().load_query_data(
                    aligned, reference, accelerator=accelerator, device=device
                )
        upgrade_saved_counts(model)  # a reference saved before counts without validation
        forget_reference_training(model)
        if colours := reference_label_colours(reference_model, attr_dict):
            model.reference_label_colours_ = colours  # its labels' (scanpy's ingest's)
        ref_sizes, new_sizes = _covariate_sizes(registry), _covariate_sizes(model.registry_)
        learning = _freeze_for_query(model.module, ref_state, ref_sizes, new_sizes)
        # Eval mode (as scArches leaves it): dropout is off while the query trains, so the few
        # new weights see the reference's deterministic network.
        model.module.eval()
        added = {}
        for key, mapping in category_mappings(model.registry_).items():
            known = set(category_mappings(registry).get(key, []))
            added[key] = [v for v in mapping if v not in known]
        new_categories = {key: [str(v) for v in values] for key, values in added.items()}
        warn_lookalike_categories(added, category_mappings(registry))
        model.query_mapping_ = {
            "n_genes_missing": n_missing,
            "genes_missing": [str(g) for g in missing],  # filled with zeros
            "new_categories": new_categories,
            "learning_parameters": learning,
            "reference_sizes": ref_sizes,
            "min_gene_overlap": float(min_gene_overlap),
        }
        # Results are written into the user's query, not into the copy the model reads.
        keep_write_target(model, adata if aligned is not adata else None)
        if not learning:
            model.is_trained_ = True
            warn_user(_nothing_to_learn(model))
            model._nothing_to_learn_said = True  # train() does not say it again
        logger.info("Query mapped; new categories %s; learning %s", new_categories, learning)
        return model

    @classmethod
    @_docstring_of(ArchesMixin.prepare_query_anndata, _PREPARE_NOTES)  # not wraps: no cls
    @reads_once  # a saved reference's model file read from disk once
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model,
        return_reference_var_names: bool = False,
        inplace: bool = True,
    ):
        # inplace="False" reordered the query's genes in place, as inplace=True does.
        check_flags(return_reference_var_names=return_reference_var_names, inplace=inplace)
        # The reference's folder first: "no attribute 'is_view'".
        call = f"{cls.__name__}.prepare_query_anndata(adata, reference_model)"
        check_anndata(adata, call=call, optional=False)
        if isinstance(reference_model, str | os.PathLike):  # scvi-tools: a str, "~" as is
            reference_model = os.path.expanduser(os.fspath(reference_model))
            # scvi-tools' own error for a missing, prefixed or damaged save advised
            # convert_legacy_save (models before scvi-tools 0.15): load_query_data's checks.
            read_saved(cls, reference_model, what="reference model", use="prepare_query_anndata")
        if not inplace and not return_reference_var_names:
            # scvi-tools reorders the given AnnData's genes in place, inplace=False or not,
            # when none is missing: the copy is what changes.
            if adata.isbacked:
                genes = ArchesMixin.prepare_query_anndata(adata, reference_model, True)
                refuse_backed(adata, genes, inplace=False)
            adata = adata.copy()
        if inplace and not return_reference_var_names and adata.isbacked:
            genes = ArchesMixin.prepare_query_anndata(adata, reference_model, True)
            refuse_backed(adata, genes, inplace=True)
        if inplace and not return_reference_var_names and adata.is_view:
            genes = ArchesMixin.prepare_query_anndata(adata, reference_model, True)
            if not adata.var_names.equals(pd.Index(genes)):  # it silently became a copy
                raise ValueError(
                    "adata is a view (adata[mask]): inplace=True would put its genes in the "
                    "reference's order in a copy of it, and the AnnData it views would keep "
                    "its own. Keep the result: adata = <Model>.prepare_query_anndata(adata, "
                    "reference, inplace=False)."
                )
        kept = _as_given(adata)
        if not return_reference_var_names:  # as load_query_data says it (scvi-tools: INFO only)
            genes = pd.Index(ArchesMixin.prepare_query_anndata(adata, reference_model, True))
            refuse_no_shared_genes(adata, genes)  # scvi-tools': "No reference var names found"
            warn_missing_genes(int((~genes.isin(adata.var_names)).sum()), len(genes), adata, genes)
        with warnings.catch_warnings():  # the padding's concat drops raw, which comes back
            warnings.filterwarnings("ignore", "Only some AnnData objects have `.raw`")
            ready = ArchesMixin.prepare_query_anndata(
                adata, reference_model, return_reference_var_names, inplace
            )
        if not return_reference_var_names:
            _restore(adata if inplace else ready, kept)
        return ready

    @functools.wraps(DeltaModelMixin.train)
    def train(self, *args, **kwargs):
        # A query model with nothing to learn (see load_query_data) returns. load_query_data
        # said so (and that train() returns); a model loaded from its folder has not.
        if self.is_query_model and not self.query_mapping_.get("learning_parameters"):
            if getattr(self, "_nothing_to_learn_said", False):
                logger.info("Query model with nothing to learn: train() returns")
            else:
                warn_user(_nothing_to_learn(self))
            return None
        follow_query(self)  # trains on the query's cells as they are now
        return super().train(*args, **kwargs)

    def _match_genes(self, adata: AnnData) -> AnnData:
        """A query model reads the query's cells with their own genes, aligned to the
        reference's as :meth:`load_query_data` aligned them (missing genes as zeros)."""
        genes = self._training_genes()
        if not self.is_query_model or genes is None:
            return super()._match_genes(adata)
        if pd.Index(adata.var_names.astype(str)).equals(genes):
            return adata
        mapping = self.query_mapping_
        n_missing = int((~genes.isin(adata.var_names.astype(str))).sum())
        with warnings.catch_warnings():
            if n_missing == mapping.get("n_genes_missing"):  # announced when it was mapped
                warnings.filterwarnings("ignore", message=r".*filled with zeros")
            return align_query_genes(
                adata,
                genes,
                mapping.get("min_gene_overlap", 0.5),
                self.registry_["setup_args"].get("layer"),
            )

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        # The user's query is read as the model's own registered copy of it (the same cells,
        # genes aligned): registering the query itself would add scvi-tools' columns to it.
        query = getattr(self, "_query_adata", None)
        if adata is None or adata is query:
            follow_query(self)  # the query subset or replaced in place since: read as it is now
        if adata is not None and adata is query:
            twin = self._adata
            for column in adata.obs.columns.difference(twin.obs.columns):  # e.g. leiden
                # Its dtype kept (categories too): as a numpy array, the column written by
                # write_to_adata differed from the query's, which then read as changed.
                twin.obs[column] = adata.obs[column].array
            adata = twin
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _resolve_adata(self, adata: AnnData | None) -> AnnData:
        if adata is None:
            follow_query(self)
        return super()._resolve_adata(adata)

    def _after_load(self) -> None:
        """A saved query model learns, after loading, only what it learned before saving."""
        super()._after_load()
        if not self.is_query_model:
            return
        new_sizes = _covariate_sizes(self.registry_)
        ref_sizes = self.query_mapping_.get("reference_sizes")
        if ref_sizes is None:  # saved before the sizes were recorded
            ref_sizes = _covariate_sizes(self.registry_, self.query_mapping_["new_categories"])
        learning = _restrict_learning(self.module, ref_sizes, new_sizes)
        self.query_mapping_["learning_parameters"] = learning
