"""``Archetypes.match_signatures``: the signatures' genes read in the model's gene names or
in a column of their symbols, scored against the archetype profiles and matched; a signature
left unmatched is told the gene that pulls its score down."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ._archetype_checks import signature_genes
from ._archetype_results import signature_scores, standardized
from ._stable_matching import stable_matching
from ._validation import warn_user

_CP10K = 1e4


def match_signatures(model, signatures, variant_ratio: float, gene_symbols) -> pd.DataFrame:
    """The body of :meth:`deltavae.model.Archetypes.match_signatures`: its table, kept with
    the profiles it was made of (``signature_map_``, ``signature_profiles_``, saved)."""
    genes = signature_genes(model.adata, gene_symbols)  # before the profiles are read
    profiles = model.get_archetype_profiles()
    z = standardized(np.log1p(profiles.to_numpy() * _CP10K))
    gene_sets, scores = signature_scores(z, genes, signatures, model.adata.var)
    rows = list(gene_sets.values())
    names = [str(name) for name in profiles.columns]

    def note(row: int) -> str:
        return pulled_down(z[rows[row]], genes[rows[row]], names)

    table = signature_table(scores, list(gene_sets), profiles.columns, variant_ratio, note)
    table.attrs["weak_matches"] = weak_matches(table, z, gene_sets)
    # The map is written while these profiles hold (saved); both set once it is made.
    model.signature_profiles_, model.signature_map_ = profiles, table
    return table


#: Random gene sets drawn per signature size to judge its match (:func:`weak_matches`).
_NULL_SETS = 200

#: The share of the model's genes from which a signature is too broad to mark an archetype.
_BROAD_SHARE = 0.5


def weak_matches(table: pd.DataFrame, z: np.ndarray, gene_sets: dict) -> list[str]:
    """Mark the rows (``matched`` and ``variant``) whose signature does not tell their
    archetype from random genes, in a ``weak`` column of ``table`` (``False`` elsewhere), warn
    about them and return their signatures (each once, in table order). A row is weak where

    - its score is below the median best score (over the archetypes) of random sets of as
      many of the model's genes (``z``: genes x archetypes, standardised; ``gene_sets``: each
      signature's rows): its genes mark the archetype no more than random genes do (a state
      the data lack was reported matched, at a score of 0.02 of a sd, without a word); a
      variant is judged at its own score (at ``variant_ratio`` of its match's, it may be
      under random though the match is not);
    - or its signature holds half of the model's genes or more: random sets of its size are
      mostly its own genes, so no score can show that its genes mark the archetype (a
      signature of every gene scores as random sets of every gene, and matched whichever
      archetype expresses most genes most).

    The draws are fixed (seed 0): the same model and signatures, the same marks.

    Examples
    --------
    >>> z = np.array([[1.4, -0.7, -0.7], [-0.7, 1.4, -0.7], [-0.7, -0.7, 1.4]] * 4)
    >>> table = pd.DataFrame({"signature": ["a", "flat"], "score": [1.4, 0.0],
    ...                       "status": ["matched", "matched"]}, index=["A0", "A1"])
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as said:
    ...     warnings.simplefilter("always")
    ...     weak = weak_matches(table, z, {"a": np.array([0, 3]), "flat": np.array([0, 1, 2])})
    >>> weak, table["weak"].tolist(), str(said[0].message)[:52]
    (['flat'], [False, True], '1 of 2 signatures matched an archetype no more than ')
    """
    rng, null, weak = np.random.default_rng(0), {}, []
    table["weak"] = False
    for archetype, row in table[table["status"].isin(["matched", "variant"])].iterrows():
        size, typical = len(gene_sets[row["signature"]]), None
        if size < _BROAD_SHARE * len(z):  # else random sets of its size: mostly its own genes
            if size not in null:
                best = [
                    z[rng.choice(len(z), size, replace=False)].mean(axis=0).max()
                    for _ in range(_NULL_SETS)
                ]
                null[size] = float(np.median(best))
            typical = null[size]
            if row["score"] >= typical:
                continue
        weak.append((row["signature"], archetype, row["status"], row["score"], typical, size))
    table.loc[[archetype for _, archetype, *_ in weak], "weak"] = True
    names = list(dict.fromkeys(name for name, *_ in weak))
    if weak:
        said = ", ".join(_weak_row(*row, len(z)) for row in weak[:10])
        warn_user(
            f"{len(names)} of {len(gene_sets)} signatures matched an archetype no more than "
            f"random genes mark one: {said}{' and more' if len(weak) > 10 else ''} (a score "
            "against the median best score of random sets of as many of the model's genes; a "
            "signature of half the model's genes or more is weak whatever its score). Their "
            "genes do not tell the archetypes apart: the match says little of what the "
            "archetype is, as where the state is not in the data. Their rows are marked in the "
            "table's 'weak' column and the signatures listed in its attrs['weak_matches']."
        )
    return names


def _weak_row(name, archetype, status, score, typical, size, n_genes) -> str:
    """A weak row in :func:`weak_matches`' warning."""
    what = "" if status == "matched" else f", a {status}"
    if typical is None:
        return f"{name!r} ({archetype}{what}: {size} of the model's {n_genes} genes)"
    return f"{name!r} ({archetype}{what}: {score:.2f}, random sets of {size} genes {typical:.2f})"


