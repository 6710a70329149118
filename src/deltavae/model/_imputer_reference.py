"""Reference states for SpatialImputer: mean profiles per label, or clusters of the cells;
the reference cells of neighbour profiles, checked; the genes it imputes, and those asked of
it."""

from __future__ import annotations

from collections.abc import Iterable, Set

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD

from .._checks import short_repr
from .._close_names import did_you_mean
from ._count_advice import drop_empty
from ._gene_advice import (
    RENAMING,
    case_only_matches,
    identifier_advice,
    names_column_advice,
    subset_advice,
)
from ._shared_genes import rename_line, warn_few_shared
from ._spots import spots_named
from ._validation import NO_CELLS, check_data, warn_user

_DESIGNS = ("deconvolution", "latent")
#: Where results of other spots than the model's come from, by design (their refusal).
OTHER_SPOTS = {
    "deconvolution": "fit a model on them (SpatialImputer.from_reference)",
    "latent": "save the model and load it onto them (SpatialImputer.load(dir, spots))",
}
_PROFILES = ("neighbours", "type")


#: Spots whose counts ``from_reference`` checks on all their genes, before keeping the shared.
FIRST_SPOTS = 200


def check_first_spots(spots: AnnData, layer: str | None) -> None:
    """Refuse spots (in memory) that are not counts on the first :data:`FIRST_SPOTS` of them
    with all their genes: checked on the genes shared with the reference only, spots scaled
    by ``sc.pp.normalize_total`` no longer shared one total, and were told to round values
    that were "counts corrected for ambient RNA" (rounded, they read as counts, wrongly)."""
    if spots.isbacked or spots.n_obs == 0:  # on disk: checked with the shared genes only
        return
    with spots_named():  # spots.X, and layer= (the argument its advice names)
        check_data(spots[:FIRST_SPOTS], layer, min_cells=1, warn_empty=False, unit="spots")


def check_design(design, profiles) -> None:
    """Refuse a SpatialImputer design or profiles it does not know, naming those it does."""
    if design not in _DESIGNS:
        raise ValueError(f"design must be one of {_DESIGNS}; got {design!r}.")
    if profiles not in _PROFILES:
        raise ValueError(f"profiles must be one of {_PROFILES}; got {profiles!r}.")


def state_profiles(counts, labels: pd.Categorical, genes: pd.Index) -> pd.DataFrame:
    """Mean counts per cell of each state: states x genes (the NB mean of a state's cells).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> labels = pd.Categorical(["a", "b", "a"])
    >>> state_profiles(np.array([[1, 0], [0, 4], [3, 0]]), labels, pd.Index(["g1", "g2"]))
        g1   g2
    a  2.0  0.0
    b  0.0  4.0
    """
    from ._reference_reads import type_sums

    codes = np.asarray(labels.codes)
    return type_means(type_sums(counts, codes, len(labels.categories)), labels, genes)


def type_means(sums: np.ndarray, labels: pd.Categorical, genes: pd.Index) -> pd.DataFrame:
    """Per-type sums of counts (types x ``genes``) divided by each type's number of cells."""
    codes = np.asarray(labels.codes)
    sizes = np.bincount(codes[codes >= 0], minlength=len(labels.categories))
    return pd.DataFrame(
        sums / sizes[:, None], index=[str(c) for c in labels.categories], columns=genes
    )


def reference_genes(counts, genes, spot_genes) -> tuple[object, pd.Index, pd.Index]:
    """The reference's counts and genes, less the spots' genes it never counts, and the genes
    shared with the spots. Those genes no state explains (they skewed the proportions), and
    the spots measured them: "imputed", they came out 0 beside the measured counts.

    Examples
    --------
    >>> counts = np.array([[1, 0, 2, 0], [3, 0, 1, 0]])
    >>> _, genes, shared = reference_genes(counts, pd.Index(list("abcd")), pd.Index(list("ab")))
    >>> genes.tolist(), shared.tolist()
    (['a', 'c', 'd'], ['a'])
    """
    genes = pd.Index(np.asarray(genes).astype(str))
    counted = np.asarray(counts.sum(axis=0, dtype=np.float64)).ravel() > 0  # float16 overflows
    measured = genes.isin(np.asarray(spot_genes).astype(str))
    keep = counted | ~measured
    if not keep.all():
        counts, genes = counts[:, np.flatnonzero(keep)], genes[keep]
    return counts, genes, genes[measured[keep]]


