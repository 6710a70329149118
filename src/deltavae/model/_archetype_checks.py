"""What Archetypes checks of the spots it reads after training, with advice it can follow: it
maps new spots through its encoder but has no query mapping (``load_query_data``), so new
genes or new samples cannot be learned onto it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import short_repr
from ._genes import match_genes
from ._labels import refuse_other_type
from ._registered import category_mappings
from ._training_checks import check_batch_size

__all__ = [
    "MergeSettings",
    "check_batch_size",
    "check_count",
    "check_new_spots",
    "check_signature_names",
    "check_training_names",
    "signature_genes",
    "symbols_advice",
]

_ADVICE = (
    "Archetypes' encoder reads every training gene: pass spots that have them all, "
    "model.adata.var_names (others besides are left out, by name). Archetypes cannot make a "
    "missing gene up; spots measured on another gene panel need a model fitted on the shared "
    "genes."
)


def check_new_spots(adata: AnnData, genes: pd.Index | None, registry: dict | None) -> AnnData:
    """``adata`` with the training genes in the training order (reordered, or read from a
    whole holding others besides, on a copy), or a refusal that says what Archetypes can
    do: missing genes and unseen samples by name.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> spots = ad.AnnData(np.ones((2, 2)))
    >>> spots.var_names = ["a", "b"]
    >>> check_new_spots(spots, pd.Index(["a", "b"]), None) is spots
    True
    """
    for key, known in (category_mappings(registry) if registry else {}).items():
        if key not in adata.obs:
            continue  # check_known_categories names the missing column
        given = pd.unique(np.asarray(adata.obs[key].dropna(), dtype=object))
        if not any(isinstance(v, str) for v in (*known, *given)):  # 0.0 for sample 0
            refuse_other_type(f"adata.obs[{key!r}]", known, given, "its samples")
        known = [str(v) for v in known]
        new = pd.Index(adata.obs[key].astype(str).unique()).difference(pd.Index(known))
        if len(new):
            raise ValueError(
                f"adata.obs[{key!r}] holds samples the model was not trained with: "
                f"{new[:5].tolist()}; known: {known[:10]}. Archetypes learns a technical factor "
                "per training sample and cannot learn a new one after training: fit Archetypes "
                f"on all samples together (Archetypes.setup_anndata(adata, sample_key={key!r})), "
                "or, as an approximation, label the new spots with a similar training sample."
            )
    return match_genes(adata, genes, advice=_ADVICE, extra_genes=True)  # as every model's


def check_count(method: str, name: str, value, meaning: str) -> None:
    """Refuse a ``value`` of ``name`` (``meaning``, what it counts) that is not a positive
    integer, by its type and shape for an AnnData: ``method``, the method the user called,
    reads the fitted archetypes (``write_to_adata`` takes the spots as ``adata``).

    Examples
    --------
    >>> check_count("write_to_adata", "n_anchors", AnnData(np.ones((2, 3))), "spots")
    Traceback (most recent call last):
    ...
    ValueError: n_anchors must be a positive integer (spots); got AnnData ... write_to_adata ...
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        hint = ""
        if isinstance(value, AnnData):
            hint = (
                f" {method} takes the spots as adata, its first argument."
                if method == "write_to_adata"
                else f" {method} reads the fitted archetypes and takes no spots."
            )
        raise ValueError(
            f"{name} must be a positive integer ({meaning}); got {short_repr(value)}.{hint}"
        )


def check_signature_names(names) -> None:
    """Refuse signature names that are one name as text (``1`` and ``"1"``): the table names
    signatures by ``str``, so the later one silently replaced the earlier.

    Examples
    --------
    >>> check_signature_names(["B", "T", 1])
    """
    by_text: dict[str, list] = {}
    for name in names:
        by_text.setdefault(str(name), []).append(name)
    same = [group for group in by_text.values() if len(group) > 1]
    if same:
        listed = "; ".join(" and ".join(short_repr(n) for n in group) for group in same[:5])
        raise ValueError(
            f"signatures has names that are the same as text: {listed}. Signatures are named "
            "by str in the results, so one would replace the other: rename one of them, or "
            "join their genes under one name."
        )


def signature_genes(adata: AnnData, gene_symbols: str | None) -> pd.Index:
    """The names a signature's genes are looked up in: the training genes (``var_names``), or
    their symbols in the ``var`` column ``gene_symbols`` (scanpy's ``gene_symbols``)."""
    if gene_symbols is None:
        return adata.var_names.rename(None)
    if not isinstance(gene_symbols, str) or gene_symbols not in adata.var.columns:
        raise KeyError(
            f"gene_symbols={short_repr(gene_symbols)} is not a column of model.adata.var "
            f"(its columns: {list(map(str, adata.var.columns))[:10]}); pass the column that "
            "names each gene's symbol, or None to read the signatures in var_names."
        )
    return pd.Index(adata.var[gene_symbols].astype(str).to_numpy(), name=gene_symbols)


def genes_named(genes: pd.Index) -> str:
    """How :func:`signature_genes` named the model's genes: ``""`` (var_names) or the column."""
    return "" if genes.name is None else f" (by their var[{genes.name!r}])"


