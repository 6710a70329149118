"""What Archetypes reports about fitted archetypes, in numpy: merging similar or thin ones,
marker genes in scanpy's layout, and matching to known signatures (stable matching)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence, Set

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage

from ._anchor_notes import warn_anchor_notes
from ._archetypal_analysis import carriers, scaled
from ._archetype_checks import (
    check_batch_size,
    check_count,
    check_signature_names,
    check_training_names,
    genes_named,
    missing_genes_text,
    symbols_advice,
)
from ._empty_spots import drop_empty_spots
from ._gene_advice import identifier_advice
from ._spots import prefixed, warn_empty_spots
from ._validation import warn_user


def rank_genes_layout(profiles: pd.DataFrame, n_genes: int, groupby: str) -> dict:
    """Marker genes of each column of ``profiles`` (genes x archetypes, counts per 10,000) in
    scanpy's ``rank_genes_groups`` layout; see :meth:`deltavae.model.Archetypes.get_markers`."""
    names = profiles.columns
    n_genes = min(n_genes, profiles.shape[0])
    values = profiles.to_numpy()
    fields: dict[str, list[np.ndarray]] = {
        "names": [],
        "scores": [],
        "logfoldchanges": [],
    }
    for k in range(len(names)):
        others = np.delete(values, k, axis=1)
        rest = others.mean(axis=1) if others.shape[1] else np.zeros(len(values))  # one archetype
        score = (values[:, k] - rest) / np.sqrt(values.mean(axis=1) + 1.0)
        top = np.argsort(-score, kind="stable")[:n_genes]
        fields["names"].append(np.asarray(profiles.index[top], dtype=object))
        fields["scores"].append(score[top].astype(np.float32))
        fields["logfoldchanges"].append(
            np.log2((values[top, k] + 1.0) / (rest[top] + 1.0)).astype(np.float32)
        )
    layout = {
        "params": {
            "groupby": groupby,
            "reference": "rest",
            "method": "archetype_profile",
            "use_raw": False,
            "layer": None,  # as scanpy writes it (anndata writes None), not a layer's name
            "corr_method": "none",
        }
    }
    for field, columns in fields.items():
        layout[field] = np.rec.fromarrays(columns, names=list(names))
    nan = np.full(n_genes, np.nan)
    for field in ("pvals", "pvals_adj"):
        layout[field] = np.rec.fromarrays([nan] * len(names), names=list(names))
    return layout