def shared_advice(spot_genes, genes, n_counted: int, datasets=None) -> str:
    """What to do when the spots share too few genes with reference counts: names shared
    but not counted (a wrong ``reference_layer``?) are not a matter of identifiers, nor are
    ``datasets`` (spots, reference) cut to highly variable genes each on its own, or named
    by another identifier with the other's names in a ``var`` column."""
    genes, spot_genes = (pd.Index(np.asarray(g).astype(str)) for g in (genes, spot_genes))
    named = int(genes.isin(spot_genes).sum())
    if named > n_counted:
        return (
            f"They share {named} gene names, but the reference has no counts for "
            f"{named - n_counted} of them: is reference_layer the layer of its raw counts?"
        )
    advice = identifier_advice(spot_genes, genes)
    if datasets is not None and not advice.startswith(RENAMING):
        named = dict(zip(("spots", "reference"), datasets, strict=True))
        # Ensembl IDs as one's names and the other's in a var column: rename by the column
        return names_column_advice(named) or subset_advice(named) or advice
    return advice


def requested_genes(known: pd.Index, measured, genes, spot_genes=()) -> pd.Index:
    """The reference genes ``genes`` names (``None``: those not ``measured``), checked;
    ``spot_genes``, all the spots' genes, tell those named that only the spots hold."""
    if isinstance(genes, AnnData | pd.DataFrame):  # read gene by gene, it named every row
        raise TypeError(
            f"genes takes gene names; got {type(genes).__name__}. impute() gives the model's "
            "own spots (model.adata), impute(adata=spots) some of them, by name; "
            "write_to_adata(spots) writes them into spots that hold them. For other spots, load "
            "the saved model onto them (design='latent') or fit one on them "
            "(SpatialImputer.from_reference)."
        )
    if genes is None:
        return known[~known.isin(np.asarray(measured).astype(str))]
    names = [genes] if isinstance(genes, str) else genes
    if not isinstance(names, Iterable) or isinstance(names, bytes):  # 'int' is not iterable
        raise TypeError(
            f"genes takes reference gene names (a list, or one name); got {short_repr(genes)}."
        )
    names = list(names)
    odd = [g for g in names if not isinstance(g, str)]
    if odd:  # a mask or positions: read as the names 'True' or '70', "not reference genes"
        raise TypeError(
            f"genes takes gene names; got {type(odd[0]).__name__} values such as "
            f"{short_repr(odd[0])}. For positions or a mask of the reference's genes, pass "
            "model.reference_genes_[positions]."
        )
    if not names:  # an empty DataFrame written to obsm["imputed"] before
        raise ValueError(
            "genes is empty; pass the reference genes to impute, or None for those the spots "
            "did not measure."
        )
    if isinstance(genes, Set):  # no order of its own (a new one each session): the reference's
        names = [g for g in known if g in genes] + sorted(g for g in genes if g not in known)
    genes = pd.Index([str(g) for g in names], dtype=object)
    unknown = genes[~genes.isin(known)]
    if len(unknown):
        raise KeyError(
            f"{len(unknown)} requested genes are not reference genes: "
            f"{short_repr(unknown.tolist(), n=10)}; the model can impute only the reference's "
            f"{len(known)} genes (model.reference_genes_). "
            + _unknown_advice(unknown, known, spot_genes)
        )
    if genes.has_duplicates:  # columns of obsm["imputed"]: h5ad refuses repeated names
        repeated = genes[genes.duplicated()].unique()[:5].tolist()
        raise ValueError(f"genes repeats names (e.g. {repeated}); name each gene once.")
    return genes


def warn_silent_genes(
    chosen: pd.Index, silent: pd.Index, named: bool, layer: str | None = None
) -> None:
    """Say which of the genes ``chosen`` to impute the reference never counts (``silent``):
    nothing tells their expression, and they came out a constant of about 0 in every spot
    (1e-7 for lymph-node genes), silently, as if imputed. ``named``: ``genes=`` named them;
    ``layer``: the reference's layer ``from_reference`` read (its ``reference_layer``), which
    the statement that drops them reads (scanpy's filter reads X: on a scaled X it dropped
    genes with counts and kept these)."""
    found = chosen[chosen.isin(silent)]
    if not len(found):
        return
    fix = (
        "leave them out of genes="
        if named
        else "to leave them out of impute(), drop them from the reference before "
        f"from_reference: {drop_empty('reference', layer, rows=False)}"
    )
    warn_user(
        f"{len(found)} of the {len(chosen)} genes imputed have no counts in the reference: "
        f"{short_repr(found.tolist(), n=10)}. No reference cell expresses them, so they come "
        "out about 0 in every spot, which is no estimate of their expression; " + fix + "."
    )


