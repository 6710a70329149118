"""Building :class:`deltavae.model.NMFDeconv` from a labelled single-cell reference: the
signatures (NB mean counts of one cell of each type), the marker genes, and ``from_reference``."""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._anndata_or_folder import check_anndata
from .._checks import (
    check_labels,
    dense,
    layer_matrix,
    refuse_countless_reference,
    refuse_minified,
    short_repr,
)
from .._numbered_obs import refuse_numbered_tables
from .._renamed import foreign_keywords
from .._slashes import MESSAGE_START, PROPORTIONS_COLUMNS, renamed_column, warn_slashed
from .._unchanged_on_failure import unchanged_on_failure
from ._count_advice import drop_empty
from ._gene_advice import RENAMING, identifier_advice, names_column_advice
from ._genes import _refuse_duplicates
from ._init_keywords import check_passed_on
from ._matrices import adata_in_memory, memory_copy, on_disk, row_sums, to_memory
from ._placeholder_labels import warn_placeholder_labels
from ._query_source import keep_write_target
from ._reference_labels import check_reference_labels
from ._reference_reads import genes_in_memory, type_sums
from ._shared_genes import warn_few_shared
from ._spot_index import own_spot_index
from ._spots import spots_named
from ._training_checks import _is_int
from ._validation import _refuse_unnamed_genes, check_data, refuse_numeric_names, warn_user

if TYPE_CHECKING:
    from ._nmfdeconv import NMFDeconv

logger = logging.getLogger(__name__)

_FEW_CELLS = 5
#: scanpy's normalize_total on cells without counts (from_reference says it in its own words).
_SCANPY_ZERO_CELLS = r"Some cells have zero counts"


def _string_labels(reference: AnnData, labels_key: str) -> pd.Categorical:
    """The reference's cell types (:func:`check_labels`) with their names as strings, so that
    integer cluster ids work like names; ``reference`` itself is only read."""
    refuse_minified(reference, "reference")  # its zeros were read as counts
    _refuse_unnamed_genes(reference.var_names, "reference")
    refuse_numeric_names(reference, "reference")
    _refuse_duplicates(pd.Index(reference.var_names.astype(str)), "reference")
    labels = check_labels(reference, labels_key)  # no two with the same text
    names = [str(c) for c in labels.categories]
    return pd.Categorical.from_codes(labels.codes, categories=names)


def warn_empty_reference_cells(
    reference: AnnData,
    layer: str | None,
    effect: str = "they lower their cell type's mean counts (its signature) and tell nothing "
    "about its markers",
) -> None:
    """Warn, once, about reference cells without counts (``effect``: what they do to the
    model; NMFDeconv: they lower their type's signature), shared by the spot models."""
    empty = row_sums(layer_matrix(reference, layer)) == 0  # a chunk of rows at a time on disk
    if empty.any():
        where = "reference.X" if layer is None else f"reference.layers[{layer!r}]"
        names = ", ".join(map(str, reference.obs_names[empty][:5]))
        warn_user(
            f"{int(empty.sum())} reference cells have no counts in {where} (e.g. {names}); "
            f"{effect}. Drop them first: {drop_empty('reference', layer, rows=True)}."
        )


def warn_small_types(labels: pd.Categorical, what: str) -> None:
    """Warn of the cell types of ``labels`` with fewer than ``_FEW_CELLS`` reference cells:
    their ``what`` (signatures, profiles) are averages of so few cells that they are noisy,
    and a type of one cell took a share of every spot (19% on average, of pseudo-spots
    without it, in a SpatialImputer fit, which said nothing; NMFDeconv warned)."""
    sizes = pd.Series(labels.codes).value_counts()
    small = [str(labels.categories[code]) for code, size in sizes.items() if size < _FEW_CELLS]
    if small:
        warn_user(
            f"{len(small)} cell types with fewer than {_FEW_CELLS} reference cells: "
            f"{small[:10]}{' and more' if len(small) > 10 else ''}; their {what} are noisy."
        )


def _refuse_countless(reference: AnnData, counts: AnnData, layer, genes) -> None:
    """:func:`~deltavae.model._validation.check_data`'s count check on ``counts`` and
    :func:`refuse_countless_reference` for the static methods (their argument is
    ``layer``): on ``counts`` (all genes when ``genes`` is ``None``), else on the whole
    reference where it is in memory (a subset without counts gives zero signatures)."""
    try:
        # Raw counts (check_data's advice for log-normalised or scaled values): marker_genes
        # log-normalised a log-normalised reference again and ranked its genes silently.
        check_data(counts, layer, kind="counts", name="reference", warn_empty=False)
        if genes is not None:
            if on_disk(reference):
                return
            counts = reference
        refuse_countless_reference(counts, layer)
    except ValueError as err:
        if isinstance(err, KeyError):  # a missing layer (also a ValueError), as it came
            raise
        raise ValueError(str(err).replace("reference_layer=", "layer=")) from None


