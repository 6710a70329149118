"""Classical archetypal analysis in numpy, behind :class:`deltavae.model.Archetypes`: the start
of its Pyro fit (Cutler and Breiman's alternating constrained least squares,
:func:`convex_archetypes`), the elbow that chooses the number of archetypes, the scaled PCA
embedding both work in, and the stable matching of archetypes to known signatures."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scvi
from scipy.optimize import nnls
from sklearn.decomposition import PCA

# Weight of the sum-to-one row appended to constrained least squares (data are unit-scaled).
_SIMPLEX_PENALTY = 100.0


def _simplex_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||A w - y|| over the simplex, by NNLS with a heavily weighted sum-to-one row."""
    A_aug = np.vstack([A, np.full(A.shape[1], _SIMPLEX_PENALTY)])
    w, _ = nnls(A_aug, np.append(y, _SIMPLEX_PENALTY), maxiter=50 * A.shape[1])
    total = w.sum()
    return w / total if total > 0 else np.full_like(w, 1.0 / len(w))


def _furthest_sum(X: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Start points for archetypal analysis: each new point is furthest from those chosen."""
    chosen = [int(rng.integers(X.shape[0]))]
    distance = np.zeros(X.shape[0])
    for _ in range(k):
        distance += np.linalg.norm(X - X[chosen[-1]], axis=1)
        candidates = distance.copy()
        candidates[chosen] = -np.inf
        chosen.append(int(np.argmax(candidates)))
    # The random first point only seeds the search; it is replaced by the last one found.
    return chosen[1:]


def convex_archetypes(
    X: np.ndarray,
    k: int,
    seed: int = 0,
    max_iter: int = 50,
    tol: float = 1e-4,
    init_B: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Classical archetypal analysis: X ~ W B X with W and B row-stochastic.

    Alternates (Cutler and Breiman 1994): W by constrained least squares given the archetypes
    Z; Z by least squares given W; each archetype projected onto the convex hull of the data
    (B by constrained least squares); Z = B X. The best state met is returned, so the fit is
    never worse than its start.

    Parameters
    ----------
    X
        Points x features (e.g. spots in principal components).
    k
        Number of archetypes.
    seed
        Seed of the furthest-sum start.
    max_iter, tol
        Stop after ``max_iter`` rounds or when the residual sum of squares improves by less
        than ``tol`` (relative).
    init_B
        Start from these archetypes (rows of B, at most ``k``); the missing ones are added by
        furthest sum from them. A fit with k archetypes started from the fit with k - 1 then
        explains at least as much variance (see :func:`archetype_curve`).

    Returns
    -------
    W
        Points x k weights (rows on the simplex).
    B
        k x points weights (rows on the simplex).
    explained_variance
        ``1 - ||X - W B X||^2 / ||X - mean||^2``.

    Examples
    --------
    >>> import numpy as np
    >>> corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> weights = np.random.default_rng(0).dirichlet([1, 1, 1], size=50)
    >>> X = np.vstack([corners, weights @ corners])
    >>> W, B, ev = convex_archetypes(X, 3)
    >>> round(ev, 3)
    1.0
    """
    X = np.asarray(X, dtype=np.float64)
    scale = np.sqrt(((X - X.mean(axis=0)) ** 2).sum() / X.shape[0]) or 1.0
    Xs = X / scale
    B = _start(Xs, k, np.random.default_rng(seed), init_B)
    Z = B @ Xs
    total = ((Xs - Xs.mean(axis=0)) ** 2).sum()
    W = np.stack([_simplex_lstsq(Z.T, x) for x in Xs])
    best = (((Xs - W @ Z) ** 2).sum(), W, B)
    previous = best[0]
    for _ in range(max_iter):
        Z_free = np.linalg.lstsq(W, Xs, rcond=None)[0]
        B = np.stack([_simplex_lstsq(Xs.T, z) for z in Z_free])
        Z = B @ Xs
        W = np.stack([_simplex_lstsq(Z.T, x) for x in Xs])
        rss = ((Xs - W @ Z) ** 2).sum()
        if rss < best[0]:
            best = (rss, W, B)
        if previous - rss < tol * previous:
            break
        previous = rss
    rss, W, B = best
    return W, B, float(1.0 - rss / total)


def _start(Xs: np.ndarray, k: int, rng: np.random.Generator, init_B: np.ndarray | None):
    """B of the first round: ``init_B``'s rows, then points furthest from those chosen."""
    if init_B is None:
        B = np.zeros((k, Xs.shape[0]))
        B[np.arange(k), _furthest_sum(Xs, k, rng)] = 1.0
        return B
    init_B = np.asarray(init_B, dtype=np.float64)
    if init_B.shape[0] > k or init_B.shape[1] != Xs.shape[0]:
        raise ValueError(f"init_B must have at most {k} rows and {Xs.shape[0]} columns.")
    rows = [init_B]
    distance = sum(np.linalg.norm(Xs - z, axis=1) for z in init_B @ Xs)
    for _ in range(k - init_B.shape[0]):
        point = int(np.argmax(distance))
        rows.append(np.eye(1, Xs.shape[0], point))
        distance = distance + np.linalg.norm(Xs - Xs[point], axis=1)
    return np.vstack(rows)


def archetype_curve(X: np.ndarray, ks: Sequence[int], seed: int = 0) -> dict[int, tuple]:
    """:func:`convex_archetypes` for each k in ``ks`` (ascending): a fresh start and a start
    from the previous k's archetypes, keeping the better, so the explained variance never
    falls as k grows (a curve with dips misplaces its elbow).

    Returns ``{k: (W, B, explained_variance)}``.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(60, 4))
    >>> curve = archetype_curve(X, [2, 3, 4, 5])
    >>> ev = [curve[k][2] for k in (2, 3, 4, 5)]
    >>> all(b >= a for a, b in zip(ev, ev[1:]))
    True
    """
    fits: dict[int, tuple] = {}
    previous = None
    for k in sorted(int(k) for k in ks):
        fit = convex_archetypes(X, k, seed=seed)
        if previous is not None:
            nested = convex_archetypes(X, k, seed=seed, init_B=previous[1])
            fit = nested if nested[2] >= fit[2] else fit
        fits[k] = previous = fit
    return fits


def smooth_points(X: np.ndarray, n_neighbors: int):
    """Each point's mean with its nearest neighbours, as a sparse points x points averaging
    matrix S (rows on the simplex; S @ X are the smoothed points).

    Archetypes sit on the convex hull of the data, so a single outlying spot (a doublet, a
    dropout-heavy spot) becomes an archetype of its own. On smoothed points an extreme needs
    ``n_neighbors`` spots behind it; B found there maps back to the spots as B @ S.

    Examples
    --------
    >>> S = smooth_points(np.arange(5.0)[:, None], 3)
    >>> np.asarray(S.sum(axis=1)).ravel()
    array([1., 1., 1., 1., 1.])
    """
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    n = X.shape[0]
    n_neighbors = int(min(max(n_neighbors, 1), n))
    _, idx = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(X)
    rows = np.repeat(np.arange(n), n_neighbors)
    return sparse.csr_matrix(
        (np.full(rows.size, 1.0 / n_neighbors), (rows, idx.ravel())), shape=(n, n)
    )


def carriers(W: np.ndarray) -> np.ndarray:
    """Number of points whose largest weight is on each archetype (columns of ``W``).

    Examples
    --------
    >>> carriers(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))
    array([2, 1])
    """
    return np.bincount(np.asarray(W).argmax(axis=1), minlength=np.asarray(W).shape[1])


def elbow(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the elbow of an increasing, saturating curve (largest gap above its chord).

    Examples
    --------
    >>> elbow(np.array([1, 2, 3, 4, 5]), np.array([0.2, 0.6, 0.9, 0.92, 0.93]))
    2
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(y) == 0:
        return int(np.argmax(y))
    xn = (x - x.min()) / np.ptp(x)
    yn = (y - y.min()) / np.ptp(y)
    return int(np.argmax(yn - xn))


def stable_matching(scores: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one stable matching of rows to columns, both preferring higher scores.

    Gale-Shapley with rows proposing: no row and column both prefer each other to their
    partners. Unlike the assignment that maximises the total score, a pair that prefers each
    other most is never split to raise the sum.

    Parameters
    ----------
    scores
        Rows (e.g. signatures) x columns (e.g. archetypes).

    Returns
    -------
    list of (row, column)
        ``min(n_rows, n_columns)`` pairs, sorted by row.

    Examples
    --------
    >>> stable_matching(np.array([[0.9, 0.8], [0.7, 0.1]]))
    [(0, 0), (1, 1)]
    """
    scores = np.asarray(scores, dtype=float)
    n_rows, n_cols = scores.shape
    preferences = [list(np.argsort(-scores[r], kind="stable")) for r in range(n_rows)]
    partner_of_col: dict[int, int] = {}
    free = list(range(n_rows))
    while free:
        row = free.pop(0)
        if not preferences[row]:
            continue
        col = int(preferences[row].pop(0))
        current = partner_of_col.get(col)
        if current is None:
            partner_of_col[col] = row
        elif scores[row, col] > scores[current, col]:
            partner_of_col[col] = row
            free.append(current)
        else:
            free.append(row)
    return sorted((row, col) for col, row in partner_of_col.items())


def scaled(profiles: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Profiles minus the mean profile, per gene over the square root of the mean.

    A per-gene scale (Pearson-residual-like) keeps mixtures linear yet stops a few highly
    expressed genes from dominating distances.
    """
    return (profiles - mean) / np.sqrt(mean + 1e-12)


def embed(profiles: np.ndarray, n_pcs: int) -> np.ndarray:
    """PCA (seeded by ``scvi.settings.seed``) of the :func:`scaled` profiles."""
    scaled_profiles = scaled(profiles, profiles.mean(axis=0))
    n_components = min(n_pcs, scaled_profiles.shape[0] - 1, scaled_profiles.shape[1])
    return PCA(n_components, random_state=scvi.settings.seed).fit_transform(scaled_profiles)


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
        rest = np.delete(values, k, axis=1).mean(axis=1)
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
            "layer": "None",
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
    log_profiles: np.ndarray, genes: pd.Index, signatures: Mapping[str, Sequence[str]]
) -> tuple[list[str], np.ndarray]:
    """Signature names and their scores (signatures x archetypes): the mean over a signature's
    genes of the archetypes' log profiles (genes x archetypes) standardised across archetypes;
    see :meth:`deltavae.model.Archetypes.match_signatures`."""
    gene_sets = {}
    for name, members in signatures.items():
        if isinstance(members, str) or not isinstance(members, Sequence | set | np.ndarray):
            raise ValueError(
                f"signature {name!r} must be a list of gene names, got {members!r}; e.g. "
                f"{{{name!r}: [{members!r}]}}."
            )
        members = [members] if isinstance(members, str) else list(members)
        missing = [g for g in members if g not in genes]
        present = [g for g in members if g in genes]
        if missing:
            warnings.warn(
                f"signature {name!r}: {len(missing)} of {len(members)} genes are not in the "
                f"data: {missing[:20]}",
                UserWarning,
                stacklevel=3,  # the caller of Archetypes.match_signatures,
            )
        if not present:
            raise ValueError(
                f"signature {name!r} has none of its genes ({members[:10]}) in the data."
            )
        gene_sets[str(name)] = genes.get_indexer(present)
    sd = log_profiles.std(axis=1, keepdims=True)
    standardized = (log_profiles - log_profiles.mean(axis=1, keepdims=True)) / np.where(
        sd > 0, sd, 1.0
    )
    sig_names = list(gene_sets)
    scores = np.stack([standardized[idx].mean(axis=0) for idx in gene_sets.values()])
    return sig_names, scores


def merge_thin(
    labels: np.ndarray, weights: np.ndarray, deviations: np.ndarray, min_spots: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Join each group of archetypes that fewer than ``min_spots`` points weigh most to the
    group of its most similar archetype (cosine of ``deviations``), thinnest first.

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
    The new labels, and (first raw archetype, points) of each group merged away.

    Examples
    --------
    >>> weights = np.array([[0.9, 0.1, 0.0]] * 5 + [[0.1, 0.9, 0.0]] * 5 + [[0.0, 0.2, 0.8]])
    >>> deviations = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9]])
    >>> merge_thin(np.arange(3), weights, deviations, 3)
    (array([0, 1, 1]), [(2, 1)])
    """
    labels = np.asarray(labels).copy()
    unit = deviations / np.maximum(np.linalg.norm(deviations, axis=1, keepdims=True), 1e-12)
    thin = []
    while len(np.unique(labels)) > 1:
        groups = np.unique(labels)
        spots = carriers(np.stack([weights[:, labels == g].sum(axis=1) for g in groups], 1))
        if spots.min() >= min_spots:
            break
        members = labels == groups[int(np.argmin(spots))]
        similarity = unit[members] @ unit[~members].T
        target = labels[~members][np.unravel_index(np.argmax(similarity), similarity.shape)[1]]
        thin.append((int(np.flatnonzero(members)[0]), int(spots.min())))
        labels[members] = target
    return labels, thin


def check_archetype_count(n_archetypes, max_archetypes: int, n_spots: int) -> None:
    """Refuse an ``n_archetypes`` (an integer or ``"auto"``) that cannot be fitted to
    ``n_spots`` spots; see :class:`deltavae.model.Archetypes`."""
    if isinstance(n_archetypes, str):
        if n_archetypes != "auto":
            raise ValueError(f"n_archetypes must be an integer or 'auto'; got {n_archetypes!r}.")
        if max_archetypes < 3:
            raise ValueError(f"max_archetypes must be >= 3 for 'auto'; got {max_archetypes}.")
        if n_spots < 3:
            raise ValueError(
                f"n_archetypes='auto' compares 2 or more archetypes and needs at least 3 "
                f"spots; got {n_spots}. Pass n_archetypes=2, or more spots."
            )
    elif isinstance(n_archetypes, bool) or not isinstance(n_archetypes, int | np.integer):
        raise ValueError(f"n_archetypes must be an integer or 'auto'; got {n_archetypes!r}.")
    elif n_archetypes > n_spots:
        raise ValueError(
            f"n_archetypes={n_archetypes} is larger than the number of spots ({n_spots})."
        )
    elif n_archetypes < 2:
        raise ValueError(f"n_archetypes must be >= 2; got {n_archetypes}.")


def signature_table(
    scores: np.ndarray, sig_names: list[str], archetypes: Sequence[str], variant_ratio: float
) -> pd.DataFrame:
    """Archetypes matched to signatures, variants of a matched signature, and novel states.

    Signatures (rows of ``scores``) and archetypes (columns) are paired by
    :func:`stable_matching`; a pair with a score of 0 or below is not kept. An unmatched
    archetype whose best score reaches ``variant_ratio`` times the score of the archetype
    matched to that same signature is a variant of it (a second T-cell state, say), not a
    novel state. The rest are novel, ranked from the least like any signature (rank 1).

    Examples
    --------
    >>> scores = np.array([[2.0, 1.6, -0.5], [0.1, 0.0, -0.2]])
    >>> signature_table(scores, ["T", "B"], ["A0", "A1", "A2"], 0.5)[["signature", "status"]]
       signature   status
    A0         T  matched
    A1         T  variant
    A2       NaN    novel
    """
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
    return table
