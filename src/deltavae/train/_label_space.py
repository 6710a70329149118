"""Where the labelled cells of a semi-supervised mixture start name its clusters.

The start clusters z after a short warm-up (:class:`~deltavae.train.MixtureInitialization`),
when its groups are still rough: with one or a few labelled cells per label, a labelled cell
often lies among another type's cells in z (a third of the cells of a 1,000-cell, four-type
``synthetic_counts`` start), and naming each cluster by the labels of the labelled cells in
it then swaps names that training never swaps back (accuracy 0.48 where the clusters, matched
to the truth, gave 0.95). The labelled cells' nearest neighbours among the counts' first
principal components (:func:`label_space`) are mostly of their own type (0.98 of them there),
and the clusters those neighbours fell in name the clusters right
(:func:`~deltavae.train._label_matching.neighbour_votes`). Models of other data (a normal
likelihood on log-normalised data) vote among their data's own principal components. The
same components join z's neighbours in the start's Leiden graph (:func:`labelled_start`):
no refit follows a labelled model's start, whose clusters are its clusters.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import sparse

from .._threads import keep_torch_threads


def _condition_centred(z: torch.Tensor, group: np.ndarray | None) -> np.ndarray:
    """z with each condition's mean moved onto the overall mean, as a numpy array.

    Early in training z still separates the conditions (a strong treatment moves every cell
    type), and k-means on it would spend clusters on condition x cell type. Clustered after
    centring, the groups are shared across conditions; the components start at the mean of
    their members in both conditions, and p(z | w, y, c) learns each condition's shift.
    ``group`` holds each cell's condition group
    (:func:`~deltavae.train._mixture_init._condition_groups`).
    """
    z = z.cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    if group is None:
        return z
    centred = z.copy()
    overall = z.mean(0)
    for g in np.unique(group):
        member = group == g
        centred[member] += overall - z[member].mean(0)
    return centred


@keep_torch_threads()  # numba's first launch, in scanpy, reset torch's threads
def data_components(
    x, group: np.ndarray | None, seed: int, n_comps: int = 50, counts: bool = True
) -> np.ndarray:
    """scanpy's first ``n_comps`` principal components of log1p(counts per 10,000) (of ``x``
    as it is where not ``counts``: already log-normalised or scaled data), sparse data
    centred implicitly, each condition group's mean removed (:func:`_condition_centred`)."""
    import scanpy as sc
    from anndata import AnnData

    logged = AnnData(X=x.astype(np.float32))
    if counts:
        with warnings.catch_warnings():  # cells without counts: said once, at setup
            warnings.filterwarnings("ignore", message="Some cells have zero counts")
            sc.pp.normalize_total(logged, target_sum=1e4)
        sc.pp.log1p(logged)
    n_comps = min(n_comps, logged.n_obs - 1, logged.n_vars - 1)
    # Cells all alike (counts in one gene only): no component, and sparse PCA failed in ARPACK.
    spread = logged.X.max(0) - logged.X.min(0)
    if not np.any(spread.toarray() if hasattr(spread, "toarray") else spread):
        return np.zeros((logged.n_obs, max(n_comps, 1)), dtype=np.float32)
    pcs = np.ascontiguousarray(sc.pp.pca(logged.X, n_comps=n_comps, random_state=seed))
    return _condition_centred(torch.as_tensor(pcs), group)


def sparse_rows(x: torch.Tensor) -> sparse.csr_matrix:
    """A minibatch's data (dense or sparse tensor, any device) as a CSR matrix on the host."""
    if x.layout != torch.strided:
        x = x.to_dense()
    return sparse.csr_matrix(x.detach().cpu().numpy())