def _signatures_in_chunks(reference: AnnData, labels, layer, genes) -> pd.DataFrame:
    """signatures_from_reference of a reference on disk or in a dask array: its counts checked
    and summed by type a chunk of rows at a time (the whole reference: its count check too),
    so that memory holds types x genes and one chunk, not the reference."""
    check_data(reference, layer, kind="counts", name="reference", warn_empty=False)
    refuse_countless_reference(reference, layer)
    n_types = len(labels.categories)
    totals = type_sums(layer_matrix(reference, layer), np.asarray(labels.codes), n_types)
    columns = reference.var_names if genes is None else pd.Index(genes)
    totals = totals[:, reference.var_names.get_indexer(columns)]
    n_cells = np.bincount(labels.codes[labels.codes >= 0], minlength=n_types).astype(float)
    return pd.DataFrame(totals / n_cells[:, None], index=list(labels.categories), columns=columns)


def _refuse_no_shared_counts(shared: pd.Index) -> None:
    raise ValueError(
        f"the reference has no counts for any of the {len(shared)} genes it shares "
        f"with the spots (e.g. {list(shared[:3])}): is reference_layer the layer of its raw "
        "counts?"
    )


def _counts_in_memory(reference: AnnData, genes) -> AnnData:
    """``reference`` with ``genes`` (all when ``None``), in that order, in memory: one opened
    backed or with read_lazy is read (a backed view cannot be indexed again)."""
    genes = _checked_genes(reference, genes)
    if reference.isbacked and reference.is_view:
        reference = to_memory(reference)
    return adata_in_memory(reference if genes is None else reference[:, genes])


def _checked_genes(reference: AnnData, genes) -> list[str] | None:
    """``genes`` as a list of the reference's genes: one name is one gene (a string was read
    as its letters), and a gene the reference lacks or a gene named twice is refused by name
    (anndata's KeyError listed np.str_ values; a repeat was a marker, a signature twice)."""
    if genes is None:
        return None
    names = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not names:
        raise ValueError("genes is empty; pass the genes to keep, or None for all.")
    missing = [g for g in names if g not in reference.var_names]
    if missing:
        advice = identifier_advice(missing, reference.var_names)
        if len(missing) < len(names) and not advice.startswith(RENAMING):
            advice = "Drop them, or check their spelling."
        raise ValueError(
            f"genes names {len(missing)} gene(s) the reference lacks, e.g. "
            f"{short_repr(missing)}. {advice}"
        )
    repeated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(repeated):
        raise ValueError(
            f"genes names {repeated[0]!r} more than once; pass each gene once, e.g. "
            "list(dict.fromkeys(genes))."
        )
    return names


