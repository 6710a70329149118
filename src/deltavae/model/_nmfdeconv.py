"""NMFDeconv: cell-type proportions of spatial spots, from a reference or reference-free."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField
from scvi.model.base import BaseModelClass

from .._checks import check_labels, dense, layer_matrix
from ..module import NMFDeconvModule
from ._backed import writes_backed
from ._base import DeltaModelMixin
from ._nmf_start import check_signatures, nmf_start, nnls_start
from ._validation import check_data

logger = logging.getLogger(__name__)

_INDEX_COLUMN = "_indices"
_FEW_SHARED_GENES = 100
_FEW_CELLS = 5


class NMFDeconv(DeltaModelMixin, BaseModelClass):
    """Cell-type deconvolution of spot counts by a negative-binomial non-negative factorisation.

    Each spot's counts are NB with mean ``abundance * technology * proportions @ signatures``
    (see :mod:`deltavae.module._nmfdeconv`): proportions on the simplex are cell fractions,
    abundance is the number of cells' worth of signal, and a gene-wise technology factor
    absorbs platform differences between reference and spots. Build it from a labelled
    reference with :meth:`from_reference`, or reference-free with ``n_components``
    (initialised from :class:`sklearn.decomposition.NMF`).

    Parameters
    ----------
    adata
        Spots with raw counts, registered with :meth:`setup_anndata`.
    signatures
        Cell types x genes (the AnnData's genes, in order): expected counts of one cell of
        each type. ``None`` for reference-free mode.
    n_components
        Number of factors in reference-free mode (ignored with ``signatures``).
    prior_concentration
        Symmetric Dirichlet concentration of the proportions (1 flat, below 1 sparse).
    technology_sd
        Prior standard deviation of the log technology factor.
    nmf_max_iter
        Iterations of scikit-learn's NMF that initialise the reference-free mode.

    Examples
    --------
    >>> import deltavae as dv
    >>> spots, ref = dv.datasets.pseudo_spots(dv.datasets.pbmc3k(), "cell_type", n_spots=200)
    >>> d = dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cell_type")
    >>> d.train()  # doctest: +SKIP
    >>> d.get_proportions().sum(axis=1).round(4).unique()  # doctest: +SKIP
    array([1.])
    """

    _module_cls = NMFDeconvModule
    proportions_key = "proportions"
    abundance_key = "cell_abundance"

    def __init__(
        self,
        adata: AnnData,
        signatures: pd.DataFrame | None = None,
        n_components: int | None = None,
        prior_concentration: float = 0.5,
        technology_sd: float = 0.5,
        nmf_max_iter: int = 400,
    ):
        super().__init__(adata)
        if prior_concentration <= 0 or technology_sd <= 0:
            raise ValueError(
                f"prior_concentration and technology_sd must be > 0; got {prior_concentration}, "
                f"{technology_sd}."
            )
        counts = dense(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        if signatures is None:
            if n_components is None or n_components < 2:
                raise ValueError(
                    "Reference-free NMFDeconv needs n_components >= 2 (or pass signatures / use "
                    f"NMFDeconv.from_reference); got n_components={n_components!r}."
                )
            if n_components > adata.n_obs:
                raise ValueError(
                    f"n_components={n_components} exceeds the number of spots ({adata.n_obs})."
                )
            names, sig, proportions, abundance = nmf_start(counts, n_components, nmf_max_iter)
        else:
            names, sig = check_signatures(signatures, adata)
            proportions, abundance = nnls_start(counts, sig)
        self.cell_types_ = names
        self.module = self._module_cls(
            n_spots=adata.n_obs,
            n_genes=adata.n_vars,
            signatures=torch.as_tensor(sig),
            init_proportions=torch.as_tensor(proportions),
            init_abundance=torch.as_tensor(abundance),
            learn_signatures=signatures is None,
            prior_concentration=prior_concentration,
            technology_sd=technology_sd,
        )
        mode = "reference-free" if signatures is None else "reference"
        summary = (
            f"NMFDeconv ({mode}): {len(names)} cell types, {adata.n_obs} spots, "
            f"{adata.n_vars} genes"
        )
        self._finish_init(summary, locals())

    # ------------------------------------------------------------------------- setup
    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs) -> None:
        """Register the spots' raw counts (and a spot index, ``obs["_indices"]``).

        Parameters
        ----------
        adata
            The spots to deconvolve, spots x genes, raw counts (the single-cell reference
            goes to :meth:`from_reference`).
        layer
            Layer with the spots' counts; ``None`` for ``adata.X``.

        Examples
        --------
        >>> dv.model.NMFDeconv.setup_anndata(spots)  # doctest: +SKIP
        """
        check_data(adata, layer, kind="counts")
        # Per-spot parameters are looked up by each spot's row, carried through minibatches.
        adata.obs[_INDEX_COLUMN] = np.arange(adata.n_obs)
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, _INDEX_COLUMN),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @staticmethod
    def signatures_from_reference(
        reference: AnnData,
        labels_key: str = "cell_type",
        layer: str | None = None,
        genes: list[str] | pd.Index | None = None,
    ) -> pd.DataFrame:
        """Expected counts of one cell of each type: the NB mean per type, genes x type.

        The mean of a type's counts per cell is the maximum-likelihood NB mean of its cells
        (for a common mean, whatever the dispersion). Sums go through
        :func:`scanpy.get.aggregate`.

        Parameters
        ----------
        reference
            Labelled single cells with raw counts.
        labels_key
            obs column with the cell types (at least 2).
        layer
            Layer with the counts; ``None`` for ``reference.X``.
        genes
            Genes to keep, in this order; ``None`` for all.

        Returns
        -------
        pandas.DataFrame
            Cell types x genes.

        Examples
        --------
        >>> import deltavae as dv
        >>> ref = dv.datasets.pbmc3k()
        >>> sig = dv.model.NMFDeconv.signatures_from_reference(ref, "cell_type")
        >>> sig.shape
        (9, 13714)
        """
        labels = check_labels(reference, labels_key)
        counts = reference if genes is None else reference[:, list(genes)]
        obs = pd.DataFrame({"label": labels}, index=counts.obs_names)
        view = AnnData(X=layer_matrix(counts, layer), obs=obs)
        view.var_names = counts.var_names
        sums = sc.get.aggregate(view, by="label", func="sum")
        totals = np.asarray(sums.layers["sum"], dtype=np.float64)
        n_cells = np.bincount(labels.codes, minlength=len(labels.categories)).astype(float)
        order = [list(labels.categories).index(name) for name in sums.obs_names]
        return pd.DataFrame(
            totals / n_cells[order][:, None], index=sums.obs_names, columns=view.var_names
        ).loc[list(labels.categories)]

    @staticmethod
    def marker_genes(
        reference: AnnData,
        labels_key: str = "cell_type",
        n_markers: int = 50,
        layer: str | None = None,
        genes: list[str] | pd.Index | None = None,
    ) -> pd.Index:
        """The union of each cell type's top up-regulated genes in the reference.

        Counts are normalised to 10,000 per cell and log1p-transformed (on a copy), and
        :func:`scanpy.tl.rank_genes_groups` ranks the genes of each type against the rest
        with a t-test.

        Parameters
        ----------
        reference
            Labelled single cells with raw counts (left unchanged).
        labels_key
            obs column with the cell types.
        n_markers
            Genes taken from the top of each type's ranking.
        layer
            Layer with the counts; ``None`` for ``reference.X``.
        genes
            Candidate genes; ``None`` for all of the reference's.

        Returns
        -------
        pandas.Index
            The chosen genes, in the reference's order.

        Examples
        --------
        >>> import deltavae as dv
        >>> ref = dv.datasets.pbmc3k()
        >>> genes = dv.model.NMFDeconv.marker_genes(ref, "cell_type", n_markers=20)
        >>> "MS4A1" in genes  # a B-cell marker
        True
        """
        if not isinstance(n_markers, int | np.integer) or n_markers < 1:
            raise ValueError(f"n_markers must be a positive integer; got {n_markers!r}.")
        labels = check_labels(reference, labels_key)
        counts = reference if genes is None else reference[:, list(genes)]
        X = layer_matrix(counts, layer)
        X = X.astype(np.float32) if sp.issparse(X) else np.array(X, dtype=np.float32)
        view = AnnData(
            X=X,
            obs=pd.DataFrame({"label": labels}, index=counts.obs_names),
            var=pd.DataFrame(index=counts.var_names),
        )
        sc.pp.normalize_total(view, target_sum=1e4)
        sc.pp.log1p(view)
        sizes = view.obs["label"].value_counts()
        testable = [str(t) for t, n in sizes.items() if n >= 2]
        chosen = set()
        if testable:
            with warnings.catch_warnings():
                # Types with a handful of cells give t-test warnings; from_reference warns.
                warnings.simplefilter("ignore", RuntimeWarning)
                sc.tl.rank_genes_groups(
                    view, "label", groups=testable, method="t-test", n_genes=n_markers
                )
            names = view.uns["rank_genes_groups"]["names"]
            chosen = {str(g) for field in names.dtype.names for g in names[field]}
        for single in (str(t) for t, n in sizes.items() if n < 2):
            # No variance to test with one cell: its largest log-differences to the rest.
            own = (view.obs["label"] == single).to_numpy()
            rest = np.asarray(view.X[~own].mean(axis=0)).ravel()  # sparse-aware, no copy
            diff = dense(view.X[own]).ravel() - rest
            chosen |= set(view.var_names[np.argsort(-diff)[:n_markers]])
        return counts.var_names[counts.var_names.isin(list(chosen))]

    @classmethod
    def from_reference(
        cls,
        spots: AnnData,
        reference: AnnData,
        labels_key: str = "cell_type",
        layer: str | None = None,
        reference_layer: str | None = None,
        n_markers: int | None = 50,
        **model_kwargs,
    ) -> NMFDeconv:
        """Build the model from a labelled single-cell reference.

        The spots and the reference are reduced to their shared genes that the reference
        expresses, and by default further to the cell types' marker genes
        (:meth:`marker_genes`): genes that tell the types apart carry the proportions, while
        the rest mostly add cell-to-cell noise. The spots are then registered
        (:meth:`setup_anndata`), on a copy when genes are dropped (write results back with
        ``write_to_adata(spots)``).

        Parameters
        ----------
        spots
            Spots x genes with raw counts.
        reference
            Single cells with raw counts and labels.
        labels_key
            obs column of ``reference`` with the cell types.
        layer, reference_layer
            Layers with the counts of the spots and of the reference (``None``: ``X``).
        n_markers
            Keep the union of each type's top ``n_markers`` marker genes among the shared
            genes; ``None`` keeps every shared gene.
        **model_kwargs
            Passed to :class:`NMFDeconv`.

        Returns
        -------
        NMFDeconv

        Examples
        --------
        >>> d = dv.model.NMFDeconv.from_reference(spots, reference=ref)  # doctest: +SKIP
        """
        labels = check_labels(reference, labels_key)
        check_data(reference, reference_layer, kind="counts", name="reference", warn_empty=False)
        shared = spots.var_names[spots.var_names.isin(reference.var_names)]
        if len(shared) == 0:
            raise ValueError(
                f"spots ({spots.n_vars} genes, e.g. {list(spots.var_names[:3])}) and reference "
                f"({reference.n_vars} genes, e.g. {list(reference.var_names[:3])}) share no "
                "genes; use the same gene identifiers (symbols or Ensembl IDs) in both."
            )
        if len(shared) < _FEW_SHARED_GENES:
            warnings.warn(
                f"spots and reference share only {len(shared)} genes; proportions may be poorly "
                "determined.",
                UserWarning,
                stacklevel=2,
            )
        sizes = pd.Series(labels.codes).value_counts()
        small = [str(labels.categories[code]) for code, size in sizes.items() if size < _FEW_CELLS]
        if small:
            warnings.warn(
                f"cell types with fewer than {_FEW_CELLS} reference cells: {small}; their "
                "signatures are noisy.",
                UserWarning,
                stacklevel=2,
            )
        if n_markers is not None:
            shared = cls.marker_genes(reference, labels_key, n_markers, reference_layer, shared)
            logger.info("kept %d marker genes (%d per type)", len(shared), n_markers)
        signatures = cls.signatures_from_reference(reference, labels_key, reference_layer, shared)
        expressed = signatures.columns[signatures.sum(axis=0).to_numpy() > 0]
        if len(expressed) < len(shared):
            logger.info(
                "dropping %d shared genes with no reference counts", len(shared) - len(expressed)
            )
        if len(expressed) < spots.n_vars:
            spots = spots[:, expressed].copy()
        cls.setup_anndata(spots, layer=layer)
        return cls(spots, signatures=signatures[expressed], **model_kwargs)

    # ------------------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int = 1000,
        lr: float = 0.02,
        batch_size: int | None = None,
        **kwargs,
    ):
        """Fit by MAP on every spot (no validation split: each spot has its own parameters).

        Parameters
        ----------
        max_epochs
            Passes through the spots.
        lr
            Adam learning rate.
        batch_size
            Spots per step; default all of them, up to 2,048.
        **kwargs
            Passed to the shared training loop, :meth:`deltavae.model.ZINBVAE.train`
            (``accelerator``, Lightning trainer arguments ...).

        Examples
        --------
        >>> d.train(max_epochs=500)  # doctest: +SKIP
        """
        batch_size = batch_size or min(self.adata.n_obs, 2048)
        kwargs.setdefault("enable_checkpointing", False)
        # Every spot trains (its parameters are its own), so there is nothing to validate on.
        kwargs.setdefault("limit_val_batches", 0)
        kwargs.setdefault("log_every_n_steps", 1)
        return super().train(
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            train_size=1.0,
            n_epochs_kl_warmup=None,
            **kwargs,
        )

    # ------------------------------------------------------------------------- results
    def _check_spots(self, adata: AnnData | None) -> AnnData:
        adata = self._resolve_adata(adata)
        if not adata.obs_names.equals(self.adata.obs_names):
            raise ValueError(
                "Proportions are fitted per spot: the AnnData must hold the model's "
                f"{self.adata.n_obs} spots in the same order (got {adata.n_obs})."
            )
        return adata

    def get_proportions(self) -> pd.DataFrame:
        """Cell-type proportions of every spot (rows sum to 1).

        Returns
        -------
        pandas.DataFrame
            Spots x cell types.

        Examples
        --------
        >>> d.get_proportions().head()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        with torch.no_grad():
            values = self.module.proportions().cpu().numpy().astype(np.float64)
        values /= values.sum(axis=1, keepdims=True)
        return pd.DataFrame(values, index=self.adata.obs_names, columns=self.cell_types_)

    def get_abundance(self) -> pd.Series:
        """Cells' worth of signal per spot (in units of the reference's cells).

        Examples
        --------
        >>> d.get_abundance().describe()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        with torch.no_grad():
            values = torch.exp(self.module.log_abundance).cpu().numpy()
        return pd.Series(values, index=self.adata.obs_names, name=self.abundance_key)

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
            values = self.module.signatures().cpu().numpy()
        return pd.DataFrame(values, index=self.cell_types_, columns=self.adata.var_names)

    def get_technology_factor(self) -> pd.Series:
        """Gene-wise factor between the spots' and the reference's measurement of a gene.

        Examples
        --------
        >>> d.get_technology_factor().sort_values().head()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        with torch.no_grad():
            values = torch.exp(self.module.log_technology).cpu().numpy()
        return pd.Series(values, index=self.adata.var_names, name="technology_factor")

    @writes_backed
    def write_to_adata(self, adata: AnnData | None = None) -> list[str]:
        """Write proportions to ``obsm["proportions"]`` and abundance to ``obs``.

        Parameters
        ----------
        adata
            The spots (same spots, same order, any genes); default the model's AnnData.

        Returns
        -------
        The keys written, as ``"slot/key"`` strings.

        Examples
        --------
        >>> d.write_to_adata(spots)  # doctest: +SKIP
        ['obsm/proportions', 'obs/cell_abundance']
        """
        adata = self._check_spots(adata)
        proportions = self.get_proportions()
        proportions.index = adata.obs_names
        adata.obsm[self.proportions_key] = proportions
        adata.obs[self.abundance_key] = self.get_abundance().to_numpy()
        return [f"obsm/{self.proportions_key}", f"obs/{self.abundance_key}"]
