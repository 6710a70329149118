"""Synthetic data with known ground truth: ZINB counts and conditional Gaussian blobs.

Every generator takes a ``seed`` for a :class:`numpy.random.Generator`, so the same call gives the
same data (``seed=None`` draws a seed, recorded in ``uns`` like a given one). The true
parameters go to ``adata.uns["synthetic"]`` as arrays, which are saved to ``.h5ad`` as they
are.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._checks import check_bool
from .._renamed import foreign_keywords
from .._warn import warn_user

logger = logging.getLogger(__name__)

_MAX_CENTER_DRAWS = 100


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


def _check_seed(seed) -> int:
    """A generator's seed: a non-negative integer; ``None`` draws one from the operating
    system, recorded in ``uns`` like a given one so that the data can be made again."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**32)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer (or None for a fresh one)")
    return int(seed)


def _check_range(name: str, value, integer: bool = False) -> tuple[float, float]:
    """A (low, high) range argument; one number is the range of that number alone.

    Examples
    --------
    >>> _check_range("cells_per_spot", 5, integer=True), _check_range("size", (1.5, 2))
    ((5, 5), (1.5, 2.0))
    """
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    low_ok = len(pair) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float, np.number)) for v in pair
    )
    if not low_ok or (integer and any(float(v) != int(v) for v in pair)):
        kind = "whole numbers" if integer else "numbers"
        raise ValueError(f"{name}={value!r} must be (low, high), two {kind}, or one {kind[:-1]}")
    low, high = (int(v) if integer else float(v) for v in pair)
    if not 0 < low <= high < np.inf:
        raise ValueError(f"{name}={value!r} must be (low, high) with 0 < low <= high < inf")
    return low, high


def _is_number(value) -> bool:
    """A real number (not a bool, string or None), which numpy's checks can take."""
    return (
        not isinstance(value, (bool, np.bool_))
        and np.ndim(value) == 0
        and np.asarray(value).dtype.kind in "iuf"
    )


def _check_positive(name: str, value: float) -> float:
    if not _is_number(value) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def _condition_names(n_conditions: int) -> list[str]:
    if n_conditions == 2:
        return ["ctrl", "stim"]
    return [f"c{i}" for i in range(n_conditions)]


def _cluster_names(n_clusters: int) -> list[str]:
    return [str(k) for k in range(n_clusters)]


def _labels_obs(
    cluster: np.ndarray,
    condition: np.ndarray,
    n_clusters: int,
    n_conditions: int,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """``obs`` with every cluster and condition a category, drawn cells or not (their codes
    index ``uns["synthetic"]``'s arrays); one of positive weight that no cell drew (few
    cells) is warned, naming it and how to drop it."""
    cluster_names = _cluster_names(n_clusters)
    condition_names = _condition_names(n_conditions)
    drawn = np.ones(n_clusters, bool) if weights is None else np.asarray(weights) > 0
    empty = [
        f"{key} {names[k]!r}"
        for key, names, codes, possible in (
            ("cluster", cluster_names, cluster, drawn),
            ("condition", condition_names, condition, np.ones(n_conditions, bool)),
        )
        for k in np.flatnonzero(possible & (np.bincount(codes, minlength=len(names)) == 0))
    ]
    if empty:
        warn_user(
            f"No cell of the {cluster.shape[0]} drew {', '.join(empty)}: kept as categories "
            "without cells (their codes index uns['synthetic']'s arrays). Draw more cells, or "
            "drop them with adata.obs[key] = adata.obs[key].cat.remove_unused_categories()."
        )
    return pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(cluster, categories=cluster_names),
            "condition": pd.Categorical.from_codes(condition, categories=condition_names),
        },
        index=[f"cell_{i}" for i in range(cluster.shape[0])],
    )