class FromReferenceMixin:
    """``signatures_from_reference``, ``marker_genes`` and ``from_reference`` of NMFDeconv."""

    @staticmethod
    @foreign_keywords(groupby="labels_key")
    def signatures_from_reference(
        reference: AnnData,
        labels_key: str = "cell_type",
        layer: str | None = None,
        genes: list[str] | pd.Index | None = None,
    ) -> pd.DataFrame:
        """Expected counts of one cell of each type: the NB mean per type, types x genes.

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
        labels = _string_labels(reference, labels_key)
        if on_disk(reference) and not (reference.isbacked and reference.is_view):
            return _signatures_in_chunks(reference, labels, layer, _checked_genes(reference, genes))
        counts = _counts_in_memory(reference, genes)
        # Log-normalised values gave signatures of another scale, and wrong proportions.
        _refuse_countless(reference, counts, layer, genes)
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
    @foreign_keywords(groupby="labels_key", n_genes="n_markers: genes per cell type")
    def marker_genes(
        reference: AnnData,
        labels_key: str = "cell_type",
        n_markers: int = 50,
        layer: str | None = None,
        genes: list[str] | pd.Index | None = None,
    ) -> pd.Index:
        """The union of each cell type's highest-ranked genes in the reference.

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
            Genes taken from the top of each type's ranking (highest t-score first): its
            up-regulated genes, and where a type has fewer than ``n_markers`` of those (small
            panels), the rest of its top ``n_markers`` are the genes least down in it.
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
        if not _is_int(n_markers) or n_markers < 1:
            raise ValueError(f"n_markers must be a positive integer; got {n_markers!r}.")
        labels = _string_labels(reference, labels_key)
        counts = _counts_in_memory(reference, genes)
        X = layer_matrix(counts, layer)
        _refuse_countless(reference, counts, layer, genes)
        X = X.astype(np.float32) if sp.issparse(X) else np.array(X, dtype=np.float32)
        view = AnnData(
            X=X,
            obs=pd.DataFrame({"label": labels}, index=counts.obs_names),
            var=pd.DataFrame(index=counts.var_names),
        )
        with warnings.catch_warnings():
            # Cells without counts stay zeros; from_reference warns about them by name.
            warnings.filterwarnings("ignore", message=_SCANPY_ZERO_CELLS, category=UserWarning)
            sc.pp.normalize_total(view, target_sum=1e4)
        sc.pp.log1p(view)
        sizes = view.obs["label"].value_counts()
        testable = [str(t) for t, n in sizes.items() if n >= 2]
        chosen = set()
        if testable:
            with warnings.catch_warnings(), sc.settings.verbosity.override("error"):
                # Types with a handful of cells give t-test warnings; from_reference warns.
                # Log-normalised above: scanpy's "raw count data" guess (genes without
                # counts are whole zeros) is not the user's to act on.
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
    @foreign_keywords(n_genes="n_markers: genes per cell type")
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

        The model uses the spots' genes that the reference shares and expresses and some spot
        counts, by default only the cell types' marker genes among them (:meth:`marker_genes`;
        a marker no spot counts is left out, with a warning): genes that tell
        the types apart carry the proportions, while the rest mostly add cell-to-cell noise.
        Genes are matched by exact name: spot genes the reference spells in another case
        only ('GAD1' against 'Gad1') are left out, with a warning that gives the line naming
        them as the reference does. The spots themselves are registered whole
        (:meth:`setup_anndata`; nothing is copied, so a backed file stays on disk), and the
        model reads its genes from each minibatch. With ``inference="per_spot"`` the model
        registers an AnnData of its own sharing the spots' matrices, with each spot's row
        (``obs["_indices"]``) in its own obs, so ``spots.obs`` is left as it was (a backed
        file's spots take the column); ``write_to_adata()`` writes into ``spots``, and the
        read-outs and ``train`` read the spots as they are (subset or reordered in place
        since: by name; their counts replaced: refused by the read-outs, fitted by ``train``).
        A view of the spots (``spots[mask]``), which cannot hold a setup, is copied into
        memory first, as :meth:`deltavae.model.SpatialImputer.from_reference` copies its spots:
        the model holds the copy (``model.adata``), and ``spots`` is unchanged. A call that
        fails (a model argument refused) leaves ``spots`` as they were, another model's setup
        of them included.

        Parameters
        ----------
        spots
            Spots x genes with raw counts, in memory or opened with :func:`deltavae.read_lazy`,
            or a view of them (copied).
        reference
            Single cells with raw counts and labels, in memory, on disk (backed,
            :func:`deltavae.read_lazy`) or in dask arrays: then checked a chunk of rows at a
            time, and only its counts of the genes shared with the spots read into memory
            (a warning gives the size above 1 GiB).
        labels_key
            obs column of ``reference`` with the cell types.
        layer
            Layer with the spots' counts (``None``: ``X``).
        reference_layer
            Layer with the reference's counts (``None``: ``X``).
        n_markers
            Keep the union of each type's top ``n_markers`` marker genes among the shared
            genes; ``None`` keeps every shared gene.
        **model_kwargs
            Passed to :class:`NMFDeconv` (``inference``, ...).

        Returns
        -------
        NMFDeconv
            Set up on all the spots' genes, reading the kept ones (:meth:`~NMFDeconv.used_genes`)
            with the reference's signatures; call :meth:`~NMFDeconv.train` next.

        Examples
        --------
        >>> d = dv.model.NMFDeconv.from_reference(spots, reference=ref)  # doctest: +SKIP
        """
        check_passed_on(cls, cls.from_reference, model_kwargs)  # before the reference is read
        for name, data in (("spots", spots), ("reference", reference)):
            if isinstance(data, str | os.PathLike):  # a file's name: how to read it
                check_anndata(data, name, call="NMFDeconv.from_reference(spots, reference)")
            if not isinstance(data, AnnData):  # a signature table: NMFDeconv(spots, signatures)
                raise TypeError(
                    f"{name} must be an AnnData; got {type(data).__name__}. A table of cell-type "
                    "signatures (types x genes) goes to NMFDeconv(spots, signatures=table)."
                )
            refuse_numbered_tables(data, name)  # anndata reads or copies it no further
        if "signatures" in model_kwargs:  # else Python's 'got multiple values for ...'
            raise TypeError(
                "from_reference makes the signatures from the reference; a table of them goes "
                "to NMFDeconv(spots, signatures=table) after NMFDeconv.setup_anndata(spots)."
            )
        _refuse_duplicates(pd.Index(spots.var_names.astype(str)), "spots")
        refuse_minified(spots, "spots")
        check_reference_labels(spots, reference, labels_key, "NMFDeconv.from_reference")
        labels = _string_labels(reference, labels_key)
        warn_placeholder_labels(reference, labels_key, "signature")
        fix = renamed_column("reference", labels_key)
        warn_slashed(labels.categories, "cell types", PROPORTIONS_COLUMNS, fix)
        if reference.isbacked and reference.is_view:  # anndata indexes a backed view no further
            reference = to_memory(reference)
        # On disk (read_lazy, backed) or dask: checked a chunk of rows at a time, and only the
        # genes shared with the spots read into memory (the signatures and markers read no other).
        check_data(reference, reference_layer, kind="counts", name="reference", warn_empty=False)
        refuse_countless_reference(reference, reference_layer)
        warn_empty_reference_cells(reference, reference_layer)
        # In the reference's order: the model's genes (and so its encoder's start) do not
        # depend on the order of the spots' genes.
        shared = reference.var_names[reference.var_names.isin(spots.var_names)]
        if len(shared) == 0:
            raise ValueError(
                f"spots ({spots.n_vars} genes, e.g. {list(spots.var_names[:3])}) and reference "
                f"({reference.n_vars} genes, e.g. {list(reference.var_names[:3])}) share no "
                "genes. "
                + (
                    names_column_advice({"spots": spots, "reference": reference})
                    or identifier_advice(spots.var_names, reference.var_names)
                )
            )
        warn_few_shared(spots, reference, shared, "proportions may be poorly determined")
        reference = genes_in_memory(reference, reference_layer, shared, "NMFDeconv.from_reference")
        if not row_sums(layer_matrix(reference, reference_layer)).any():
            _refuse_no_shared_counts(shared)
        warn_small_types(labels, "signatures")
        if n_markers is not None:
            shared = cls.marker_genes(reference, labels_key, n_markers, reference_layer, shared)
            logger.info("kept %d marker genes (%d per type)", len(shared), n_markers)
        signatures = cls.signatures_from_reference(reference, labels_key, reference_layer, shared)
        expressed = signatures.columns[signatures.sum(axis=0).to_numpy() > 0]
        if len(expressed) == 0:  # else "signatures share no gene with the spots"
            _refuse_no_shared_counts(shared)
        if len(expressed) < len(shared):
            logger.info(
                "dropping %d shared genes with no reference counts", len(shared) - len(expressed)
            )
        spot_index = model_kwargs.get("inference") == "per_spot"
        if spots.is_view:  # setup_anndata writes into the spots, which a view cannot hold
            spots = memory_copy(spots)
        given = spots  # per spot, each spot's row goes into an obs of the model's own
        spots = own_spot_index(spots) if spot_index else spots
        with warnings.catch_warnings():
            # Genes the model does not use may be silent in every spot; that says nothing.
            warnings.filterwarnings("ignore", message=r".*genes in .* are zero in every")
            # Said above, or chosen (n_markers): not again by the model built below.
            warnings.filterwarnings("ignore", message=r"spots and signatures share only")
            warnings.filterwarnings("ignore", message=MESSAGE_START)  # said above, by labels_key
            # A bad model argument: the spots left as they were, another model's setup of
            # them (scvi-tools' ids and codes) too, not only without the keys added, and the
            # user's own NMFDeconv setup of them (the one NMFDeconv(spots, ...) reads next).
            with unchanged_on_failure(given, stores=(cls._setup_adata_manager_store,)):
                with spots_named():  # its errors say spots.X, not adata.X
                    cls.setup_anndata(spots, layer=layer, spot_index=spot_index)
                model = cls(spots, signatures=signatures[expressed], **model_kwargs)
        if spots is not given:  # results go into the spots given, read as they are
            keep_write_target(model, given)
        return model
