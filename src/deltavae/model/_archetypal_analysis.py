"""Classical archetypal analysis in numpy, behind :class:`deltavae.model.Archetypes`: the start
of its Pyro fit (Cutler and Breiman's alternating constrained least squares,
:func:`convex_archetypes`, on neighbour-averaged spots), the monotone explained-variance curve
and its elbow that choose the number of archetypes, and the scaled PCA embedding they work in.
What is reported about fitted archetypes is in ``_archetype_results.py``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.optimize import nnls
from sklearn.decomposition import PCA

from .._rng import start_seed

logger = logging.getLogger(__name__)

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
    # Points that all coincide have nothing to explain: the archetypes explain all of it.
    return W, B, float(1.0 - rss / total) if total > 0 else 1.0


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


#: ``n_archetypes="auto"`` stops at the first number of archetypes whose next one explains
#: less than this share of the variance that 2 archetypes leave unexplained.
MIN_GAIN = 0.07


def elbow(x: np.ndarray, y: np.ndarray, min_gain: float = MIN_GAIN) -> int:
    """Index of the elbow of an increasing, saturating curve (explained variance ``y`` of
    ``x`` archetypes, ``y <= 1``): the first point whose next one adds less than ``min_gain``
    of what the first point leaves (``1 - y[0]``); the last point where none does.

    A stopping rule reads the curve up to one point past its choice, so a longer range
    (``max_archetypes``) cannot move it. The largest gap above the chord of the whole curve,
    the rule before, moved with the range's end: the olfactory bulb gave 3 archetypes with
    ``max_archetypes`` 6 or 8 and 5 with 10 to 15, a hypothalamus slice 4 with 6 to 12 and
    7-8 with 15 (seeds 0-2); this rule gives 5 (4 for seed 2) and 4 from every range, and the
    true count (3 to 6) on convex mixtures as before. The share: 5% sat on the step to a
    6th archetype of PBMC pseudo-spots of 5 types (0.050), which chose 5, 6 or 7 from run to
    run; 8% fell below that to a 5th (0.077).

    Examples
    --------
    >>> elbow(np.array([2, 3, 4, 5, 6]), np.array([0.5, 0.8, 0.95, 0.96, 0.97]))
    2
    >>> elbow(np.array([2, 3, 4]), np.array([0.5, 0.8, 0.95]))  # still rising at the end
    2
    """
    y = np.asarray(y, dtype=float)
    left = max(1.0 - y[0], 0.0) if len(y) else 0.0
    flat = np.flatnonzero(np.diff(y) < min_gain * left)
    return int(flat[0]) if len(flat) else max(len(y) - 1, 0)


def scaled(profiles: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Profiles minus the mean profile, per gene over the square root of the mean.

    A per-gene scale (Pearson-residual-like) keeps mixtures linear yet stops a few highly
    expressed genes from dominating distances.
    """
    out = profiles - mean  # divided in place: one array of the profiles' size, not two
    out /= np.sqrt(mean + 1e-12)
    return out


def embed(profiles: np.ndarray, n_pcs: int) -> np.ndarray:
    """PCA (seeded by ``scvi.settings.seed``, 0 while unset) of the :func:`scaled` profiles."""
    scaled_profiles = scaled(profiles, profiles.mean(axis=0))
    n_components = min(n_pcs, scaled_profiles.shape[0] - 1, scaled_profiles.shape[1])
    # copy=False: PCA centres the scaled copy in place instead of making another.
    pca = PCA(n_components, random_state=start_seed(), copy=False)
    return pca.fit_transform(scaled_profiles)


def start_archetypes(
    embedding: np.ndarray, n_archetypes, max_archetypes: int, smooth_neighbors: int, seed: int
) -> tuple[np.ndarray, dict | None]:
    """Archetypes' start (B over the candidate spots) from classical archetypal analysis of the
    spots averaged over ``smooth_neighbors`` neighbours (:func:`smooth_points`); with
    ``n_archetypes="auto"`` the number is the elbow of the explained variance over
    2..``max_archetypes`` (:func:`archetype_curve`, :func:`elbow`: the first number whose next
    one explains less than ``MIN_GAIN`` of what 2 leave), also returned as a dict (else None;
    ``"min_gain"``: that share, ``"stopped"``: whether the rule stopped inside the range, not
    at its end)."""
    smoother = smooth_points(embedding, smooth_neighbors)
    points = smoother @ embedding
    summary = None
    if n_archetypes == "auto":
        ks = np.arange(2, min(max_archetypes, len(points) - 1) + 1)
        fits = archetype_curve(points, ks, seed=seed)
        explained = np.array([fits[int(k)][2] for k in ks])
        n_archetypes = int(ks[elbow(ks, explained)])
        B = fits[n_archetypes][1]
        stopped = bool(n_archetypes < ks[-1])  # a Python bool, as .h5ad reads it back
        summary = {"n_archetypes": ks, "explained_variance": explained, "chosen": n_archetypes}
        summary |= {"min_gain": MIN_GAIN, "stopped": stopped}
        logger.info("n_archetypes='auto' chose %d (elbow of %s)", n_archetypes, explained)
        if not stopped:
            logger.info(
                "each archetype up to %d still explained %g of what 2 leave: a larger "
                "max_archetypes may choose more",
                n_archetypes, MIN_GAIN,
            )  # fmt: skip
    else:
        B = convex_archetypes(points, int(n_archetypes), seed=seed)[1]
    return np.asarray((smoother.T @ B.T).T), summary  # over the candidate spots themselves


def check_archetype_count(
    n_archetypes, max_archetypes: int, n_spots: int, max_candidates: int | None = None
) -> None:
    """Refuse an ``n_archetypes`` (an integer or ``"auto"``) that cannot be fitted to
    ``n_spots`` spots, or made of at most ``max_candidates`` candidate spots; see
    :class:`deltavae.model.Archetypes`."""
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
    fewest = 3 if n_archetypes == "auto" else int(n_archetypes)  # "auto" fits 2 of 3 spots
    if max_candidates is not None and max_candidates < fewest:
        raise ValueError(
            f"max_candidates={max_candidates} is too few for n_archetypes={n_archetypes!r}: "
            "each archetype is a mixture of candidate spots, so k archetypes need at least k "
            f"candidates to differ ('auto' at least 3). Pass max_candidates={fewest} or more."
        )