def _unknown_advice(unknown: pd.Index, known: pd.Index, spot_genes=()) -> str:
    """What to do about requested genes the model does not know: the reference's spelling
    where ignoring case finds them; the spots' own counts of those the spots measured (their
    name was hinted as a typo of another gene: hippocampus Visium's 'Rpl7', "did you mean
    'Rpl8'?")."""
    measured = unknown[unknown.isin(np.asarray(spot_genes).astype(str))]
    if len(measured):
        return (
            f"{short_repr(measured.tolist())} are genes the spots measured and the reference "
            "lacks: the model imputes reference genes only, and their counts are the spots' "
            f"own (spots[:, {measured.tolist()!r}].X)."
        )
    found = list(case_only_matches(unknown, known).items())
    if found:
        return (
            f"Ignoring case, {len(found)} of them are reference genes (e.g. {found[0][0]!r} is "
            f"{found[0][1]!r}): name them as the reference does."
        )
    hint = did_you_mean(unknown[0], known)  # a typo: the closest reference genes
    return (
        f"Check their spelling{f' ({unknown[0]!r}: {hint})' if hint else ''}; from_reference "
        "also leaves out the spots' genes that the reference never counts (the spots "
        "measured them)."
    )


def cluster_states(counts, n_states: int, seed: int = 0) -> pd.Categorical:
    """Cells clustered into ``n_states`` states by k-means on log-normalised counts (50
    truncated-SVD components first when there are more genes).

    Examples
    --------
    >>> import numpy as np
    >>> counts = np.vstack([np.tile([9, 0, 1], (5, 1)), np.tile([0, 9, 1], (5, 1))])
    >>> cluster_states(counts, 2).value_counts().tolist()
    [5, 5]
    """
    if not isinstance(n_states, int | np.integer) or n_states < 2:
        raise ValueError(f"n_states must be an integer >= 2; got {n_states!r}.")
    counts = sp.csr_matrix(counts, dtype=np.float64)
    if n_states > counts.shape[0]:
        raise ValueError(f"n_states={n_states} exceeds the {counts.shape[0]} reference cells.")
    totals = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0)
    logged = sp.diags(1e4 / totals) @ counts
    logged.data = np.log1p(logged.data)
    if logged.shape[1] > 50:
        logged = TruncatedSVD(50, random_state=seed).fit_transform(logged)
    else:
        logged = logged.toarray()
    # Cells without counts (warned by from_reference) formed a state of their own, silent in
    # every gene: they join the nearest state of the cells with counts instead.
    counted = np.asarray(counts.sum(axis=1)).ravel() > 0
    fit = logged[counted] if n_states <= counted.sum() else logged
    kmeans = KMeans(n_states, n_init=4, random_state=seed).fit(fit)
    codes = kmeans.predict(logged)
    return pd.Categorical([f"state_{c}" for c in codes])


def neighbour_cells(cells, cell_states, genes: pd.Index, states: pd.Index):
    """(counts, state codes) of the reference cells for neighbour profiles, checked; (None,
    None) when ``cells`` is None."""
    if cells is None:
        return None, None
    if not isinstance(cells, pd.DataFrame) or not pd.Index(cells.columns).equals(genes):
        raise ValueError("cells must be a DataFrame with the reference's genes as columns.")
    if cell_states is None:
        raise ValueError("cells need cell_states: the state of every cell, in cells' order.")
    codes = states.get_indexer(np.asarray(cell_states).astype(str))
    if len(codes) != len(cells) or (codes < 0).any():
        raise ValueError("cell_states must name, for every cell, a state of the reference.")
    values = np.asarray(cells.to_numpy(), dtype=np.float32)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("cells must hold finite, non-negative counts.")
    return torch.as_tensor(values), torch.as_tensor(codes)


