"""Exactly k clusters of a neighbour graph: Leiden with its resolution searched, then fixed up.

The mixture start (:class:`~deltavae.train.MixtureInitialization`, ``method="leiden"``) needs
one cluster per mixture component. Leiden on UMAP's fuzzy neighbour graph
(:func:`fuzzy_graph`) follows connected, curved groups as a UMAP layout does, but it clusters
the graph directly: no layout to optimise (most of a UMAP start's time) and no k-means on a
layout afterwards. The number of clusters grows with the resolution, so the resolution is
bisected (on a log scale) until Leiden returns ``k``, and the best of several converged runs
at that resolution is kept. When no resolution gives ``k`` (a graph in more than ``k``
pieces, or ties), the nearest partition is fixed up: the smallest cluster merged into the one
with the nearest centre, or the most spread cluster split in two by k-means, until there are
``k``.

python-igraph (a dependency of scanpy's Leiden) does the clustering; it draws from Python's
``random``, so a private, seeded generator is installed for the call and the previous one
restored after it.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans

# Bisection of the resolution on a log scale: enough steps to hit k on every graph tried.
_RESOLUTION_RANGE, _MAX_STEPS = (1e-3, 20.0), 30
# Converged Leiden runs at the resolution found, the best modularity kept (:func:`leiden_k`).
_RESTARTS = 5
# Iterations at most of a "converged" run (:func:`converged_leiden`): the graphs of real sets
# converged in 2-25 (PBMC, lymph node, Kang's 8 donors, synthetic counts; 180 runs), the
# unstructured neighbour graphs of 20,000 cells in 25-77 (benchmarks/README.md, "Leiden
# start's iterations").
_MAX_ITERATIONS = 30
# Neighbours whose clusters a labelled cell votes for in match_labels (as UMAP's graph).
_LABEL_NEIGHBORS = 15


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray) -> sparse.csr_matrix:
    """UMAP's fuzzy neighbour graph (McInnes et al. 2018) of the given k nearest neighbours.

    ``indices`` and ``distances`` (cells x k, sorted, each cell first) as from a
    nearest-neighbour search. Each cell i gets rho_i, the distance to its nearest other cell,
    and a bandwidth sigma_i such that sum_j exp(-max(0, d_ij - rho_i) / sigma_i) over its
    other neighbours equals log2(k); the directed weights exp(-(d_ij - rho_i) / sigma_i) are
    then joined by the fuzzy union W + W^T - W * W^T. Written here in numpy, vectorised over
    the cells, with umap-learn's constants (64 bisection steps, tolerance 1e-5, sigma at
    least 1e-3 times the mean distance), because umap-learn's numba version compiles for
    about 20 s in every new process, longer than the rest of the mixture start.

    Examples
    --------
    >>> z = np.array([[0.0], [1.0], [3.0], [7.0]])
    >>> from sklearn.neighbors import NearestNeighbors
    >>> d, i = NearestNeighbors(n_neighbors=3).fit(z).kneighbors(z)
    >>> g = fuzzy_graph(i, d)
    >>> bool((g != g.T).nnz == 0), float(g[0, 1]), float(g[3, 3])
    (True, 1.0, 0.0)
    """
    n, k = indices.shape
    d = distances.astype(np.float64)
    others = indices != np.arange(n)[:, None]
    positive = np.where(others & (d > 0), d, np.inf)
    rho = positive.min(1)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(d - rho[:, None], 0.0)[:, 1:]  # umap-learn skips the first column
    target = np.log2(k)
    low, high, sigma = np.zeros(n), np.full(n, np.inf), np.ones(n)
    active = np.ones(n, dtype=bool)
    for _ in range(64):
        total = np.exp(-excess / sigma[:, None]).sum(1)
        active &= np.abs(total - target) >= 1e-5
        if not active.any():
            break
        above = active & (total > target)
        below = active & ~above
        high[above] = sigma[above]
        low[below] = sigma[below]
        sigma = np.where(
            active,
            np.where(np.isinf(high), sigma * 2.0, (low + high) / 2.0),
            sigma,
        )
    floor = 1e-3 * np.where(rho > 0, d.mean(1), d.mean())
    sigma = np.maximum(sigma, floor)
    weights = np.exp(-np.maximum(d - rho[:, None], 0.0) / sigma[:, None])
    weights[~others] = 0.0
    rows = np.repeat(np.arange(n), k)
    directed = sparse.csr_matrix((weights.ravel(), (rows, indices.ravel())), shape=(n, n))
    directed.eliminate_zeros()
    transpose = directed.T.tocsr()
    return (directed + transpose - directed.multiply(transpose)).tocsr()


def _igraph(graph: sparse.spmatrix):
    """The igraph graph of a symmetric sparse ``graph`` (its upper triangle's edges) and the
    edges' weights, a list: igraph converts a numpy array anew in every call, about 40 ms
    per Leiden call on 20,000 cells' graph (a list: under 10 ms)."""
    import igraph

    upper = sparse.triu(graph, k=1).tocoo()
    edges = list(zip(upper.row.tolist(), upper.col.tolist(), strict=True))
    return igraph.Graph(n=graph.shape[0], edges=edges), upper.data.tolist()


@contextlib.contextmanager
def _seeded_igraph(seed: int):
    """Within: igraph draws from a private Python ``random.Random(seed)``; Python's global
    stream is left as it was."""
    import igraph

    previous = random.getstate()
    igraph.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)
        random.setstate(previous)