def signature_scores(
    z: np.ndarray,
    genes: pd.Index,
    signatures: Mapping[str, Sequence[str]],
    var: pd.DataFrame | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The signatures kept (``{name: their genes' rows}``) and their scores (signatures x
    archetypes): the mean over a signature's genes (``genes``, one name per row of ``z``; a
    symbol of several rows reads them all) of ``z``, the archetypes' log profiles (genes x
    archetypes) :func:`standardized` across archetypes; see
    :meth:`deltavae.model.Archetypes.match_signatures`. ``var``, the model's genes' table,
    is searched for a column naming the genes when ``genes`` names none."""
    if isinstance(signatures, pd.DataFrame | pd.Series | np.ndarray):
        raise TypeError(
            f"signatures must be a mapping {{name: [genes, ...]}}, got a "
            f"{type(signatures).__name__}. From a cell types x genes table (e.g. "
            "NMFDeconv.get_signatures()), take each type's top genes: {t: list(row.nlargest(20)"
            ".index) for t, row in table.iterrows()}."
        )
    if not isinstance(signatures, Mapping):
        names = list(signatures) if isinstance(signatures, list | tuple | set) else []
        example = (
            f" One signature of these genes: {{'my_type': {names[:3]}...}}."
            if names and all(isinstance(g, str) for g in names)
            else ""
        )
        raise TypeError(
            f"signatures must be a mapping {{name: [genes, ...]}}, got a "
            f"{type(signatures).__name__}.{example}"
        )
    if not signatures:
        raise ValueError("signatures is empty; pass {name: [genes, ...]}.")
    check_signature_names(signatures)  # 1 and '1': one name in the table
    gene_sets = {}
    for name, members in signatures.items():
        gene_list = Sequence | Set | np.ndarray | pd.Index | pd.Series  # Index: df.index[:20]
        if isinstance(members, str) or not isinstance(members, gene_list):
            raise ValueError(
                f"signature {name!r} must be a list of gene names, got {members!r}; e.g. "
                f"{{{name!r}: [{members!r}]}}."
            )
        # A gene listed twice counts once; numpy's names as Python's (not np.str_('CD3E')).
        members = [g.item() if isinstance(g, np.generic) else g for g in dict.fromkeys(members)]
        missing = [g for g in members if g not in genes]
        present = [g for g in members if g in genes]
        if not members:
            warn_user(f"signature {name!r} lists no genes; it is left out.")
        if missing:
            warn_user(missing_genes_text(name, missing, len(members), bool(present), genes, var))
        if present:
            gene_sets[str(name)] = genes.get_indexer_for(present)
    if not any(len(m) for m in signatures.values()):  # not a matter of identifiers
        raise ValueError(
            f"every signature lists no genes ({list(signatures)[:10]}); pass gene names, "
            "e.g. {'my_type': ['Gad1', 'Sst']}. Signatures filtered to the model's genes "
            "first (as [g for g in genes if g in adata.var_names]) keep none of them: pass "
            "them whole, match_signatures says which genes it leaves out."
        )
    if not gene_sets:
        raise ValueError(
            f"no signature has any of its genes among the model's genes{genes_named(genes)} "
            f"({list(signatures)[:10]}). "
            + (
                symbols_advice(var, signatures)
                or identifier_advice([g for m in signatures.values() for g in m], genes)
            )
        )
    return gene_sets, np.stack([z[idx].mean(axis=0) for idx in gene_sets.values()])


def standardized(log_profiles: np.ndarray) -> np.ndarray:
    """Each gene's (row's) log profile standardised across the archetypes (columns)."""
    sd = log_profiles.std(axis=1, keepdims=True)
    return (log_profiles - log_profiles.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def anchors(weights: pd.DataFrame, n_anchors: int, name: str) -> pd.Series:
    """The ``n_anchors`` spots of largest weight (above 1/2) of each archetype they weigh most;
    a NaN row (a spot without counts) anchors none. An archetype no spot weighs above 1/2 (a
    short fit) is anchored by the spots it weighs most; one that no spot weighs most has none
    (only with 2 archetypes left: :func:`warn_thin` says so), listed in ``attrs``."""
    dominant = weights.fillna(-1.0).to_numpy().argmax(axis=1)
    dominant[weights.isna().any(axis=1).to_numpy()] = -1
    anchor = np.full(len(weights), -1)
    below_half, unled = [], []
    for k in range(weights.shape[1]):
        w = weights.iloc[:, k].to_numpy()
        led = np.flatnonzero(dominant == k)
        eligible = led[w[led] > 0.5]
        if not len(led):
            unled.append(str(weights.columns[k]))
        elif not len(eligible):  # a short fit: no weight above 1/2 yet
            eligible = led
            below_half.append(str(weights.columns[k]))
        anchor[eligible[np.argsort(-w[eligible], kind="stable")][:n_anchors]] = k
    anchors = pd.Categorical.from_codes(anchor, categories=weights.columns)
    out = pd.Series(anchors, index=weights.index, name=name)
    out.attrs.update(anchored_below_half=below_half, no_spots=unled)
    return out


def read_anchors(model, n_anchors: int) -> pd.Series:
    """:meth:`~deltavae.model.Archetypes.get_anchors` of the training spots: spots without
    counts anchor none, said with their number and listed in ``attrs["empty_spots"]``."""
    with warnings.catch_warnings():  # said below, of the anchors
        warnings.filterwarnings("ignore", message=r".* spots have no counts in the")
        weights = model.get_archetype_weights()
    empty = weights.isna().any(axis=1).to_numpy()
    if empty.any():
        warn_user(
            f"{int(empty.sum())} of {len(empty)} spots have no counts in the "
            f"{model.adata.n_vars} genes the model reads: they anchor no archetype (left out, "
            "NaN as the spots that are no anchor); get_anchors(...).attrs['empty_spots'] names "
            f"them. Drop spots without counts ({drop_empty_spots(model)})."
        )
    out = anchors(weights, n_anchors, model.anchor_key)
    out.attrs["empty_spots"] = list(weights.index[empty])
    warn_anchor_notes(out, weights)  # by every read, not once by the (cached) merge
    return out


def merge_thin(
    labels: np.ndarray, weights: np.ndarray, deviations: np.ndarray, min_spots: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Join each group of archetypes that fewer than ``min_spots`` points weigh most to the
    group of its most similar archetype (cosine of ``deviations``), thinnest first, while more
    than 2 groups are left (the fewest a model has).

    Parameters
    ----------
    labels
        Group of each raw archetype.
    weights
        Points x raw archetypes.
    deviations
        Raw archetypes x features (profiles minus the mean, see :func:`scaled`).
    min_spots
        Fewest points a group must be the largest weight of.

    Returns
    -------
    The new labels, and (raw archetype, points of its group) for each raw archetype merged
    away, each listed once.

    Examples
    --------
    >>> weights = np.array([[0.9, 0.1, 0.0]] * 5 + [[0.1, 0.9, 0.0]] * 5 + [[0.0, 0.2, 0.8]])
    >>> deviations = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9]])
    >>> merge_thin(np.arange(3), weights, deviations, 3)
    (array([0, 1, 1]), [(2, 1)])
    """
    labels = np.asarray(labels).copy()
    unit = deviations / np.maximum(np.linalg.norm(deviations, axis=1, keepdims=True), 1e-12)
    thin, listed = [], set()
    while len(np.unique(labels)) > 2:
        groups = np.unique(labels)
        spots = carriers(np.stack([weights[:, labels == g].sum(axis=1) for g in groups], 1))
        if spots.min() >= min_spots:
            break
        members = labels == groups[int(np.argmin(spots))]
        similarity = unit[members] @ unit[~members].T
        target = labels[~members][np.unravel_index(np.argmax(similarity), similarity.shape)[1]]
        for raw in np.flatnonzero(members):
            if raw not in listed:
                thin.append((int(raw), int(spots.min())))
                listed.add(raw)
        labels[members] = target
    return labels, thin