def imputed_spots(model, adata, what: str = "Imputations"):
    """``adata`` when it holds spots of the imputer ``model``'s, by name; else a clear error
    (``what``: the results, the model's spots' only)."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"adata must be an AnnData of the model's spots (or some of them); got "
            f"{type(adata).__name__}."
        )
    if adata.n_obs == 0:  # as NMFDeconv's read-outs (check_data), not a 0-row table
        raise ValueError(NO_CELLS.replace("cell", "spot"))
    names, own = adata.obs_names, model.adata.obs_names
    foreign = names[~names.isin(own)]
    if len(foreign) or names.has_duplicates:
        found = f"{len(foreign)} spots it was not fitted on (e.g. {foreign[:3].tolist()})"
        found = found if len(foreign) else "repeated spot names"
        # the latent design's encoder maps any spots; the deconvolution's fit
        other = OTHER_SPOTS["latent" if model.design_ == "latent" else "deconvolution"]
        raise ValueError(
            f"{what} are of the model's spots: the AnnData must hold spots of its "
            f"{model.adata.n_obs}, matched by name; it holds {found}. For other spots, {other}."
        )
    return adata


def spots_argument(spots, spatial):
    """The spots given to ``SpatialImputer.from_reference``: ``spots`` (NMFDeconv's name), or
    ``spatial``, its earlier name; not both."""
    if spatial is not None and spots is not None:
        raise TypeError("pass the spots once: spots=... (spatial= is its earlier name).")
    if spatial is not None:  # as pl.cluster_composition's label_key, now labels_key
        warn_user(
            "SpatialImputer.from_reference's spatial is now named spots, as "
            "NMFDeconv.from_reference's; spatial= is read as spots= until a later release: "
            "pass spots=... (or the spots first).",
            FutureWarning,
        )
    spots = spatial if spots is None else spots
    if spots is None:
        raise TypeError(
            "from_reference needs the spots: SpatialImputer.from_reference(spots, reference=ref)."
        )
    return spots


def check_shared(spots, reference, shared, genes: pd.Index, min_shared_genes: int):
    """Refuse too few genes shared by ``spots`` and ``reference`` (``shared``) or none left to
    impute (the reference counts ``genes``); warn when few are shared, and when spot genes
    match reference genes only ignoring case (left out of the fit, those genes imputed)."""
    if isinstance(min_shared_genes, bool) or not isinstance(min_shared_genes, int | np.integer):
        raise ValueError(
            f"min_shared_genes must be an integer; got {short_repr(min_shared_genes)}."
        )
    if len(shared) < min_shared_genes:
        raise ValueError(
            f"spots ({spots.n_vars} genes, e.g. {list(spots.var_names[:3])}) and "
            f"reference ({reference.n_vars} genes, e.g. {list(reference.var_names[:3])}) "
            f"share {len(shared)} genes; at least {min_shared_genes} are needed "
            "(min_shared_genes). "
            + shared_advice(spots.var_names, reference.var_names, len(shared), (spots, reference))
        )
    if len(shared) == len(genes):
        raise ValueError(
            "the spots already measure every gene the reference counts: there is nothing to "
            "impute. The reference must hold the genes to impute."
        )
    found = list(case_only_matches(spots.var_names, genes[~genes.isin(shared)]).items())
    if found:  # silently a measured gene became one to impute, and the fit lost it
        warn_user(
            f"{len(found)} of the spots' genes are reference genes only ignoring case (e.g. "
            f"{found[0][0]!r} and the reference's {found[0][1]!r}): they are left out of the "
            "fit, and the model imputes the reference's as genes the spots did not measure. "
            "Name the spots' genes as the reference does before from_reference: "
            f"{rename_line('reference.var_names')}."
        )

    effect = "the spots' states (and so the imputed genes) may be poorly determined"
    warn_few_shared(spots, reference, shared, effect, case=False)  # said above


def refuse_silent_states(profiles: np.ndarray, names: pd.Index, n_genes: int) -> None:
    """Refuse reference states whose ``profiles`` (states x the spots' genes) are (almost) 0,
    as NMFDeconv refuses such cell types: nothing in the spots tells their share, which was
    the fitted prior's in every spot (3% of each, for a state of hidden genes only), and
    the genes they express were imputed from it."""
    from ._nmf_start import SILENT_TYPE

    totals = profiles.sum(axis=1)
    silent = [str(n) for n in names[totals <= SILENT_TYPE * np.median(totals)]]
    if silent:
        raise ValueError(
            f"Reference states {silent[:10]} are (almost) silent in the {n_genes} genes the "
            "spots measure, so their shares cannot be estimated: they would take a share of "
            "every spot from the other states, and add the genes they express to its "
            "imputation. Leave their cells out of the reference (e.g. reference[~reference."
            f"obs[labels_key].isin({silent[:10]})]), or measure genes they express."
        )


def warn_uncounted_panel(off: list, n_genes: int) -> None:
    """Say that the spots' genes ``off``, which no spot counts, are left out of the fit (as
    NMFDeconv says of its genes), and how to have them imputed instead."""
    if off:
        warn_user(
            f"{len(off)} of the spots' {n_genes} genes are 0 in every spot (e.g. {off[:3]}): "
            "a gene no spot counts is no evidence of a spot's state, so the model leaves them "
            "out of the fit, and impute() gives them only when named in genes=. To impute "
            "them as unmeasured, drop them from the spots first: "
            "sc.pp.filter_genes(spots, min_cells=1)."
        )
