"""SpatialImputer: expression of the genes a spatial assay did not measure, from a reference."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass

from .._anndata_or_folder import check_anndata
from .._checks import (
    check_labels,
    check_seed,
    dense,
    layer_matrix,
    refuse_countless_reference,
    refuse_minified,
)
from .._numbered_obs import refuse_numbered_tables
from .._renamed import foreign_keywords
from .._slashes import MESSAGE_START, warn_imputer_names
from ..module import ImputerDeconvolutionModule, ImputerLatentModule
from ._base import DeltaModelMixin
from ._few_cell_genes import record_few_cell_genes
from ._genes import _refuse_duplicates
from ._imputer_cross_val import ImputerCrossValMixin
from ._imputer_reference import (
    check_design,
    check_first_spots,
    check_shared,
    cluster_states,
    neighbour_cells,
    reference_genes,
    refuse_silent_states,
    spots_argument,
    state_profiles,
    warn_uncounted_panel,
)
from ._imputer_results import ImputerResultsMixin
from ._init_keywords import check_passed_on, keyword_hints, setup_hints
from ._load_state import reads_once, saved_state
from ._matrices import cells_counting, column_sums, memory_copy, row_sums, to_memory
from ._nmf_reference import warn_empty_reference_cells, warn_small_types
from ._nmf_start import keep_uncounted
from ._placeholder_labels import warn_placeholder_labels
from ._query_source import keep_write_target, warn_training_other_spots
from ._reference_labels import check_reference_labels
from ._reference_reads import counts_in_memory, in_chunks, type_profiles
from ._save_checks import check_load_arguments
from ._saved import read_saved
from ._spots import SpotModelMixin, spot_rate, spots_named, spots_to_load
from ._training_checks import check_flag
from ._validation import (
    _matrix,
    check_data,
    check_flags,
    check_model_arguments,
    refuse_numeric_names,
)

logger = logging.getLogger(__name__)

#: Spots imputed at a time without batch_size (see ImputerResultsMixin.impute).
_CHUNK = 4096
#: What reference cells without counts do to each design (warned by from_reference).
_EMPTY_CELLS = {
    "deconvolution": "they lower their state's mean profile, and so the genes imputed from it",
    "latent": "the decoder learns them as cells of no expression",
}


class SpatialImputer(
    ImputerCrossValMixin, ImputerResultsMixin, SpotModelMixin, DeltaModelMixin, BaseModelClass
):
    """Expected expression of every reference gene in every spot, from the genes it measured.

    Spots (Visium, Slide-seq, MERFISH, Xenium ...) measure a subset of the genes of a
    single-cell reference. Two designs (the modules
    :class:`~deltavae.module.ImputerDeconvolutionModule` and
    :class:`~deltavae.module.ImputerLatentModule`):

    * ``"deconvolution"`` (default): each spot is an NB mixture of reference state profiles
      (cell types, or clusters of an unlabelled reference), fitted on the measured genes with
      a gene-wise platform factor; the same mixture of the full profiles gives every gene.
      With ``profiles="neighbours"`` (default) each state's profile is the spot's own: an
      average of that state's reference cells weighted by their likeness to the spot.
    * ``"latent"``: one encoder maps reference cells and spots into a joint latent space and
      a decoder, trained on the reference's counts of every gene, reads out all genes.

    On the benchmark of Li et al. 2022 (benchmarks/README.md, "Gene imputation") the
    deconvolution design had the higher median per-gene PCC on the four RCTD spatial and
    reference pairs, so it is the default. Build the model with :meth:`from_reference`.

    How well it imputes on given data: :meth:`cross_validate` (k-fold over the shared genes).
    Read-outs: :meth:`impute` (either design); :meth:`get_proportions` and
    :meth:`get_abundance` (deconvolution, as NMFDeconv's); :meth:`get_latent_representation`
    (latent: the spots', or the reference cells'). :meth:`write_to_adata` writes the imputed
    genes and, by design, the proportions and abundance or the latent.

    Parameters
    ----------
    adata
        Spots with raw counts on genes of the reference, registered with :meth:`setup_anndata`.
    reference
        Reference rows x genes, raw counts on the reference's scale: expected counts of one
        cell per state (``"deconvolution"``), or the single cells (``"latent"``). Its genes
        are the ones the model imputes; they must include every gene of ``adata``.
    design
        ``"deconvolution"`` or ``"latent"``.
    profiles
        What the deconvolution mixes to impute a spot: ``"neighbours"`` (default), for every
        state an average of its single cells (``cells``) weighted by
        ``softmax(correlation / temperature)`` over the state's cells, the correlation being
        of the log-normalised visible genes of the spot and the cell; or ``"type"``, the state
        means (``reference``). The proportions are fitted with the state means either way.
        On the benchmark, neighbours imputed better on single-cell spots (MERFISH) and on
        Slide-seq, a little worse on Visium (benchmarks/README.md, "Gene imputation").
    cells
        Reference single cells x the reference's genes, raw counts: needed by
        ``profiles="neighbours"`` (:meth:`from_reference` passes them), with ``cell_states``.
        They are held in memory (dense) and saved with the model.
    cell_states
        The state (a row name of ``reference``) of each of ``cells``.
    temperature
        Temperature of the neighbour weights, > 0: small values weigh the most alike cells.
    technology_sd
        Prior standard deviation of the log gene-wise platform factor.
    n_latent, n_hidden, n_layers, dropout_rate
        Network sizes (latent design).

    Examples
    --------
    >>> import deltavae as dv
    >>> data = dv.datasets.synthetic_counts(n_cells=300, n_genes=80, n_clusters=3, seed=0)
    >>> ref, spots = data[:150].copy(), data[150:, :60].copy()
    >>> imputer = dv.model.SpatialImputer.from_reference(spots, reference=ref, labels_key="cluster")
    >>> imputer.train(max_epochs=50, enable_progress_bar=False)  # short: the default 400 converge
    >>> imputer.impute().shape  # the 20 genes the spots did not measure
    (150, 20)
    >>> imputer.write_to_adata(spots)
    ['obsm/imputed', 'obsm/proportions', 'obs/cell_abundance']
    """

    _per_spot_parameter = ("log_concentration", 0)  # the deconvolution design
    _writes_own_genes = True  # write_to_adata takes the spots with any genes itself
    _module_cls = ImputerDeconvolutionModule
    _results_of_fitted_spots = True  # write_to_adata: NaN rows for spots left out of the fit
    imputed_key = "imputed"

    @keyword_hints
    def __init__(
        self,
        adata: AnnData,
        reference: pd.DataFrame,
        design: Literal["deconvolution", "latent"] = "deconvolution",
        profiles: Literal["neighbours", "type"] = "neighbours",
        cells: pd.DataFrame | None = None,
        cell_states=None,
        temperature: float = 0.1,
        technology_sd: float = 0.5,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
    ):
        super().__init__(adata)
        check_design(design, profiles)
        sizes = {"n_latent": n_latent, "n_hidden": n_hidden, "n_layers": n_layers}
        positive = {"temperature": temperature, "technology_sd": technology_sd}
        check_model_arguments(sizes, dropout_rate, positive)  # torch's errors named no argument
        if not isinstance(reference, pd.DataFrame):
            raise TypeError(
                "reference must be a DataFrame (rows x genes, gene names as columns); build the "
                "model with SpatialImputer.from_reference(spots, reference=adata)."
            )
        genes = pd.Index(reference.columns.astype(str))
        fix = "e.g. reference.T.groupby(level=0).mean().T, or name them apart"
        _refuse_duplicates(genes, "reference", fix)
        visible = genes.get_indexer(adata.var_names.astype(str))
        if (visible < 0).any():
            unknown = adata.var_names[visible < 0]
            raise ValueError(
                f"{len(unknown)} of the spots' genes are not reference genes (e.g. "
                f"{unknown[:5].tolist()}); use from_reference, which keeps the shared genes."
            )
        values = np.asarray(reference.to_numpy(), dtype=np.float32)
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("reference must hold finite, non-negative counts.")
        # The module reads these float32 values; init_params_ (saved, and what load rebuilds the
        # model from) holds the same memory, not an integer or float64 copy besides.
        reference = pd.DataFrame(values, index=reference.index, columns=genes, copy=False)
        self.design_ = design
        self.reference_genes_ = genes
        self._silent_genes = genes[values.sum(axis=0) == 0]  # impute() says they are no estimate
        self.state_names_ = pd.Index(reference.index.astype(str))
        self.profiles_ = profiles if design == "deconvolution" else None
        if saved_state(self) is None:  # a load was said at its fit
            states = self.state_names_ if design == "deconvolution" else None
            warn_imputer_names(states, genes, adata.var_names)
        if self.profiles_ == "neighbours" and cells is None:
            raise ValueError(
                "profiles='neighbours' needs the reference's cells and cell_states "
                "(SpatialImputer.from_reference passes them); or use profiles='type'."
            )
        if design == "deconvolution":
            if saved_state(self) is None:  # a load rebuilds what was built
                refuse_silent_states(values[:, visible], self.state_names_, len(visible))
            neighbours = neighbour_cells(cells, cell_states, genes, self.state_names_)
            self.module = ImputerDeconvolutionModule(
                adata.n_obs, torch.as_tensor(values), torch.as_tensor(visible), technology_sd,
                *(neighbours if profiles == "neighbours" else (None, None)), temperature,
            )  # fmt: skip
        else:
            self.module = ImputerLatentModule(
                adata.n_obs, torch.as_tensor(values), torch.as_tensor(visible),
                n_latent, n_hidden, n_layers, dropout_rate, technology_sd,
            )  # fmt: skip
        if saved_state(self) is None:  # a load restores the saved mask and abundances
            counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            counted = column_sums(counts) > 0
            off = adata.var_names[~counted].tolist()  # left out, unless a state needs them
            states = self.state_names_
            if design == "deconvolution" and keep_uncounted(
                values[:, visible], counted, states, off, "reference states"
            ):
                counted[:] = True
            elif counted.any():  # none counted: every spot's results are NaN rows (said)
                warn_uncounted_panel(off, adata.n_vars)
            self.module.counted.copy_(torch.as_tensor(counted))
            if design == "deconvolution":  # from the genes the likelihood reads (counted)
                self.module.start_abundance(torch.as_tensor(row_sums(counts)))
        summary = (
            f"SpatialImputer ({design}): {adata.n_obs} spots measuring {adata.n_vars} of "
            f"{len(genes)} reference genes, {len(reference)} reference "
            f"{'states' if design == 'deconvolution' else 'cells'}"
        )
        self._finish_init(summary, locals())

    # ------------------------------------------------------------------------- setup
    @classmethod
    @setup_hints("SpatialImputer")
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs) -> None:
        """Register the spots' raw counts (and a spot index, ``obs["_indices"]``).

        :meth:`from_reference` calls it on a copy of the spots reduced to the shared genes.

        Parameters
        ----------
        adata
            Spots x genes (genes of the reference only), raw counts.
        layer
            Layer with the counts; ``None`` for ``adata.X``.

        Examples
        --------
        >>> dv.model.SpatialImputer.setup_anndata(spots)  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._register_spots(adata, layer, setup_method_args, spot_index=True, **kwargs)

    @classmethod
    @foreign_keywords(random_state="seed")
    def from_reference(
        cls,
        spots: AnnData | None = None,
        reference: AnnData | None = None,
        labels_key: str | None = "cell_type",
        design: Literal["deconvolution", "latent"] = "deconvolution",
        profiles: Literal["neighbours", "type"] = "neighbours",
        layer: str | None = None,
        reference_layer: str | None = None,
        n_states: int = 30,
        min_shared_genes: int = 10,
        seed: int = 0,
        spatial: AnnData | None = None,
        **model_kwargs,
    ) -> SpatialImputer:
        """Build the model from spots and a single-cell reference, matching genes by name.

        The spots keep the genes they share with the reference and that it counts, in its
        order (the spots' own gene order does not matter), on a copy: ``spots`` is unchanged
        until :meth:`write_to_adata`, which writes into it by default (into the model's copy
        when ``spots`` is a view). The reference's genes are the ones that can be imputed,
        less the spots' genes it never counts (no reference state explains them; the spots
        measured them). Spots' genes no spot counts are left out of the fit (warned), and
        :meth:`impute` gives them only when named; to impute them as unmeasured, drop them
        first (``sc.pp.filter_genes(spots, min_cells=1)``).

        Parameters
        ----------
        spots
            Spots x genes with raw counts (any genes; those not in the reference are unused),
            or a view of them (``spots[mask]``); named as :meth:`NMFDeconv.from_reference`'s.
        reference
            Single cells x genes with raw counts; on disk (backed, :func:`deltavae.read_lazy`)
            or in dask arrays, its counts are read into memory (a warning gives the size above
            1 GiB; the neighbours' and the latent design's cells are held dense too).
        labels_key
            obs column of ``reference`` with cell types, whose mean profiles the
            deconvolution mixes; ``None`` clusters the reference into ``n_states`` states
            instead (k-means on log-normalised counts). Unused by the latent design.
        design
            ``"deconvolution"`` (default) or ``"latent"`` (see :class:`SpatialImputer`).
        profiles
            ``"neighbours"`` (default) or ``"type"`` (see :class:`SpatialImputer`).
        layer
            Layer with the spots' counts (``None``: ``X``).
        reference_layer
            Layer with the reference's counts (``None``: ``X``).
        n_states
            Clusters of an unlabelled reference (``labels_key=None``).
        min_shared_genes
            Fewest shared genes accepted.
        seed
            Seed of the clustering of an unlabelled reference, in [0, 2**32 - 1].
        spatial
            The earlier name of ``spots``, still read, with a FutureWarning; pass ``spots``.
        **model_kwargs
            Passed to :class:`SpatialImputer`.

        Returns
        -------
        SpatialImputer

        Examples
        --------
        >>> imputer = dv.model.SpatialImputer.from_reference(spots, reference=ref)  # doctest: +SKIP
        """
        check_passed_on(cls, cls.from_reference, model_kwargs)  # before the reference is read
        check_seed(seed)  # "0": scikit-learn's KMeans named random_state
        check_design(design, profiles)
        spots = given = spots_argument(spots, spatial)
        for name, data in (("spots", spots), ("reference", reference)):
            if isinstance(data, str | os.PathLike):  # a file's name: how to read it
                check_anndata(data, name, call="SpatialImputer.from_reference(spots, reference)")
            if not isinstance(data, AnnData):  # a table of profiles: SpatialImputer(...) itself
                raise TypeError(f"{name} must be an AnnData; got {type(data).__name__}.")
            _refuse_duplicates(pd.Index(data.var_names.astype(str)), name)
            refuse_numbered_tables(data, name)  # anndata reads or copies it no further
        refuse_numeric_names(spots, "spots")  # subset below: anndata's obscure TypeError
        _matrix(spots, layer, "spots")  # a missing layer is named before the reference work
        check_first_spots(spots, layer)  # as is: normalised spots named so before the reference
        refuse_minified(spots, "spots")
        refuse_minified(reference, "reference")
        if design == "deconvolution" and labels_key is not None:  # before its counts are read
            check_reference_labels(spots, reference, labels_key, "SpatialImputer.from_reference")
        # On disk or dask: checked a chunk of rows at a time.
        check_data(reference, reference_layer, kind="counts", name="reference", warn_empty=False)
        refuse_countless_reference(reference, reference_layer)
        warn_empty_reference_cells(reference, reference_layer, _EMPTY_CELLS[design])
        if in_chunks(reference, design, profiles, labels_key):  # nothing of it read whole
            labels = check_labels(reference, labels_key)
            warn_placeholder_labels(reference, labels_key, "profile")
            warn_small_types(labels, "profiles")
            read = type_profiles(reference, reference_layer, labels, spots)
            rows, ref_genes, shared, counting = read  # and each gene's cells with counts
            check_shared(spots, reference, shared, ref_genes, min_shared_genes)
        else:
            reference = counts_in_memory(  # on disk or dask: its counts only, size warned
                reference,
                reference_layer,
                "SpatialImputer.from_reference",
                dense_cells=design == "latent" or profiles == "neighbours",
            )
            counts, ref_genes, shared = reference_genes(
                layer_matrix(reference, reference_layer), reference.var_names, spots.var_names
            )
            check_shared(spots, reference, shared, ref_genes, min_shared_genes)
            logger.info("%d shared genes with reference counts", len(shared))
            counting = cells_counting(counts)
            cells = None  # the single cells: the latent design's rows, or the neighbours
            if design == "latent" or profiles == "neighbours":  # float32, as the module reads
                cells = pd.DataFrame(
                    dense(counts, np.float32),
                    index=reference.obs_names.astype(str),
                    columns=ref_genes,
                )
            rows = cells
            if design == "deconvolution":
                if labels_key is not None:
                    labels = check_labels(reference, labels_key)
                    warn_placeholder_labels(reference, labels_key, "profile")
                    warn_small_types(labels, "profiles")
                else:
                    labels = cluster_states(counts, n_states, seed)
                if profiles == "neighbours":
                    model_kwargs.update(cells=cells, cell_states=np.asarray(labels).astype(str))
                rows = state_profiles(counts, labels, ref_genes)
        if spots.isbacked and spots.is_view:  # anndata indexes a backed view no further
            spots = to_memory(spots)
        spots = spots[:, shared.to_numpy()]
        spots = memory_copy(spots)
        with warnings.catch_warnings():  # genes no spot counts: said by the model, with more
            warnings.filterwarnings("ignore", message=r".*genes in .* are zero in every")
            with spots_named():  # its errors say spots.X, not adata.X
                cls.setup_anndata(spots, layer=layer)
        states = rows.index if design == "deconvolution" else None
        warn_imputer_names(states, rows.columns, shared, labels_key, from_reference=True)
        with warnings.catch_warnings():  # said above, of the reference's labels and genes
            warnings.filterwarnings("ignore", message=MESSAGE_START)
            model = cls(spots, reference=rows, design=design, profiles=profiles, **model_kwargs)
        model.reference_layer_ = reference_layer  # saved: impute's advice drops genes by it
        record_few_cell_genes(model, counting, ref_genes, reference.n_obs)  # said by impute
        if not given.is_view:  # results go into the spots given, not the model's copy (as load)
            keep_write_target(model, given)  # and read-outs follow them (spots_now)
        return model

    # ------------------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        **kwargs,
    ):
        """Fit on every spot (no validation split: spots have their own parameters).

        Parameters
        ----------
        max_epochs
            Passes through the spots; default 400 (deconvolution) or 200 (latent).
        lr
            Adam learning rate; default 0.05 (deconvolution) or 0.005 (latent).
        batch_size
            Spots per step; default all of them up to 2,048 (deconvolution) or 128 (latent).
        **kwargs
            Passed to the shared training loop, :meth:`deltavae.model.ZINBVAE.train`
            (``accelerator``, Lightning trainer arguments ...).

        Examples
        --------
        >>> imputer.train(max_epochs=400)  # doctest: +SKIP
        """
        deconvolution = self.design_ == "deconvolution"
        max_epochs = (400 if deconvolution else 200) if max_epochs is None else max_epochs
        lr = spot_rate(lr, kwargs, 0.05 if deconvolution else 0.005, self.module)
        if batch_size is None:
            batch_size = min(self.adata.n_obs, 2048) if deconvolution else 128
        # Replaced by False below: "False" (or "True") was taken without a word.
        check_flags(**{k: kwargs[k] for k in ("early_stopping",) if k in kwargs})
        if "restore_best" in kwargs:
            check_flag(kwargs["restore_best"], "restore_best")
        held_out = [k for k in ("restore_best", "early_stopping") if kwargs.get(k) in (True,)]
        sizes = {"train_size": (None, 1.0), "validation_size": (None, 0.0)}  # all train
        held_out += [k for k, whole in sizes.items() if kwargs.get(k) not in whole]
        held_out += [k for k in kwargs if k.startswith("early_stopping_")]  # ignored: said
        if held_out:
            raise ValueError(
                f"SpatialImputer fits every spot and holds none out for validation, so "
                f"{', '.join(held_out)} cannot apply; leave them out."
            )
        kwargs.setdefault("enable_checkpointing", False)
        kwargs.setdefault("log_every_n_steps", 1)
        if deconvolution:
            kwargs.setdefault("n_epochs_kl_warmup", None)
            # Every spot has its own parameters, whose gradients (the ELBO is per spot) are
            # small: Adam's usual eps=0.01 would all but freeze them.
            kwargs["plan_kwargs"] = {"eps": 1e-8, **(kwargs.get("plan_kwargs") or {})}
        kwargs.update(train_size=1.0, restore_best=False, early_stopping=False)
        warn_training_other_spots(self)  # the spots given, subset in place since: said
        return super().train(max_epochs=max_epochs, lr=lr, batch_size=batch_size, **kwargs)

    # ------------------------------------------------------------------------- load
    @classmethod
    @reads_once  # the model file read from disk once
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> SpatialImputer:
        """Load a saved model; ``adata`` may be the spots with any genes (matched by name).

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            The spots; their genes are reduced to the model's (on a copy). The deconvolution
            design fits parameters per spot: it loads onto its own spots only, which are put
            back in the fitted order by name; a view (``spots[mask]``) too, on a copy.
            ``None`` uses the AnnData saved with the model (``save(..., save_anndata=True)``).
        **kwargs
            Passed to :meth:`deltavae.model.ZINBVAE.load`.
        """
        dir_path, adata = check_load_arguments(cls, dir_path, adata, kwargs)
        given = adata
        if adata is not None:
            url = kwargs.get("backup_url")
            _, var_names, _ = read_saved(cls, dir_path, kwargs.get("prefix"), backup_url=url)
            adata = spots_to_load(adata, var_names)
        model = super().load(dir_path, adata=adata, **kwargs)
        if given is not None and model.adata is not given:  # a copy: results go into given
            keep_write_target(model, given)
        return model