def converged_leiden(g, weights, resolution: float, max_iterations: int | None = None):
    """igraph's Leiden (modularity) on graph ``g`` run to convergence, but for at most
    ``max_iterations`` iterations (None: :data:`_MAX_ITERATIONS`); the partition as a list.

    igraph's ``n_iterations=-1`` iterates until an iteration does not raise the quality,
    without a bound: on neighbour graphs without clusters (20,000 cells) a run took 25-77
    iterations and the five converged runs of :func:`leiden_k` most of the refit's time.
    The same iterations run here one call at a time, each from the last partition, and
    stop at the first that does not raise the quality: on the graphs of real sets, which
    converge within the bound, the partitions were igraph's, seed for seed.

    Examples
    --------
    >>> g, weights = _igraph(sparse.block_diag([np.ones((5, 5))] * 3).tocsr())
    >>> len(set(converged_leiden(g, weights, 1.0)))
    3
    """

    def step(membership=None):
        return g.community_leiden(
            objective_function="modularity",
            weights=weights,
            resolution=resolution,
            n_iterations=1,
            initial_membership=membership,
        )

    found = step()
    for _ in range((max_iterations or _MAX_ITERATIONS) - 1):
        more = step(found.membership)
        if not more.quality > found.quality:
            return more.membership  # the stable iteration's partition, as igraph returns it
        found = more
    return found.membership


def leiden(graph: sparse.spmatrix, resolution: float, seed: int) -> np.ndarray:
    """Leiden (modularity) clusters of ``graph`` at ``resolution``, run to convergence (at
    most :data:`_MAX_ITERATIONS` iterations, :func:`converged_leiden`), seeded.

    Examples
    --------
    >>> blocks = sparse.block_diag([np.ones((5, 5))] * 3).tocsr()
    >>> np.unique(leiden(blocks, 1.0, seed=0)).size
    3
    """
    g, weights = _igraph(graph)
    with _seeded_igraph(seed):
        return np.asarray(converged_leiden(g, weights, resolution))


def leiden_k(graph: sparse.spmatrix, k: int, seed: int, restarts: int = _RESTARTS) -> np.ndarray:
    """Leiden (modularity) clusters of ``graph``, the resolution bisected to give ``k``.

    The bisection runs Leiden for 2 iterations per step (scanpy's choice); at the resolution
    found, Leiden then runs to convergence (at most :data:`_MAX_ITERATIONS` iterations,
    :func:`converged_leiden`) from ``restarts`` random seeds and the partition
    of highest modularity among those with the count nearest ``k`` is kept. One run's
    partition of a weakly separated graph depends on its seed (PBMC 3k's trained z: ARI
    against the cell types 0.63-0.69 over ten seeds of 2 iterations); converged runs
    spread less (0.67-0.69) and the best of five was 0.69 (benchmarks/README.md, D11).
    Returns labels ``0 .. n-1``; :func:`exactly_k` fixes the count when it is not ``k``.

    Examples
    --------
    >>> from scipy import sparse
    >>> blocks = sparse.block_diag([np.ones((5, 5))] * 3).tocsr()
    >>> np.unique(leiden_k(blocks, 3, seed=0)).size
    3
    """
    g, weights = _igraph(graph)

    def run(resolution: float, iterations: int | None) -> tuple[np.ndarray, int, float]:
        # None: to convergence, bounded; 2: both iterations, the second from the first's
        # partition (igraph's n_iterations=2, seed for seed)
        membership = converged_leiden(g, weights, resolution, iterations)
        quality = g.modularity(membership, weights=weights, resolution=resolution)
        return np.asarray(membership), len(set(membership)), quality

    with _seeded_igraph(seed):
        low, high = _RESOLUTION_RANGE
        best, best_gap, found = None, np.inf, 1.0
        for _ in range(_MAX_STEPS):
            resolution = float(np.sqrt(low * high))
            membership, n, _ = run(resolution, 2)
            if abs(n - k) < best_gap:
                best, best_gap, found = membership, abs(n - k), resolution
            if n == k:
                break
            low, high = (resolution, high) if n < k else (low, resolution)
        best_quality = -np.inf
        for _ in range(restarts):
            membership, n, quality = run(found, None)
            if (abs(n - k), -quality) < (best_gap, -best_quality):
                best, best_gap, best_quality = membership, abs(n - k), quality
    return np.unique(best, return_inverse=True)[1]