def _cluster_weights(weights: np.ndarray | None, n_clusters: int) -> np.ndarray:
    if weights is None:
        return np.full(n_clusters, 1.0 / n_clusters)
    weights = np.asarray(weights, dtype=float)
    if (
        weights.shape != (n_clusters,)
        or not np.all((weights >= 0) & (weights < np.inf))
        or weights.sum() <= 0
    ):
        raise ValueError(
            f"cluster_weights has shape {weights.shape} (sum {weights.sum():.3g}); expected "
            f"{n_clusters} finite non-negative weights with a positive sum"
        )
    return weights / weights.sum()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sample_nb(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Negative binomial as a gamma-Poisson mixture: variance ``mean + mean**2 / theta``."""
    rate = rng.gamma(shape=theta, scale=mean / theta)
    return rng.poisson(rate)


def _condition_effects(
    rng: np.random.Generator,
    n_conditions: int,
    n_clusters: int,
    n_genes: int,
    n_condition_genes: int,
    log_fold: float,
    condition_specific: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-fold changes (conditions x clusters x genes) and the affected genes per cluster.

    The first condition is the reference and has no effect. Each affected gene goes up or down
    by ``log_fold`` at random, independently per condition.
    """
    effect = np.zeros((n_conditions, n_clusters, n_genes))
    if condition_specific:
        genes = np.stack(
            [rng.choice(n_genes, n_condition_genes, replace=False) for _ in range(n_clusters)]
        )
    else:
        genes = np.tile(rng.choice(n_genes, n_condition_genes, replace=False), (n_clusters, 1))
    genes = np.sort(genes, axis=1)
    signs = rng.choice([-1.0, 1.0], size=(n_conditions - 1, n_clusters, n_condition_genes))
    if not condition_specific:
        signs[:] = signs[:, :1, :]
    cluster_index = np.arange(n_clusters)[:, None]
    effect[1:, cluster_index, genes] = signs * log_fold
    return effect, genes


@foreign_keywords(random_state="seed")
def synthetic_counts(
    n_cells: int = 1000,
    n_genes: int = 200,
    n_clusters: int = 5,
    n_conditions: int = 2,
    seed: int = 0,
    *,
    n_markers: int | None = None,
    marker_fold: float = 4.0,
    n_condition_genes: int | None = None,
    condition_fold: float = 3.0,
    condition_specific: bool = False,
    library_size: float = 1000.0,
    library_log_sd: float = 0.3,
    dispersion: float = 5.0,
    dropout: float = 0.1,
    cluster_weights: np.ndarray | None = None,
) -> ad.AnnData:
    """Zero-inflated negative binomial counts with clusters and condition effects.

    Each cluster ``k`` has a log-expression profile: a background shared by all clusters, plus
    ``log(marker_fold)`` on the cluster's own block of ``n_markers`` marker genes. Condition ``c``
    adds log-fold changes ``±log(condition_fold)`` to ``n_condition_genes`` genes. The first
    condition is the reference. A softmax over genes turns the profile into proportions ``rho``.
    Cell ``i`` then has mean ``l_i * rho[k_i, c_i]``, where the library size ``l_i`` is
    log-normal with mean ``library_size``. The counts are NB with per-gene inverse dispersion
    ``theta`` (log-normal around ``dispersion``). Each entry is then set to zero with probability
    ``dropout``.

    Parameters
    ----------
    n_cells, n_genes
        Size of the count matrix.
    n_clusters
        Number of cell populations, assigned at random with ``cluster_weights``.
    n_conditions
        Number of conditions, assigned uniformly at random. Two conditions are named ``ctrl`` and
        ``stim``; otherwise ``c0``, ``c1``, and so on.
    seed
        Seed for :func:`numpy.random.default_rng`.
    n_markers
        Marker genes per cluster. The default is ``min(20, n_genes // (2 * n_clusters))`` (at
        least 1). Marker blocks are contiguous: cluster ``k`` owns genes
        ``k * n_markers`` to ``(k + 1) * n_markers - 1``.
    marker_fold
        Fold change of a cluster's markers over the shared background.
    n_condition_genes
        Genes shifted by each non-reference condition. The default is ``max(1, n_genes // 10)``.
    condition_fold
        Fold change (up or down, at random) of a condition-affected gene.
    condition_specific
        If True, each cluster has its own affected genes and directions. If False, all clusters
        share them.
    library_size
        Mean of the log-normal library sizes.
    library_log_sd
        Log-scale standard deviation of the library sizes.
    dispersion
        Median inverse dispersion ``theta`` of the NB (larger means closer to Poisson).
    dropout
        Zero-inflation probability, in [0, 1).
    cluster_weights
        Cluster probabilities (normalised). Uniform if None.

    Returns
    -------
    anndata.AnnData
        ``X`` and ``layers["counts"]``: CSR float32 with integer counts.
        ``obs``: ``cluster``, ``condition`` (categorical: every cluster and condition, one
        that no cell drew too, warned) and ``library_size`` (the true ``l_i``).
        ``var``: ``marker_of`` (the cluster a gene marks, or ``"none"``) and ``condition_gene``.
        ``uns["synthetic"]``: the true parameters: ``cluster_log_mean`` (clusters x genes),
        ``expression`` (``rho``, clusters x conditions x genes), ``marker_genes``,
        ``condition_effect`` (conditions x clusters x genes, natural-log fold changes),
        ``condition_genes`` (clusters x n_condition_genes), ``dispersion``, ``dropout``.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.synthetic_counts(n_cells=300, n_genes=100, n_clusters=3, seed=1)
    >>> adata.shape
    (300, 100)
    >>> adata.obs["condition"].cat.categories.tolist()
    ['ctrl', 'stim']
    >>> adata.uns["synthetic"]["condition_effect"].shape
    (2, 3, 100)
    """
    n_cells = _check_positive_int("n_cells", n_cells)
    n_genes = _check_positive_int("n_genes", n_genes)
    n_clusters = _check_positive_int("n_clusters", n_clusters)
    n_conditions = _check_positive_int("n_conditions", n_conditions)
    if n_markers is None:
        n_markers = max(1, min(20, n_genes // (2 * n_clusters)))
    n_markers = _check_positive_int("n_markers", n_markers)
    if n_markers * n_clusters > n_genes:
        raise ValueError(
            f"n_markers * n_clusters = {n_markers} * {n_clusters} exceeds n_genes={n_genes}; "
            "each cluster needs its own block of marker genes"
        )
    if n_condition_genes is None:
        n_condition_genes = max(1, n_genes // 10)
    n_condition_genes = _check_positive_int("n_condition_genes", n_condition_genes)
    if n_condition_genes > n_genes:
        raise ValueError(f"n_condition_genes={n_condition_genes} exceeds n_genes={n_genes}")
    for name, value in [
        ("marker_fold", marker_fold),
        ("condition_fold", condition_fold),
        ("library_size", library_size),
        ("dispersion", dispersion),
    ]:
        _check_positive(name, value)
    if not _is_number(library_log_sd) or not np.isfinite(library_log_sd) or library_log_sd < 0:
        raise ValueError(f"library_log_sd={library_log_sd!r} must be a finite number >= 0")
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    weights = _cluster_weights(cluster_weights, n_clusters)

    check_bool("condition_specific", condition_specific)  # "False" was True
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    background = rng.normal(0.0, 1.0, size=n_genes)
    marker_genes = np.arange(n_clusters * n_markers).reshape(n_clusters, n_markers)
    cluster_log_mean = np.tile(background, (n_clusters, 1))
    cluster_log_mean[np.arange(n_clusters)[:, None], marker_genes] += np.log(marker_fold)
    effect, condition_genes = _condition_effects(
        rng,
        n_conditions,
        n_clusters,
        n_genes,
        n_condition_genes,
        np.log(condition_fold),
        condition_specific,
    )
    expression = _softmax(cluster_log_mean[:, None, :] + effect.transpose(1, 0, 2))

    cluster = rng.choice(n_clusters, size=n_cells, p=weights)
    condition = rng.integers(n_conditions, size=n_cells)
    # Subtracting sd^2 / 2 keeps the mean library size at `library_size`.
    log_lib = np.log(library_size) - library_log_sd**2 / 2
    lib = np.exp(rng.normal(log_lib, library_log_sd, size=n_cells))
    theta = np.exp(rng.normal(np.log(dispersion), 0.3, size=n_genes))
    mean = lib[:, None] * expression[cluster, condition]
    counts = _sample_nb(rng, mean, theta[None, :])
    counts[rng.random(counts.shape) < dropout] = 0

    obs = _labels_obs(cluster, condition, n_clusters, n_conditions, weights)
    obs["library_size"] = lib.astype(np.float32)
    marker_of = np.full(n_genes, "none", dtype=object)
    for k, name in enumerate(_cluster_names(n_clusters)):
        marker_of[marker_genes[k]] = name
    var = pd.DataFrame(
        {
            "marker_of": pd.Categorical(marker_of),
            "condition_gene": np.isin(np.arange(n_genes), condition_genes),
        },
        index=[f"gene_{g}" for g in range(n_genes)],
    )
    X = sp.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": X.copy()})
    adata.uns["synthetic"] = {
        "generator": "synthetic_counts",
        "seed": int(seed),
        "cluster_log_mean": cluster_log_mean,
        "expression": expression,
        "marker_genes": marker_genes,
        "condition_effect": effect,
        "condition_genes": condition_genes,
        "condition_specific": bool(condition_specific),
        "dispersion": theta,
        "dropout": np.full(n_genes, float(dropout)),
        "library_size": float(library_size),
    }
    logger.debug("synthetic_counts: %d cells, %d genes, %d nonzeros", n_cells, n_genes, X.nnz)
    return adata


def _separated_centers(
    rng: np.random.Generator, n_clusters: int, n_features: int, separation: float
) -> np.ndarray:
    """Random centres whose expected pairwise distance is ``separation``.

    Draws are repeated (at most ``_MAX_CENTER_DRAWS`` times) until no two centres are closer
    than ``separation / 2``. If no draw gets there, the draw with the largest minimum distance
    is kept.
    """
    scale = separation / np.sqrt(2 * n_features)
    best, best_gap = None, -np.inf
    for _ in range(_MAX_CENTER_DRAWS):
        centers = rng.normal(0.0, scale, size=(n_clusters, n_features))
        dist = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
        gap = np.min(dist[np.triu_indices(n_clusters, k=1)]) if n_clusters > 1 else np.inf
        if gap > best_gap:
            best, best_gap = centers, gap
        if gap >= separation / 2:
            break
    return best


@foreign_keywords(
    random_state="seed", n_observations="n_cells", n_variables="n_features", n_centers="n_clusters"
)
def synthetic_blobs(
    n_cells: int = 1000,
    n_features: int = 16,
    n_clusters: int = 5,
    n_conditions: int = 2,
    seed: int = 0,
    counts: bool = False,
    *,
    separation: float = 8.0,
    cluster_std: float = 1.0,
    condition_shift: float = 2.0,
    count_scale: float = 5.0,
    dispersion: float | None = None,
) -> ad.AnnData:
    """Gaussian blobs whose centre depends on a cluster and a condition.

    A cell in cluster ``k`` and condition ``c`` is drawn as
    ``z ~ N(mu_k + delta_c, cluster_std**2 I)``. The ``mu_k`` are random centres with expected
    pairwise distance ``separation``. ``delta_c`` is a random direction of length
    ``condition_shift``, and ``delta_0 = 0``. With ``counts=True``, ``X`` holds counts with mean
    ``count_scale * softplus(z)``. They are Poisson if ``dispersion`` is None and negative
    binomial with that inverse dispersion otherwise.

    Parameters
    ----------
    n_cells, n_features
        Size of the data matrix.
    n_clusters
        Number of clusters, assigned to cells uniformly at random.
    n_conditions
        Number of conditions, assigned uniformly at random; two are named ``ctrl`` and
        ``stim``.
    seed
        Seed for :func:`numpy.random.default_rng`.
    counts
        If True, return counts generated from the blobs instead of the blobs themselves.
    separation
        Expected distance between two cluster centres.
    cluster_std
        Standard deviation of each blob in every direction.
    condition_shift
        Length of the shift that each non-reference condition adds to every cluster.
    count_scale
        Multiplies ``softplus(z)`` to give the count mean (``counts=True`` only).
    dispersion
        NB inverse dispersion for ``counts=True``. None means Poisson.

    Returns
    -------
    anndata.AnnData
        ``X``: dense float32 blobs, or with ``counts=True`` CSR float32 integer counts (also in
        ``layers["counts"]``, with the blobs in ``obsm["X_blob"]``). ``obs``: ``cluster`` and
        ``condition``. ``uns["synthetic"]``: ``centers`` (clusters x features) and
        ``condition_shift`` (conditions x features).

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.synthetic_blobs(n_cells=200, n_features=8, n_clusters=3)
    >>> adata.shape
    (200, 8)
    >>> dv.datasets.synthetic_blobs(n_cells=50, counts=True).layers["counts"].shape
    (50, 16)
    """
    n_cells = _check_positive_int("n_cells", n_cells)
    n_features = _check_positive_int("n_features", n_features)
    n_clusters = _check_positive_int("n_clusters", n_clusters)
    n_conditions = _check_positive_int("n_conditions", n_conditions)
    _check_positive("separation", separation)
    _check_positive("cluster_std", cluster_std)
    _check_positive("count_scale", count_scale)
    if not _is_number(condition_shift) or not np.isfinite(condition_shift) or condition_shift < 0:
        raise ValueError(f"condition_shift={condition_shift!r} must be a finite number >= 0")
    if dispersion is not None:
        _check_positive("dispersion", dispersion)

    check_bool("counts", counts)  # "False" drew counts
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    centers = _separated_centers(rng, n_clusters, n_features, separation)
    directions = rng.normal(size=(n_conditions, n_features))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shifts = condition_shift * directions
    shifts[0] = 0.0

    cluster = rng.integers(n_clusters, size=n_cells)
    condition = rng.integers(n_conditions, size=n_cells)
    noise = rng.normal(0.0, cluster_std, size=(n_cells, n_features))
    blobs = (centers[cluster] + shifts[condition] + noise).astype(np.float32)

    obs = _labels_obs(cluster, condition, n_clusters, n_conditions)
    var = pd.DataFrame(index=[f"feature_{j}" for j in range(n_features)])
    truth = {
        "generator": "synthetic_blobs",
        "seed": int(seed),
        "centers": centers,
        "condition_shift": shifts,
        "cluster_std": float(cluster_std),
    }
    if not counts:
        adata = ad.AnnData(X=blobs, obs=obs, var=var)
        adata.uns["synthetic"] = truth
        return adata

    mean = count_scale * np.logaddexp(0.0, blobs.astype(np.float64))
    if dispersion is None:
        values = rng.poisson(mean)
    else:
        values = _sample_nb(rng, mean, np.full_like(mean, dispersion))
    X = sp.csr_matrix(values.astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": X.copy()})
    adata.obsm["X_blob"] = blobs
    truth["count_scale"] = float(count_scale)
    truth["dispersion"] = float("inf") if dispersion is None else float(dispersion)
    adata.uns["synthetic"] = truth
    return adata
