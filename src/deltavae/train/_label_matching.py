"""Distances that break ties when the start's clusters are matched to labels.

With one or two labelled cells per label, two labels' cells may fall in the same start
cluster (a labelled cell on the edge of its type in the early latent space). Counting the
labelled cells that agree then leaves the names to the clusters' order; the distances here
let the label whose cells lie nearer a cluster's centre take it, and the other label the
nearest cluster left, whatever the labels' order. A lone labelled cell whose z lies
inside another type's start cluster (its neighbours there too) is not told apart by z.
"""

from __future__ import annotations

import numpy as np


def label_distances(points: np.ndarray, clusters: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """``(k, k)`` distances, scaled to [0, 1), between cluster ``i``'s mean of ``points`` and
    the mean of label ``j``'s labelled cells (``y == j``); 0 in the columns of components
    without labelled cells and in the rows of empty clusters, which no distance tells apart.

    Examples
    --------
    >>> points = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> d = label_distances(points, np.array([0, 0, 1, 1]), np.array([0, -1, -1, 1]), 2)
    >>> bool(d[0, 0] < d[0, 1]), bool(d[1, 1] < d[1, 0])
    (True, True)
    """
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    distances = np.zeros((k, k))
    filled = np.array([(clusters == i).any() for i in range(k)])
    named = np.array([(y == j).any() for j in range(k)])
    if not filled.any() or not named.any():
        return distances
    centres = np.stack([points[clusters == i].mean(0) for i in np.flatnonzero(filled)])
    labels = np.stack([points[y == j].mean(0) for j in np.flatnonzero(named)])
    gaps = np.linalg.norm(centres[:, None, :] - labels[None, :, :], axis=-1)
    largest = gaps.max()
    if largest > 0:
        gaps = gaps / (largest * (1 + 1e-6))
    distances[np.ix_(filled, named)] = gaps
    return distances


def neighbour_votes(
    space: np.ndarray, clusters: np.ndarray, y: np.ndarray, k: int, n_neighbors: int = 15
) -> np.ndarray:
    """``(k, k)`` votes of the labelled cells (``y >= 0``) for the clusters of their label:
    each labelled cell's ``n_neighbors`` nearest cells in ``space`` (itself among them) give
    their ``clusters`` one ``1 / n_neighbors`` each in the cell's label's column, so that a
    labelled cell adds one vote in all, as in a count of the labelled cells in each cluster,
    but one lying among another type's cells lends most of it to the clusters its neighbours
    fell in.

    Examples
    --------
    >>> space = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    >>> clusters = np.array([0, 0, 1, 1, 1, 1])  # cell 2 clustered with the far cells
    >>> neighbour_votes(space, clusters, np.array([-1, -1, 0, -1, -1, 1]), 2, 3).round(2)
    array([[0.67, 0.  ],
           [0.33, 1.  ]])
    """
    from sklearn.neighbors import NearestNeighbors

    space = np.asarray(space, dtype=np.float64).reshape(len(space), -1)
    labelled = np.flatnonzero(y >= 0)
    votes = np.zeros((k, k))
    if not len(labelled):
        return votes
    n = min(n_neighbors, len(space))
    found = NearestNeighbors(n_neighbors=n).fit(space).kneighbors(space[labelled], n, False)
    np.add.at(votes, (clusters[found], np.repeat(y[labelled], n).reshape(-1, n)), 1.0 / n)
    return votes
