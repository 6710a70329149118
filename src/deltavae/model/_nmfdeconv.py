"""NMFDeconv: cell-type proportions of spatial spots, from a reference or reference-free."""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass

from .._checks import is_number, short_repr
from .._slashes import PROPORTIONS_COLUMNS, warn_slashed
from ..module import NMFDeconvModule
from ..module._gene_order import in_name_order
from ..module._nmfdeconv import INFERENCE
from ..train._convergence import MIN_STEPS
from ..train._stopping import MONITOR, on_validation_cells
from ._base import DeltaModelMixin
from ._genes import align_query_genes, match_read_genes
from ._init_keywords import keyword_hints, setup_hints
from ._load_state import reads_once, saved_state
from ._matrices import column_sums
from ._nmf_reference import FromReferenceMixin
from ._nmf_results import NMFResultsMixin, warn_idle_factors
from ._nmf_start import check_signatures, nmf_start, nnls_start, saved_columns, saved_start
from ._same_spots import rank_prints
from ._save_checks import check_load_arguments
from ._saved import read_saved
from ._spot_index import follow_spots, own_spot_index
from ._spots import SpotModelMixin, spot_rate
from ._training_checks import _is_int
from ._validation import check_model_arguments, warn_user

logger = logging.getLogger(__name__)

_FEW_CELLS = 5
#: Amortised training defaults: spots per step, steps in all, learning rate (the spots per
#: inference minibatch: _nmf_results._INFERENCE_BATCH).
_AMORTIZED_BATCH = 1024
_AMORTIZED_STEPS = 1000
_AMORTIZED_LR = 5e-3
#: Fewest optimiser steps after which reference-free factors that lead no spot are warned about.
_JUDGED = MIN_STEPS // 4


