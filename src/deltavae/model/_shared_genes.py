"""The note on few genes shared by the spots and the reference, one for both spot models
that are built from a reference (NMFDeconv, SpatialImputer) and for NMFDeconv's signatures,
and the one on spot genes left out because the reference spells them in another case."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._checks import short_repr
from ._gene_advice import RENAMING, case_only_matches, identifier_advice, subset_advice
from ._validation import warn_user

logger = logging.getLogger(__name__)

#: Fewer genes shared by the spots and the reference (or signatures) than this are said. One
#: number for both models: each reads a spot's make-up (cell types, states) from the shared
#: genes alone (SpatialImputer's was 50, NMFDeconv's 100, for no reason of their own).
FEW_SHARED_GENES = 100


def warn_few_shared(spots, reference, shared, effect: str, case: bool = True) -> None:
    """Say that ``spots`` and ``reference`` (an AnnData, or NMFDeconv's signatures: a
    DataFrame, cell types x genes) share only ``shared`` genes, with what to do: pass the
    datasets uncut (``subset_advice``), the reference (signatures) with all its genes, or the
    same identifiers in both (the spots' genes missing from the reference named). Where the
    spots' genes are all in the reference, a panel of few genes, nothing can be done: not a
    warning (every fit of such a panel warned "share only 80 genes" though every gene of both
    was shared), only ``effect`` logged.

    With enough genes shared, a warning all the same where spot genes are reference genes
    only ignoring case (:func:`warn_lost_to_case`; ``case=False``: the caller says it)."""
    n_shared = len(shared)
    signatures = isinstance(reference, pd.DataFrame)
    name, genes_of = ("signatures", "columns") if signatures else ("reference", "var_names")
    spot_genes = pd.Index(np.asarray(spots.var_names).astype(str))
    ref_genes = pd.Index(np.asarray(getattr(reference, genes_of)).astype(str))
    if n_shared >= FEW_SHARED_GENES:
        if case:
            warn_lost_to_case(spot_genes, ref_genes, f"{name}.{genes_of}", name)
        return
    advice = "" if signatures else subset_advice({"spots": spots, "reference": reference})
    lacking = spot_genes[~spot_genes.isin(ref_genes)]
    if not advice and not len(lacking):  # the spots' whole panel: nothing to change
        logger.info(
            "spots and %s share %d genes, all the spots' genes; %s.", name, n_shared, effect
        )
        return
    if not advice and ref_genes.isin(spot_genes).all():  # the reference is the one cut short
        advice = (
            f"The signatures hold only {len(ref_genes)} of the spots' genes: give signatures "
            "of more, e.g. NMFDeconv.signatures_from_reference(reference, labels_key) of a "
            "reference with all its genes."
            if signatures
            else f"The reference holds only these {n_shared} genes: pass it with all its "
            "genes (from_reference keeps the genes it needs)."
        )
    elif not advice:
        advice = identifier_advice(lacking, ref_genes)
        if not advice.startswith(RENAMING) and 2 * len(lacking) < len(spot_genes):
            advice = f"Check their names against {name}.{genes_of}."  # a few: misspelt?
        advice = (
            f"{len(lacking)} of the spots' {len(spot_genes)} genes are not in the {name} "
            f"(e.g. {short_repr(lacking[:3].tolist())}). {advice}"
        )
    warn_user(f"spots and {name} share only {n_shared} genes; {effect}. {advice}")


def warn_lost_to_case(spot_genes: pd.Index, ref_genes: pd.Index, names_of: str, name: str):
    """Warn where any of the spots' genes is one of the reference's (``name``; ``names_of``:
    the expression of its gene names) only ignoring case (mouse 'Gad1' against 'GAD1'): such
    a gene is silently left out of the fit. Half the genes of a panel lost so, with 100 still
    shared exactly, said nothing. Any such gene is said: the shipped spatial/reference pairs
    have none (their shared genes match exactly), so a real pair is not warned.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as said:
    ...     warnings.simplefilter("always")
    ...     genes = pd.Index(["Gad1", "Sst", "Vip"])
    ...     warn_lost_to_case(pd.Index(["Gad1", "SST"]), genes, "ref.var_names", "reference")
    >>> str(said[0].message)[:73]
    "1 of the spots' 2 genes are reference genes only ignoring case (e.g. 'SST"
    """
    lost = case_only_matches(spot_genes, ref_genes)
    if not len(lost):
        return
    warn_user(
        f"{len(lost)} of the spots' {len(spot_genes)} genes are {name} genes only ignoring "
        f"case (e.g. {lost.index[0]!r} and the {name}'s {lost.iloc[0]!r}): they are left out "
        f"of the fit. Name the spots' genes as the reference does first: {rename_line(names_of)}"
        " (or upper-case both)."
    )


def rename_line(names_of: str) -> str:
    """The line that names the spots' genes as ``names_of`` (the reference's gene names)
    spells them, ignoring case; both spot models' case warnings give it.

    Examples
    --------
    >>> print(rename_line("reference.var_names"))  # doctest: +NORMALIZE_WHITESPACE
    names = {g.upper(): g for g in reference.var_names}; spots.var_names =
    [names.get(g.upper(), g) for g in spots.var_names]
    """
    return (
        f"names = {{g.upper(): g for g in {names_of}}}; spots.var_names = "
        "[names.get(g.upper(), g) for g in spots.var_names]"
    )