def missing_genes_text(
    name, missing: list, n_members: int, any_present: bool, genes, var=None
) -> str:
    """The warning on a signature's genes that the model has not: they may well be in the
    AnnData (the whole of an ``adata[:, hvg]`` the model was trained on), where "not in the
    data" was said; the model has profiles of its own genes only. Genes that a column of
    ``var`` names (Kang's ``CD79A``, whose var_name is ``CD79A_ENSG00000105369``) get
    ``gene_symbols=`` advice, not the training genes'."""
    dropped = "" if any_present else "; the signature is left out"
    upper = {}
    for gene in map(str, genes):
        upper.setdefault(gene.upper(), gene)
    cased = [(g, upper[str(g).upper()]) for g in missing if str(g).upper() in upper]
    in_var = symbols_advice(var, {name: missing}) if genes.name is None else ""
    why = (  # 'Cd3e' against the model's 'CD3E': no matter of training genes
        f"{len(cased)} of them are the model's genes ignoring case (e.g. {cased[0][0]!r} is "
        f"{cased[0][1]!r}): write them as the model's genes are written"
        if cased
        else in_var[:-1]
        if in_var
        else "a gene left out of training, as by a highly variable gene selection, has none"
    )
    return (
        f"signature {name!r}: {len(missing)} of {n_members} genes are not among the model's "
        f"{len(genes)} genes{genes_named(genes)}, which alone have profiles ({why}): "
        f"{missing[:20]}{dropped}"
    )


def symbols_advice(var: pd.DataFrame | None, signatures) -> str:
    """Where signatures name none of the model's genes: ``gene_symbols=<column>`` for the
    ``var`` column of text that names the most of their genes; ``""`` where none does."""
    wanted = {str(g) for members in signatures.values() for g in members}
    best, most = None, 0
    for column in [] if var is None else var.columns:
        values = var[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        found = len(wanted & set(values.astype(str)))
        best, most = (column, found) if found > most else (best, most)
    if best is None:
        return ""
    return (
        f"model.adata.var[{str(best)!r}] names {most} of them: pass "
        f"gene_symbols={str(best)!r} to read the signatures in that column."
    )


class MergeSettings:
    """Archetypes' ``merge_threshold`` and ``min_spots``: checked when set, at construction or
    after training (the archetypes merge again), and kept in ``merge_threshold_`` and
    ``min_spots_``, which ``save`` writes and ``load`` restores, so that a loaded model merges
    as the saved one did (not as its constructor's arguments said)."""

    @property
    def merge_threshold(self) -> float:
        """Similarity above which archetypes merge, in (0, 1] (1 never merges); can be set
        after training, and is saved with the model."""
        return self.merge_threshold_

    @merge_threshold.setter
    def merge_threshold(self, value) -> None:
        number = isinstance(value, int | float | np.integer | np.floating)
        if isinstance(value, bool) or not number or not 0 < value <= 1:  # NaN too
            raise ValueError(f"merge_threshold must lie in (0, 1]; got {short_repr(value)}.")
        self.merge_threshold_ = float(value)

    @property
    def min_spots(self) -> int:
        """Fewest spots that must weigh an archetype most for it to stand on its own; can be
        set after training, and is saved with the model."""
        return self.min_spots_

    @min_spots.setter
    def min_spots(self, value) -> None:
        check_count("Archetypes", "min_spots", value, "spots an archetype must lead")
        self.min_spots_ = int(value)

    @property
    def summary_string(self) -> str:
        """The model's summary (``print(model)``) with its merge threshold as it is now (it
        showed the constructor's after ``model.merge_threshold`` was set)."""
        summary, _, status = super().summary_string.rpartition("\nTraining status")
        return f"{summary}, merge threshold {self.merge_threshold:g}\nTraining status{status}"


_WRITE_ADVICE = {
    "spots": "Map new spots with get_archetype_weights(new_adata) instead.",
    "genes": "Pass the AnnData the model was trained on, or one holding its training genes "
    "and others besides (the whole of a gene subset it was trained on).",
}


def check_training_names(adata, trained) -> bool:
    """Whether ``adata`` holds the training spots and genes in the training order; ``False``
    when it holds them in another order, or the training genes among others (the whole of a
    gene subset, ``adata[:, hvg]``, the model was trained on: their profiles are NaN there).
    Anything else (other, missing or repeated spots, missing or repeated genes) raises, naming
    what differs."""
    in_order = True
    for axis, what in (("obs_names", "spots"), ("var_names", "genes")):
        mine, theirs = getattr(adata, axis), getattr(trained, axis)
        if mine.equals(theirs):
            continue
        n_other = int((~mine.isin(theirs)).sum())
        n_lacking = int((~theirs.isin(mine)).sum())
        more_genes = what == "genes" and not n_lacking
        if (
            not mine.is_unique
            or not theirs.is_unique
            or (not more_genes and (len(mine) != len(theirs) or n_other))
        ):
            # What differs, only what does: a subset of the spots "has 299, 0 of them not
            # among the training spots" read as if nothing did.
            # (genes besides the training genes are taken: no fault)
            differs = [f"{n_other} not among them"] if n_other and what == "spots" else []
            differs += [f"lacking {n_lacking} of them"] if n_lacking else []
            differs += [] if mine.is_unique else ["some repeated"]
            differs += [] if theirs.is_unique else [f"the training {what} hold repeated names"]
            raise ValueError(
                f"write_to_adata writes into the training {what} ({len(theirs)}, in any "
                f"order{', others besides' if what == 'genes' else ''}); this AnnData has "
                f"{len(mine)} {what}: {', '.join(differs)}. " + _WRITE_ADVICE[what]
            )
        in_order = False
    return in_order
