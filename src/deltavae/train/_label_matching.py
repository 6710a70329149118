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