def warn_thin(
    thin: list[tuple[int, int]], min_spots: int, weights: np.ndarray, groups: np.ndarray
) -> None:
    """Warn about the archetypes :func:`merge_thin` merged away (``thin``), and about a
    merged archetype (``groups``) still the largest weight of fewer than ``min_spots`` of the
    points (``weights``, raw) because merging stops at 2 archetypes."""
    if thin:
        which = ", ".join(f"raw archetype {a}: {n} spots" for a, n in thin)
        kept = [n for _, n in thin if n > 0]
        them = "them" if len(kept) == len(thin) else "those with spots"
        least = min(kept, default=1)  # min_spots is at least 1: "1 or lower" could not be met
        fewer = f"min_spots={least}" + (" or lower (down to 1)" if least > 1 else "")
        advice = [f"Pass {fewer} to keep {them}"] if kept else []
        if len(kept) < len(thin):
            advice.append(
                ("no" if kept else "No")
                + " spot weighs "
                + ", ".join(f"raw archetype {a}" for a, n in thin if n == 0)
                + " most, so it is merged whatever min_spots (fit fewer archetypes, "
                "n_archetypes, if that is unexpected)"
            )
        n_groups = groups.max() + 1  # the final count: a merge of alike ones said another
        warn_user(
            f"{len(thin)} raw archetype(s) were merged into their most similar archetype, so "
            f"there are now {n_groups} archetypes (of {len(groups)} fitted): they (with any "
            f"merged into them) were the largest weight of fewer than min_spots={min_spots} "
            f"spots ({which}). " + "; ".join(advice) + "."
        )
    n_groups = groups.max() + 1
    spots = carriers(np.stack([weights[:, groups == g].sum(axis=1) for g in range(n_groups)], 1))
    if n_groups == 2 and spots.min() < min_spots:
        lower = f" or pass min_spots={int(spots.min())}" if spots.min() > 0 else ""
        thin_one = f"A{int(np.argmin(spots))}"
        led = (
            f"archetype {thin_one} is the largest weight of only {int(spots.min())} spots"
            if spots.min() > 0  # counted on the merged archetypes
            else f"no spot weighs archetype {thin_one} most, so it has no anchors"
        )
        warn_user(
            f"min_spots={min_spots} was not fully applied: {led}, but merging stops at 2 "
            f"archetypes, the fewest a model has: the spots may hold one state with a few "
            f"outliers, so read A{int(np.argmin(spots))} with care{lower}."
        )