def pulled_down(z: np.ndarray, genes: Sequence[str], archetypes: Sequence[str]) -> str:
    """What to add, in the warning of an unmatched signature, about its gene that pulls its
    best score down most: the one whose removal raises the signature's best score (over the
    archetypes) most, named with the archetype then best, its score there without the gene and
    the gene's own standardised log expression there (``z``: the signature's genes x
    archetypes; ``genes``: their names, a symbol of several rows named on each). Nothing for a
    signature of one gene, or where no gene lies below 0 in the archetype best without it.

    A signature of a marker gene and an "anti-marker" (lowest in the type's archetype, higher
    in another one than the marker) scores best in the wrong archetype:

    Examples
    --------
    >>> z = np.array([[1.37, -0.6, -0.8], [-1.41, 0.6, 0.9]])  # best A2: 0.05
    >>> pulled_down(z, ["Penk", "Doc2g"], ["A0", "A1", "A2"])
    '; without Doc2g (-1.41 in A0), its best is A0 at 1.37'
    """
    genes = np.asarray(genes, dtype=object)
    names = list(dict.fromkeys(genes))
    if len(names) < 2:
        return ""
    best = z.mean(axis=0).max()
    without = np.stack([z[genes != name].mean(axis=0) for name in names])
    gene, col = np.unravel_index(int(np.argmax(without)), without.shape)
    drag = z[genes == names[gene], col].mean()
    if without[gene, col] <= best or drag >= 0:
        return ""
    return (
        f"; without {names[gene]} ({drag:.2f} in {archetypes[col]}), its best is "
        f"{archetypes[col]} at {without[gene, col]:.2f}"
    )


def signature_table(
    scores: np.ndarray,
    sig_names: list[str],
    archetypes: Sequence[str],
    variant_ratio: float,
    note: Callable[[int], str] | None = None,
) -> pd.DataFrame:
    """Archetypes matched to signatures, variants of a matched signature, and novel states.

    Signatures (rows of ``scores``) and archetypes (columns) are paired by
    :func:`stable_matching`; a pair with a score of 0 or below is not kept. An unmatched
    archetype whose best score reaches ``variant_ratio`` times the score of the archetype
    matched to that same signature is a variant of it (a second T-cell state, say), not a
    novel state. The rest are novel, ranked from the least like any signature (rank 1).

    Examples
    --------
    >>> scores = np.array([[2.0, 1.6, -0.5, 0.1], [0.1, 0.0, -0.2, 0.9]])
    >>> names = ["A0", "A1", "A2", "A3"]
    >>> signature_table(scores, ["T", "B"], names, 0.5)[["signature", "status"]]
       signature   status
    A0         T  matched
    A1         T  variant
    A2       NaN    novel
    A3         B  matched

    A signature left without an archetype is warned about and listed in the table's
    ``attrs["unmatched_signatures"]``; ``note(row)`` adds what the warning says of the
    signature of row ``row`` (``pulled_down``).
    """
    if not 0 < variant_ratio <= 1:
        raise ValueError(f"variant_ratio must lie in (0, 1]; got {variant_ratio}.")
    n = len(archetypes)
    best = scores.argmax(axis=0)
    table = pd.DataFrame(
        {
            "signature": pd.Series([np.nan] * n, dtype=object),
            "score": scores.max(axis=0),
            "status": "novel",
            "novel_rank": np.nan,
        },
        index=pd.Index(list(archetypes)),
    )
    matched = {}
    for row, col in stable_matching(scores):
        if scores[row, col] > 0:
            table.iloc[col, :3] = [sig_names[row], scores[row, col], "matched"]
            matched[row] = col
    for col in np.flatnonzero(table["status"] == "novel"):
        row = int(best[col])
        if row in matched and scores[row, col] >= variant_ratio * scores[row, matched[row]] > 0:
            table.iloc[col, [0, 2]] = [sig_names[row], "variant"]
    novel = table.index[table["status"] == "novel"]
    order = table.loc[novel, "score"].sort_values().index
    table.loc[order, "novel_rank"] = np.arange(1, len(order) + 1)
    unmatched = [name for row, name in enumerate(sig_names) if row not in matched]
    table.attrs["unmatched_signatures"] = unmatched
    if unmatched:
        best = []
        for row in (sig_names.index(name) for name in unmatched[:10]):
            col = int(np.argmax(scores[row]))
            taken = table.iloc[col]
            owner = (
                f", matched to {taken['signature']!r} at {taken['score']:.2f}"
                if taken["status"] == "matched"
                else ""
            )
            said = note(row) if note is not None else ""
            best.append(
                f"{sig_names[row]!r} (best {archetypes[col]}: {scores[row, col]:.2f}{owner}{said})"
            )
        warn_user(
            f"{len(unmatched)} of {len(sig_names)} signatures matched no archetype: "
            f"{', '.join(best)}{' and more' if len(unmatched) > 10 else ''}. Each archetype "
            "goes to one signature (the one it and the signature prefer), and a score of 0 or "
            "below is no match; a state the archetypes lack needs more archetypes "
            "(n_archetypes) or less merging (a higher merge_threshold). They are listed in "
            "the table's attrs['unmatched_signatures']."
        )
    return table