def label_space(
    points: np.ndarray, x, group: np.ndarray | None, seed: int, k: int, counts: bool = True
) -> np.ndarray:
    """The coordinates whose neighbours name a semi-supervised start's ``k`` clusters: the
    data's first ``k + 1`` principal components (:func:`data_components`; of the counts'
    log1p(counts per 10,000) with ``counts``, else of ``x`` as it is) where ``x`` holds
    more than one gene, else ``points`` (condition-centred z).

    ``k`` types' means differ in ``k - 1`` directions; further components add noise to the
    neighbours (starts of ``synthetic_counts``, four types: the named clusters were the
    truth's in 23 of 24 starts with 5 components, 21 with 50, 15 with z, 14 with the
    labelled cells' own clusters). Log-normalised data with a normal likelihood votes in its
    own components too: in z, after the warm-up, a labelled cell's neighbours were those of
    its own cluster (600 cells, 100 genes, 12 starts: 0.40 of the cells named right, 0.83
    with the components and the joined graph of :func:`labelled_start`).

    Examples
    --------
    >>> points = np.zeros((4, 2))
    >>> label_space(points, None, None, 0, 2) is points
    True
    """
    return labelled_start(points, x, group, seed, k, counts)[0]


def labelled_start(
    points: np.ndarray, x, group: np.ndarray | None, seed: int, k: int, counts: bool = True
):
    """``(space, data)`` of a semi-supervised start: :func:`label_space`'s coordinates, and
    the data's first 50 principal components whose neighbours join z's in the start's Leiden
    graph (None without ``x``, or with conditions where they mix the conditions less than
    0.9 as well as z does, D15), as in the refit of unlabelled count models (D12).

    Labels hold their components, so a labelled model is not refitted after training: its
    start decides its clusters. After the short warm-up z may not yet separate the types the
    data do (``synthetic_counts``, 1,000 cells, seed 3: Leiden on z's graph matched the
    truth for 0.54 of the cells, on the joined graph 0.93), and the types its start merges
    stay merged. PBMC 3k, 5% of the cells labelled, label seeds 0-7: the start's clusters named
    the truth for 0.875 of the cells on average (z's graph alone 0.854), better in 7 of 8 seeds
    (accuracy on the unlabelled cells after 200 epochs 0.863 against 0.861, better in 6; 0.874
    against 0.860 without seed 1); worse (0.791 against 0.859) in the one seed where a type had
    no labelled cell (platelets, 14 cells): with one component per label, those cells, apart in
    the data's components, took a component and two labelled types these do not tell apart
    (naive and memory CD4 T) merged (z's graph lost dendritic cells to monocytes instead):
    accuracy on the unlabelled cells 0.787 (z's graph 0.869). Give types without labels
    components of their own (``n_clusters``) where some may be unlabelled: that seed with
    ``n_clusters=9``, 0.881.
    """
    from ._graph_clusters import condition_mixing

    if x is None or x.shape[1] < 2 or len(points) < 3:
        return points, None
    components = data_components(x, group, seed, counts=counts)
    space, data = components[:, : k + 1], components
    if group is not None and condition_mixing(data, group) < 0.9 * condition_mixing(points, group):
        data = None
    return space, data


def vote_seeds(found: np.ndarray, space: np.ndarray, y: np.ndarray, k: int, seed: int):
    """``k`` k-means starts in ``found`` (the coordinates k-means clusters): component ``j``
    at the mean of its labelled cells' 15 nearest cells in ``space``
    (:func:`label_space`), which lie mostly among its type even where a lone labelled cell
    lies on the edge of it; a component without labelled cells at a random cell.

    Examples
    --------
    >>> found = np.repeat([0.0, 10.0], 20)[:, None]
    >>> y = np.full(40, -1)
    >>> y[[0, 39]] = 0, 1
    >>> vote_seeds(found, found, y, 2, 0).ravel()
    array([ 0., 10.])
    """
    from sklearn.neighbors import NearestNeighbors

    labelled = np.flatnonzero(y >= 0)
    n = min(15, len(space))
    near = NearestNeighbors(n_neighbors=n).fit(space).kneighbors(space[labelled], n, False)
    rng = np.random.default_rng(seed)
    init = found[rng.choice(len(found), size=k, replace=False)].astype(np.float64)
    for j in range(k):
        rows = near[y[labelled] == j]
        if len(rows):
            init[j] = found[rows.ravel()].mean(0)
    return init