def exactly_k(z: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Merge or split clusters of the points ``z`` until there are ``k``, labelled 0..k-1.

    Merging joins the smallest cluster to the cluster with the nearest centre; splitting
    cuts the cluster with the largest summed squared distance to its centre in two by k-means.

    Examples
    --------
    >>> z = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    >>> exactly_k(z, np.array([0, 0, 1, 1, 2]), 2, seed=0).tolist()
    [0, 0, 1, 1, 1]
    """
    labels = np.unique(labels, return_inverse=True)[1]
    if k > len(z):
        raise ValueError(f"Cannot make {k} clusters of {len(z)} points.")
    while (n := labels.max() + 1) != k:
        sizes = np.bincount(labels, minlength=n)
        centres = np.stack([z[labels == j].mean(0) for j in range(n)])
        if n > k:
            small = int(np.argmin(sizes))
            gaps = np.linalg.norm(centres - centres[small], axis=1)
            gaps[small] = np.inf
            labels[labels == small] = int(np.argmin(gaps))
        else:
            spread = [((z[labels == j] - centres[j]) ** 2).sum() for j in range(n)]
            spread = np.where(sizes > 1, spread, -1.0)  # a single point cannot be split
            wide = np.flatnonzero(labels == int(np.argmax(spread)))
            if max(spread) > 0:
                halves = KMeans(2, n_init=3, random_state=seed).fit_predict(z[wide])
            else:  # identical points: split them by position
                halves = np.arange(len(wide)) % 2
            labels[wide[halves == 1]] = n
        labels = np.unique(labels, return_inverse=True)[1]
    return labels


def match_labels(
    clusters: np.ndarray,
    y: np.ndarray,
    k: int,
    points: np.ndarray | None = None,
    space: np.ndarray | None = None,
) -> np.ndarray:
    """Number ``k`` clusters so that labelled cells fall in their label's component.

    ``y`` holds each cell's component for labelled cells (``0 .. n_known-1``) and -1 for the
    others. Clusters are matched one to one to components, maximising the labelled cells
    that agree (Hungarian algorithm); the clusters left over take the free components.
    With ``points`` (the cells' coordinates), matchings that agree on as many labelled
    cells are told apart by the distances of each cluster's mean to its label's labelled
    cells' mean: where a cluster holds the only labelled cells of two labels, the label
    whose cells lie nearer its centre takes it and the other one the nearest cluster left
    (:func:`~deltavae.train._label_matching.label_distances`). With ``space`` (the same
    cells' coordinates in which the labelled cells' neighbours are told, e.g. the counts'
    principal components, :func:`~deltavae.train._label_space.label_space`), each labelled
    cell counts for the clusters of its 15 nearest cells there, not its own cluster alone
    (:func:`~deltavae.train._label_matching.neighbour_votes`): a lone labelled cell lying
    among another type's cells no longer names that type's cluster. Labelled cells then keep
    their own component whatever their cluster.

    Examples
    --------
    >>> match_labels(np.array([1, 1, 0, 0, 2]), np.array([0, -1, -1, 1, -1]), 3).tolist()
    [0, 0, 1, 1, 2]
    """
    from scipy.optimize import linear_sum_assignment

    from ._label_matching import label_distances, neighbour_votes

    labelled = y >= 0
    overlap = np.zeros((k, k))
    if space is not None:
        overlap = neighbour_votes(space, clusters, y, k, _LABEL_NEIGHBORS)
    else:
        np.add.at(overlap, (clusters[labelled], y[labelled]), 1)
    if points is not None:
        # Below one neighbour's vote in all: never outweighs the cells that agree.
        overlap -= label_distances(points, clusters, y, k) / ((k + 1) * _LABEL_NEIGHBORS)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    component = np.empty(k, dtype=np.int64)
    component[rows] = cols
    assignments = component[clusters]
    assignments[labelled] = y[labelled]
    return assignments


def condition_mixing(points: np.ndarray, group: np.ndarray, n_neighbors: int = 15) -> float:
    """How much the condition groups mix among the points' nearest neighbours: the share of
    neighbours from another group over the share drawn at random would give (1 - sum of the
    squared group shares). About 1 for groups spread alike, 0 for groups apart.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> points, group = rng.normal(size=(200, 2)), np.repeat([0, 1], 100)
    >>> apart = points + 9 * group[:, None]
    >>> round(condition_mixing(points, group), 1), condition_mixing(apart, group)
    (1.0, 0.0)
    """
    from sklearn.neighbors import NearestNeighbors

    n_neighbors = min(n_neighbors, len(points) - 1)
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(points)
    found = nn.kneighbors(points, return_distance=False)
    # Drop each point itself, not column 0: with duplicate points the search may list a twin
    # first. Rows where the point is missing (more twins than neighbours) drop the last one.
    is_self = found == np.arange(len(points))[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    neighbours = found[~is_self].reshape(len(points), n_neighbors)
    share = np.bincount(group) / len(group)
    chance = 1.0 - float((share**2).sum())
    if chance <= 0:
        return 1.0
    return float((group[neighbours] != group[:, None]).mean()) / chance