def _warn_alike(labels: np.ndarray, merge_threshold: float) -> None:
    """Say which raw archetypes merged as alike (``labels``: their groups), if any did: the
    spots held fewer distinct states than archetypes were fitted."""
    alike = [members for g in np.unique(labels) if len(members := np.flatnonzero(labels == g)) > 1]
    if not alike:
        return
    which = [f"({', '.join(map(str, members))})" for members in alike]
    which = ", ".join(which[:-1]) + " and " + which[-1] if len(which) > 1 else which[0]
    warn_user(
        f"{len(labels)} raw archetypes were merged into {len(np.unique(labels))}: raw "
        f"archetypes {which} point the same way (cosine similarity of their deviations from "
        f"the mean spot above merge_threshold={merge_threshold}), so the spots hold fewer "
        "distinct states than archetypes were fitted. Fit fewer archetypes (n_archetypes), or "
        "keep them apart with a higher merge_threshold (model.merge_threshold = 1 never "
        "merges); uns['archetypes']['merge_groups'] records the merge."
    )


def merge_groups(
    profiles: np.ndarray,
    mean: np.ndarray,
    weights: np.ndarray,
    merge_threshold: float,
    min_spots: int,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Group of each raw archetype (0..n-1, numbered by first member), the average-linkage
    tree of their :func:`scaled` profiles (cosine), and the thin ones merged away.

    Archetypes merge when their deviations from the mean profile point the same way (cosine
    similarity above ``merge_threshold``; 1 never merges), with a warning naming them; then
    :func:`merge_thin`.
    """
    deviations = scaled(profiles, mean)
    tree = linkage(deviations, method="average", metric="cosine")
    labels = np.arange(len(profiles))
    if merge_threshold < 1.0:
        labels = fcluster(tree, t=1.0 - merge_threshold, criterion="distance")
        if len(np.unique(labels)) < 2 <= len(profiles):
            # One archetype describes nothing: keep the two most different groups.
            labels = fcluster(tree, t=2, criterion="maxclust")
            if len(np.unique(labels)) < 2:
                labels = np.arange(len(profiles))
            warn_user(
                f"merge_threshold={merge_threshold} would merge every archetype into one; "
                f"{len(np.unique(labels))} are kept. Pass a higher merge_threshold to merge "
                "less, or fewer archetypes."
            )
        else:
            _warn_alike(labels, merge_threshold)
    labels, thin = merge_thin(labels, weights, deviations, min_spots)
    _, first = np.unique(labels, return_index=True)
    order = {label: rank for rank, label in enumerate(labels[np.sort(first)])}
    return np.array([order[label] for label in labels]), tree, thin


def _signatures_current(model) -> bool:
    """Whether the archetypes are still those :meth:`match_signatures` matched (assumed for a
    model saved before their profiles were kept); warned when not: more training, or another
    merge_threshold or min_spots, made other archetypes, and their old map would name them
    wrongly."""
    matched = getattr(model, "signature_profiles_", None)
    if matched is None:
        return True
    now = model.get_archetype_profiles()
    if now.columns.equals(matched.columns) and np.allclose(now, matched, rtol=1e-4, atol=1e-9):
        return True
    warn_user(
        "The archetypes changed after match_signatures (more training, or another "
        "merge_threshold or min_spots): their old signature map is not written; call "
        "match_signatures again first."
    )
    return False


def summary(model, names, groups: np.ndarray, tree: np.ndarray, n_empty: int = 0) -> dict:
    """``uns["archetypes"]``: the archetypes' names, how they were merged and chosen, and the
    signature map after ``match_signatures``."""
    out = {
        "names": np.asarray(names, dtype=str),
        "n_archetypes_raw": model.n_archetypes_raw_,
        "merge_threshold": model.merge_threshold,
        "min_spots": model.min_spots,
        "merge_groups": groups,
        "merge_tree": tree,
        "n_empty_spots": n_empty,  # no weights, dominant archetype or anchor (NaN)
    }
    if model.elbow_ is not None:  # numpy scalars of a model saved before: as read back
        out["elbow"] = {
            k: v.item() if isinstance(v, np.generic) else v for k, v in model.elbow_.items()
        }
    if model.signature_map_ is not None and _signatures_current(model):
        table = model.signature_map_
        out["signature_map"] = table.reset_index(names="archetype").astype(
            {"signature": "category"}
        )
        unmatched = table.attrs.get("unmatched_signatures", [])  # not in a map saved before
        out["unmatched_signatures"] = np.asarray(unmatched, dtype=object).astype(str)
        weak = table.attrs.get("weak_matches", [])
        out["weak_matches"] = np.asarray(weak, dtype=object).astype(str)
    return out


def write(model, adata, batch_size, key_added, n_anchors: int) -> list[str]:
    """The body of ``Archetypes.write_to_adata``: its arguments checked, the results of the
    training spots written into ``adata`` (the training spots and genes, in any order)."""
    check_count("write_to_adata", "n_anchors", n_anchors, "spots kept per archetype")
    check_batch_size(batch_size)
    adata = model._write_target(adata)
    in_order = check_training_names(adata, model.adata)
    names = (model.weights_key, model.profiles_key, model.anchor_key, model.dominant_key)
    keys = prefixed(key_added, *names, model.markers_key, model.uns_key)
    with warnings.catch_warnings():  # said once below, of every row written
        warnings.filterwarnings("ignore", message=r".* spots have no counts in the")
        weights = model.get_archetype_weights(batch_size=batch_size)  # then from a cache
    missing = weights.isna().any(axis=1).to_numpy()
    what = f"weights ({keys[0]}), dominant archetype ({keys[3]}) and anchor ({keys[2]})"
    warn_empty_spots(int(missing.sum()), len(missing), what, model)
    with warnings.catch_warnings():  # said above
        warnings.filterwarnings("ignore", message=r".* they anchor no archetype")
        anchors = model.get_anchors(n_anchors)  # an archetype without spots: said there
    profiles = model.get_archetype_profiles()
    if not in_order:  # the training spots and genes, in another order: align by name
        weights, anchors = weights.loc[adata.obs_names], anchors.loc[adata.obs_names]
        profiles = profiles.reindex(adata.var_names)  # genes it did not read: NaN
    adata.obsm[keys[0]] = weights
    adata.varm[keys[1]] = profiles.to_numpy()
    # Without the archetypes no spot weighs most (warned): rank_genes_groups refuses an empty
    # group, as CGMDVAE's columns leave out its empty clusters.
    unled = anchors.attrs["no_spots"]
    adata.obs[keys[2]] = anchors.array.remove_categories(unled)  # as archetype_dominant
    codes = np.where(weights.isna().any(axis=1), -1, weights.fillna(-1.0).to_numpy().argmax(1))
    dominant = pd.Categorical.from_codes(codes, categories=weights.columns)
    adata.obs[keys[3]] = dominant.remove_categories(unled)
    markers = model.get_markers()
    markers["params"]["groupby"] = keys[3]  # the prefixed obs column, for sc.pl plots
    adata.uns[keys[4]] = markers
    adata.uns[keys[5]] = summary(model, weights.columns, *model._merge(), int(missing.sum()))
    adata.uns[keys[5]]["no_spots"] = np.asarray(unled, dtype=object).astype(str)
    slots = ("obsm", "varm", "obs", "obs", "uns", "uns")
    return [f"{slot}/{key}" for slot, key in zip(slots, keys, strict=True)]