class NMFDeconv(
    NMFResultsMixin, SpotModelMixin, FromReferenceMixin, DeltaModelMixin, BaseModelClass
):
    """Cell-type deconvolution of spot counts by a negative-binomial non-negative factorisation.

    Each spot's counts are NB with mean ``abundance * technology * proportions @ signatures``
    (see :class:`~deltavae.module.NMFDeconvModule`): proportions on the simplex are cell fractions,
    abundance is the number of cells' worth of signal, and a gene-wise technology factor
    absorbs platform differences between reference and spots. Build it from a labelled
    reference with :meth:`from_reference`, or reference-free with ``n_components``
    (initialised from :class:`sklearn.decomposition.NMF`).

    By default (``inference="amortized"``) an encoder maps each spot's counts to its
    proportions: the model trains on minibatches of spots read from memory or from disk
    (:func:`deltavae.read_lazy`), its memory does not grow with the spots, and new spots map
    without refitting (``get_proportions(adata=new_spots)``). ``inference="per_spot"`` keeps
    one proportion vector per training spot as a parameter, started from non-negative least
    squares (the model before amortisation); its read-outs take its training spots, by name
    (spots of those names holding other counts, another slide's, are refused). Prefer it
    where a spot is about one cell (MERFISH, Xenium, Slide-seq beads): there it came closer to
    the truth of one type per spot; on spots of several cells the encoder scores as well or
    better (benchmarks/README.md, Numbers behind the defaults, D19).

    Parameters
    ----------
    adata
        Spots with raw counts, registered with :meth:`setup_anndata` (``spot_index=True`` for
        ``inference="per_spot"``).
    signatures
        Cell types x genes: expected counts of one cell of each type. The model uses the
        spots' genes with a signature above 0 in some type and counts in some spot (a gene
        no spot counts is left out, with a warning). ``None`` for reference-free mode.
    n_components
        Number of factors in reference-free mode (with ``signatures``: ignored, said in a
        warning).
    prior_concentration
        Symmetric Dirichlet concentration of the proportions (1 flat, below 1 sparse);
        default 1 amortised, 0.5 per spot. Below 1 the MAP objective rewards a proportion
        at its floor (1e-5; without it, without bound: a long per-spot fit diverged); an
        encoder moves every spot's logits at once, and scored lower at 0.5 than at 1 (D18
        of benchmarks/README.md, Numbers behind the defaults).
    technology_sd
        Prior standard deviation of the log technology factor.
    nmf_max_iter
        Iterations of scikit-learn's NMF that initialise the reference-free mode.
    inference
        ``"amortized"`` (an encoder) or ``"per_spot"`` (parameters per training spot).
    n_hidden
        Units per hidden layer of the encoder.
    n_layers
        Hidden layers of the encoder.
    start_spots
        Reference-free mode: the NMF start reads at most this many spots (a random
        subsample, seeded by ``scvi.settings.seed`` or 0 while it is unset, when there are
        more).

    Examples
    --------
    >>> import deltavae as dv
    >>> spots, ref = dv.datasets.pseudo_spots(dv.datasets.pbmc3k(), "cell_type", n_spots=200)
    >>> d = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cell_type")
    >>> d.train()  # doctest: +SKIP
    >>> d.get_proportions().sum(axis=1).round(4).unique()  # doctest: +SKIP
    array([1.])
    """

    _per_spot_parameter = ("proportion_logits", 0)  # loads onto its fitted spots only
    _module_cls = NMFDeconvModule

    @property
    def _results_of_fitted_spots(self) -> bool:  # per spot: NaN rows for spots left out
        return not self.module.amortized

    proportions_key = "proportions"
    abundance_key = "cell_abundance"

    @keyword_hints
    def __init__(
        self,
        adata: AnnData,
        signatures: pd.DataFrame | None = None,
        n_components: int | None = None,
        prior_concentration: float | None = None,
        technology_sd: float = 0.5,
        nmf_max_iter: int = 400,
        inference: Literal["amortized", "per_spot"] = "amortized",
        n_hidden: int = 128,
        n_layers: int = 1,
        start_spots: int = 5000,
    ):
        super().__init__(adata)
        if prior_concentration is None:
            prior_concentration = 1.0 if inference == "amortized" else 0.5
        if inference not in INFERENCE:
            raise ValueError(f"inference must be one of {INFERENCE}; got {inference!r}.")
        check_model_arguments(
            {"n_hidden": n_hidden, "n_layers": n_layers, "start_spots": start_spots,
             "nmf_max_iter": nmf_max_iter},
            positive={"prior_concentration": prior_concentration, "technology_sd": technology_sd},
        )  # fmt: skip
        per_spot = inference == "per_spot"
        if per_spot and REGISTRY_KEYS.INDICES_KEY not in self.adata_manager.data_registry:
            raise ValueError(
                "inference='per_spot' looks each spot's parameters up by its row: register "
                "the spots with NMFDeconv.setup_anndata(adata, spot_index=True)."
            )
        proportions = abundance = None
        saved = saved_state(self)  # a load: the saved parameters replace any start
        if signatures is None:
            whole = isinstance(n_components, int | np.integer)
            whole = whole and not isinstance(n_components, bool)
            if not whole or n_components < 2:  # "3" failed on <, 3.0 in scikit-learn's NMF
                raise ValueError(
                    "Reference-free NMFDeconv needs an integer n_components >= 2 (or pass "
                    "signatures / use NMFDeconv.from_reference); got n_components="
                    f"{short_repr(n_components)}."
                )
            read = min(adata.n_obs, start_spots)  # the spots NMF's start factorises
            most = min(read, adata.n_vars)  # NMF's start finds at most
            if n_components > most and saved is None:
                spots, more = f"{read} spots", ""
                if read < adata.n_obs:  # start_spots left spots out
                    spots += f" (start_spots={start_spots} of the {adata.n_obs})"
                    if n_components <= min(adata.n_obs, adata.n_vars):
                        more = f", or start_spots={n_components} or more"
                raise ValueError(
                    f"n_components={n_components} is more factors than the NMF start can find"
                    f" in {spots} x {adata.n_vars} genes: at most {most}, the smaller of the"
                    f" spots and the genes it reads. Pass n_components={most} or fewer{more}."
                )
            columns = np.arange(adata.n_vars)
            if saved is not None:
                names, sig, proportions, abundance = saved_start(saved)
            else:
                rows = self._sample_rows(start_spots)
                names, sig, proportions, abundance = nmf_start(
                    self._read_rows(rows), n_components, nmf_max_iter
                )
                if per_spot and len(rows) < adata.n_obs:
                    proportions, abundance = nnls_start(self._row_chunks(), sig)
        else:
            counted = None if saved is not None else lambda: column_sums(self._counts()) > 0
            names, sig, columns = check_signatures(signatures, adata, counted)
            if saved is None:  # a load was said at its fit
                fix = "signatures.index = signatures.index.str.replace('/', '-')"
                warn_slashed(names, "cell types", PROPORTIONS_COLUMNS, fix)
            if saved is None and n_components is not None:  # fitted as if never given
                warn_user(
                    f"n_components={short_repr(n_components)} is ignored: the signatures give "
                    f"the model its {len(names)} cell types. n_components is the number of "
                    "factors of the reference-free mode (NMFDeconv without signatures)."
                )
            if saved is not None:  # the genes the saved model read
                columns, sig = saved_columns(columns, sig, saved)
            if per_spot and saved is not None:
                proportions, abundance = saved_start(saved)[2:]
            elif per_spot:
                proportions, abundance = nnls_start(self._row_chunks(columns), sig)
        self.cell_types_ = names
        in_order = np.array_equal(columns, np.arange(adata.n_vars))  # all, in the spots' order
        self.module = self._module_cls(
            n_spots=adata.n_obs,
            n_genes=len(columns),
            signatures=torch.as_tensor(sig),
            init_proportions=None if proportions is None else torch.as_tensor(proportions),
            init_abundance=None if abundance is None else torch.as_tensor(abundance),
            learn_signatures=signatures is None,
            prior_concentration=prior_concentration,
            technology_sd=technology_sd,
            inference=inference,
            gene_index=None if in_order else torch.as_tensor(columns),
            n_hidden=n_hidden,
            n_layers=n_layers,
        )
        if inference == "amortized":  # the same start for the genes in any order
            in_name_order(self.module.encoder, adata.var_names[columns])
        mode = "reference-free" if signatures is None else "reference"
        summary = (
            f"NMFDeconv ({mode}, {inference}): {len(names)} cell types, {adata.n_obs} spots, "
            f"{len(columns)} of {adata.n_vars} genes"
        )
        self._finish_init(summary, locals())

    # ------------------------------------------------------------------------- setup
    @classmethod
    @setup_hints("NMFDeconv")
    def setup_anndata(
        cls, adata: AnnData, layer: str | None = None, spot_index: bool = False, **kwargs
    ) -> None:
        """Register the spots' raw counts (checked first, a chunk of rows at a time).

        Parameters
        ----------
        adata
            The spots to deconvolve, spots x genes, raw counts, in memory or opened with
            :func:`deltavae.read_lazy` (the single-cell reference goes to
            :meth:`from_reference`).
        layer
            Layer with the spots' counts; ``None`` for ``adata.X``.
        spot_index
            Also register each spot's row (``obs["_indices"]``, added to ``adata``), which
            ``inference="per_spot"`` looks its parameters up by.

        Examples
        --------
        >>> dv.model.NMFDeconv.setup_anndata(spots)  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._register_spots(adata, layer, setup_method_args, spot_index=spot_index, **kwargs)

    # ------------------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        train_size: float = 1.0,
        **kwargs,
    ):
        """Fit by MAP on minibatches of spots.

        Parameters
        ----------
        max_epochs
            Passes through the spots; default ``"per_spot"`` 1,000, amortised enough passes
            for about 1,000 steps (at least 2, at most 1,000).
        lr
            Adam learning rate; default 0.02 per spot, 0.005 amortised.
        batch_size
            Spots per step; default all of them up to 2,048 per spot, up to 1,024 amortised.
        train_size
            Fraction of spots trained on; below 1 (amortised only) the rest give the
            validation ELBO (``early_stopping`` on a validation metric, its default
            ``validation_loss``, needs them). Every spot gets proportions.
        **kwargs
            Passed to the shared training loop, :meth:`deltavae.model.ZINBVAE.train`
            (``shuffle_block_size``, ``accelerator``, Lightning trainer arguments ...).

        Examples
        --------
        >>> d.train(max_epochs=500)  # doctest: +SKIP
        """
        if not self.module.amortized:  # the spots given, changed in place since: as they are
            follow_spots(self)
        n_spots = self.adata.n_obs
        if self.module.amortized:
            batch_size = min(n_spots, _AMORTIZED_BATCH) if batch_size is None else batch_size
            # A bad batch_size is refused by the shared checks below, with its value named.
            steps_per_epoch = (
                max(1, n_spots // batch_size) if _is_int(batch_size) and batch_size > 0 else 1
            )
            if max_epochs is None:
                max_epochs = min(1000, max(2, -(-_AMORTIZED_STEPS // steps_per_epoch)))
            lr = spot_rate(lr, kwargs, _AMORTIZED_LR, self.module)
        else:
            monitor = kwargs.get("early_stopping_monitor", MONITOR)
            validated = kwargs.get("early_stopping") is True and on_validation_cells(monitor)
            if not is_number(train_size) or not 0 < train_size <= 1:
                raise ValueError(
                    f"train_size must lie in (0, 1], the fraction of spots trained on, and "
                    "inference='per_spot' takes only train_size=1.0 (the default: every spot "
                    f"fits its own parameters); got train_size={short_repr(train_size)}."
                )
            if train_size != 1.0 or validated:
                asked = f"train_size={train_size}" if train_size != 1.0 else "early_stopping"
                raise ValueError(
                    "inference='per_spot' fits each spot's own parameters, so every spot must "
                    f"train (train_size=1.0) and none is left to validate; got {asked}. Use "
                    "inference='amortized' to hold spots out for validation, or stop early on "
                    "the training ELBO (early_stopping_monitor='elbo_train')."
                )
            batch_size = min(n_spots, 2048) if batch_size is None else batch_size
            max_epochs = 1000 if max_epochs is None else max_epochs
            lr = spot_rate(lr, kwargs, 0.02, self.module)
        kwargs.setdefault("enable_checkpointing", False)
        kwargs.setdefault("log_every_n_steps", 1)
        kwargs.setdefault("n_epochs_kl_warmup", None)  # train_args_ repeats it: no TypeError
        out = super().train(
            max_epochs=max_epochs, lr=lr, batch_size=batch_size, train_size=train_size, **kwargs
        )
        if not self.module.amortized:  # its parameters are of these counts (check_fitted_ranks)
            layer = self.registry_["setup_args"]["layer"]
            self.spot_ranks_ = rank_prints(self.adata, layer, self._read_columns())
        steps = max_epochs * max(1, n_spots // batch_size)  # both checked by the run
        # Reference-free, after a run long enough to judge (1 step: one factor led every spot),
        # unless its verdict asks to train again: "fit fewer factors, e.g. n_components=1"
        # followed it, of factors run off at lr=5 and of factors that barely moved at 1e-7.
        again = self.__dict__.get("_train_again")
        free = isinstance(self.module.log_signatures, torch.nn.Parameter)
        if free and steps >= _JUDGED and not again:
            proportions, _, _, empty = self._infer(None, None)
            proportions = proportions[~empty]  # a spot without counts leads nothing
            warn_idle_factors(proportions / proportions.sum(1, keepdims=True), self.cell_types_)
        return out

    @classmethod
    def _spots_to_load(cls, adata, attr_dict: dict, state_dict: dict):
        """Per spot: the fitted spots (:func:`fitted_spots`), each spot's row on an AnnData
        of the model's own (:func:`own_spot_index`), not written into the spots given."""
        fitted = super()._spots_to_load(adata, attr_dict, state_dict)
        per_spot = cls._per_spot_parameter[0] in state_dict
        return own_spot_index(fitted) if per_spot and fitted is adata else fitted

    # ------------------------------------------------------------------------- results
    def used_genes(self) -> pd.Index:
        """The spots' genes the model reads (signature genes; the markers from a reference).

        Examples
        --------
        >>> d.used_genes()[:5]  # doctest: +SKIP
        """
        index = self.module.gene_index
        names = self.adata.var_names
        return names if index is None else names[index.cpu().numpy()]

    @classmethod
    @reads_once  # the model file read from disk once
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> NMFDeconv:
        """Load a saved model, checking the file and the genes first.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            Spots with the training genes, or with those the model reads (:meth:`used_genes`;
            the others zeros on a copy); in memory with the training genes in another order,
            they are put in the training order on a copy, with a warning (``adata`` gets the
            results of ``write_to_adata``). ``inference="per_spot"`` loads onto its own
            spots, by name. A view (``spots[mask]``) is copied into memory. ``None`` uses the
            AnnData saved with the model.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ``backup_url``: where to download a missing model file).

        Examples
        --------
        >>> d = dv.model.NMFDeconv.load("nmf_model/", spots)  # doctest: +SKIP
        """
        dir_path, adata = check_load_arguments(cls, dir_path, adata, kwargs)
        if adata is not None:
            url, prefix = kwargs.get("backup_url"), kwargs.get("prefix")
            attr_dict, var_names, state = read_saved(cls, dir_path, prefix, backup_url=url)
            genes = pd.Index(np.asarray(var_names).astype(str))
            names = pd.Index(adata.var_names.astype(str))
            index = state.get("gene_index")
            if index is not None and not names.equals(genes):
                used = genes[np.asarray(index.cpu())]
                if len(used.difference(names)) == 0 and len(genes.difference(names)):
                    layer = attr_dict["registry_"]["setup_args"].get("layer")
                    warn_user(
                        f"adata lacks {len(genes.difference(names))} of the model's "
                        f"{len(genes)} genes, none of which it reads: the model holds a copy "
                        "with them as zeros (adata itself is unchanged). Write results into "
                        "adata with model.write_to_adata(adata)."
                    )
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=r".*filled with zeros")
                        adata = align_query_genes(adata, genes, 0.0, layer)
        with warnings.catch_warnings():  # said when the model was built
            warnings.filterwarnings("ignore", message=r"spots and signatures share only")
            return super().load(dir_path, adata=adata, **kwargs)

    def _match_genes(self, adata: AnnData) -> AnnData:
        """New spots need the genes the model reads (:meth:`used_genes`), by name and in any
        order (see :func:`match_read_genes`)."""
        layer = self.registry_["setup_args"]["layer"]
        return match_read_genes(adata, self._training_genes(), self._read_columns(), layer)

    def _read_columns(self) -> np.ndarray | None:
        """The columns of the model's genes it reads (the reference's markers among them),
        ``None`` where it reads them all."""
        index = self.module.gene_index
        return None if index is None else index.cpu().numpy()

    def get_signatures(self) -> pd.DataFrame:
        """Cell types x genes, expected counts per cell (learned ones in reference-free mode).

        Examples
        --------
        >>> d.get_signatures().loc["B"].nlargest(5)  # doctest: +SKIP
        """
        if isinstance(self.module.log_signatures, torch.nn.Parameter):
            # Learned (reference-free): nothing to read before training. From a reference
            # they are the reference's, known from the start.
            self._check_if_trained(warn=False)
        with torch.no_grad():
            values = self.module.signatures().cpu().numpy().astype(np.float64)
        return pd.DataFrame(values, index=self.cell_types_, columns=self.used_genes())

    def get_technology_factor(self) -> pd.Series:
        """Gene-wise factor between the spots' and the reference's measurement of a gene.

        Examples
        --------
        >>> d.get_technology_factor().sort_values().head()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        with torch.no_grad():
            values = torch.exp(self.module.log_technology).cpu().numpy().astype(np.float64)
        return pd.Series(values, index=self.used_genes(), name="technology_factor")
