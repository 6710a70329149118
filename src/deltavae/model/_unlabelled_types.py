"""A cell type none of whose cells is labelled, in a semi-supervised CGMDVAE: said after training.

With one cluster per label (the default), such a type has no component of its own: its cells
take a label's, with confidence near 1, and nothing else says so (PBMC 3k, 5% of the cells
labelled, label seed 1: the 14 platelets had no labelled cell and took Memory CD4 T's
component; accuracy 0.787 against 0.86-0.89 with every type labelled). :func:`unlabelled_groups`
asks two things of a group of the training cells. In z: a cluster (Leiden at resolution 1 on
UMAP's graph of 15 neighbours, scanpy's defaults) mostly given one label, with no labelled
cell where that label's other cells are labelled densely enough that none is unlikely. In the
data: the group's cells' nearest cells in the counts' principal components are rarely
labelled (:func:`labelled_neighbours`), so the data hold a region of their own with no
labelled cell. z alone is not enough: a model can set a type's labelled cells apart in z from
its unlabelled ones, which then form a cluster of z without a labelled cell while sitting
among labelled cells in the data (six natural groups paired into three labels: false alarms
on 7 of 12 seeds with z alone, none with the data's sign). Measured in benchmarks/README.md,
"Cell types without labelled cells".
"""

from __future__ import annotations

import numpy as np
import torch
from scvi import REGISTRY_KEYS

from .._rng import forked_generators, start_seed
from .._warn import warn_user

#: Fewest cells (given one label, in one cluster of z) to warn of.
MIN_CELLS = 10
#: The share of its cluster of z a group given one label must hold.
MOST = 0.75
#: The chance, were the group labelled like its label's other cells, of no labelled cell in it.
ALPHA = 0.05
#: Neighbours of each cell in z, and Leiden's resolution (scanpy's defaults).
NEIGHBOURS, RESOLUTION = 15, 1.0
#: The data's sign: principal components read, neighbours per cell, and the highest share of
#: labelled cells among the group's neighbours (over the share of all cells labelled).
DATA_PCS, DATA_NEIGHBOURS, DATA_MOST = 10, 30, 0.5
#: The most training cells read (drawn among more).
MAX_CELLS = 20_000


def _clusters(z: np.ndarray, seed: int) -> np.ndarray:
    """Leiden (modularity, resolution :data:`RESOLUTION`, run to convergence) clusters of
    UMAP's fuzzy graph of z's :data:`NEIGHBOURS` nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    from ..train._graph_clusters import fuzzy_graph, leiden

    k = min(NEIGHBOURS, len(z))
    distances, indices = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    return leiden(fuzzy_graph(indices, distances), RESOLUTION, seed)


def labelled_neighbours(
    pcs: np.ndarray, labelled: np.ndarray, group: np.ndarray, conditions: np.ndarray | None = None
) -> float:
    """The share of labelled cells among the :data:`DATA_NEIGHBOURS` nearest cells, in the
    first :data:`DATA_PCS` columns of ``pcs``, of the cells at positions ``group``, over the
    share of cells labelled: near 1 where the group sits among labelled cells in the data,
    near 0 where the data hold a region of its own without a labelled cell. With
    ``conditions`` (each cell's condition group), the share expected is that of the group's
    own conditions, and ``inf`` where they hold no labelled cell (labels from one condition
    only: every group of another condition would sit among unlabelled cells, and the data
    cannot tell a type without labels from a condition without them).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pcs = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(30, 1, (40, 2))])
    >>> labelled = np.zeros(240, bool); labelled[:200:5] = True
    >>> round(labelled_neighbours(pcs, labelled, np.arange(200, 240)), 2)
    0.0
    >>> round(labelled_neighbours(pcs, labelled, np.arange(1, 200, 5)), 1)  # 1/5 of 1/6
    1.2
    >>> labelled_neighbours(pcs, labelled, np.arange(200, 240), np.r_[[0] * 200, [1] * 40])
    inf
    """
    from sklearn.neighbors import NearestNeighbors

    if conditions is None:
        expected = labelled.mean()
    else:
        codes = np.asarray(conditions).astype(int)
        shares = np.bincount(codes, weights=labelled) / np.maximum(np.bincount(codes), 1)
        expected = shares[codes[group]].mean()
    if expected == 0:
        return float("inf")
    points = np.asarray(pcs, dtype=np.float64)[:, :DATA_PCS]
    k = min(DATA_NEIGHBOURS + 1, len(points))
    near = NearestNeighbors(n_neighbors=k).fit(points).kneighbors(points[group])[1][:, 1:]
    return float(labelled[near].mean() / expected)


def unlabelled_groups(
    z: np.ndarray,
    pcs: np.ndarray | None,
    predicted: np.ndarray,
    labelled: np.ndarray,
    n_labels: int,
    seed: int = 0,
    conditions: np.ndarray | None = None,
) -> list[tuple[int, np.ndarray]]:
    """Groups of cells likely of a type without labelled cells (see the module): pairs of the
    label (an index below ``n_labels``; novel clusters, at or above it, are left alone) and
    the positions of the group's cells, largest group first. ``z``: cells x dims (each
    condition's mean removed), ``pcs``: the same cells' principal components of the data
    (``None``: z alone, the withdrawn first attempt, kept for benchmarks), ``predicted``:
    each cell's most probable cluster, ``labelled``: whether its label was given,
    ``conditions``: each cell's condition group (None: one condition).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(30, 1, (40, 2))])
    >>> labelled = np.zeros(240, bool); labelled[:200:5] = True
    >>> found = unlabelled_groups(z, z, np.zeros(240), labelled, 1)
    >>> [(label, len(cells)) for label, cells in found]
    [(0, 40)]
    """
    if len(z) < 2 * MIN_CELLS:
        return []
    clusters = _clusters(np.asarray(z, dtype=np.float64), seed)
    predicted = np.asarray(predicted).astype(int)
    found = {}  # label -> its cells in the groups found
    for cluster in np.unique(clusters):
        member = clusters == cluster
        label = int(np.bincount(predicted[member]).argmax())
        group = member & (predicted == label)
        # Most of a cluster given one label, none labelled (not a few stray cells between
        # components), where the label's other cells are labelled densely enough.
        if label >= n_labels or labelled[group].any() or group.sum() < MIN_CELLS:
            continue
        if group.sum() < MOST * member.sum():
            continue
        others = ~member & (predicted == label)
        share = labelled[others].mean() if others.any() else 0.0
        if share == 0 or group.sum() * np.log1p(-min(share, 1 - 1e-12)) >= np.log(ALPHA):
            continue
        # The data's sign: a cluster of z the model split off its labelled cells sits among
        # them in the data.
        if (
            pcs is not None
            and labelled_neighbours(pcs, labelled, np.flatnonzero(group), conditions) > DATA_MOST
        ):
            continue
        found[label] = found.get(label, np.zeros(len(z), bool)) | group
    found = [(label, np.flatnonzero(group)) for label, group in found.items()]
    return sorted(found, key=lambda item: -len(item[1]))


def training_read(model) -> dict | None:
    """What :func:`unlabelled_groups` reads of a semi-supervised model's training cells
    (labels, some training cells unlabelled; not a query model; at most :data:`MAX_CELLS` of
    them, drawn): their positions in ``model.adata`` (``cells``), z with each condition's mean
    removed, q(y | z) (``probs``), whether each was labelled, the counts' principal
    components (``pcs``) and each cell's condition group (``conditions``, None without
    condition covariates); ``None`` for other models."""
    from ..train._mixture_init import _condition_centred, _condition_groups
    from ._components_memo import memoised_components
    from ._label_record import _label_codes
    from ._matrices import take_rows

    names, cells = model.label_names, getattr(model, "train_indices", None)
    if not names or model.is_query_model or cells is None or len(cells) < 2 * MIN_CELLS:
        return None
    cells = np.sort(np.asarray(cells, dtype=int))
    labelled = _label_codes(model)[cells] < len(names)
    if labelled.all() or not labelled.any():
        return None
    seed = start_seed()
    if len(cells) > MAX_CELLS:
        keep = np.sort(np.random.default_rng(seed).choice(len(cells), MAX_CELLS, replace=False))
        cells, labelled = cells[keep], labelled[keep]
    # Read where the user did not ask for a read-out: the loader's draw from torch's random
    # stream would change the next training's.
    with forked_generators(model.device):
        post = model._posterior(model.adata, indices=cells)
    group = None
    if model.condition_keys:
        cats = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY))
        group = _condition_groups(torch.as_tensor(cats[cells]))
    x = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    counts = model.module.observation.is_count
    pcs = memoised_components(model, take_rows(x, cells), group, seed, counts=counts)
    return {
        "cells": cells,
        "z": np.asarray(_condition_centred(post["z"], group)),
        "probs": np.asarray(post["probs"]),
        "labelled": labelled,
        "pcs": np.asarray(pcs),
        "conditions": group,
        "seed": seed,
    }


def training_groups(model, data_sign: bool = True) -> list[tuple[str, np.ndarray]]:
    """:func:`unlabelled_groups` among a semi-supervised model's training cells
    (:func:`training_read`; ``data_sign=False``: z alone): pairs of the label their cells took
    and their positions in ``model.adata``; empty for other models."""
    read = training_read(model)
    if read is None:
        return []
    pcs = read["pcs"] if data_sign else None
    predicted = read["probs"].argmax(1)
    names = model.label_names
    found = unlabelled_groups(
        read["z"], pcs, predicted, read["labelled"], len(names), read["seed"], read["conditions"]
    )
    return [(names[label], read["cells"][members]) for label, members in found]


def warn_unlabelled_types(model) -> None:
    """After a semi-supervised fit: say which groups of training cells look like a type none
    of whose cells is labelled (:func:`training_groups`), and the two remedies."""
    groups = training_groups(model)
    if not groups:
        return
    names = model.adata.obs_names
    said = "; ".join(
        f"{len(cells)} given {label!r} (e.g. {', '.join(map(str, names[cells[:3]]))})"
        for label, cells in groups
    )
    k = model.module.n_clusters
    warn_user(
        f"Training cells that look like a cell type none of whose cells is labelled: {said}. "
        "Each group forms a cluster of its own in z and in the data (its cells' nearest "
        "cells in the data's principal components are rarely labelled) but took a label's "
        "cluster for want of one of its own, with confidence near 1. Train again with "
        f"n_clusters={k + len(groups)} (one more per such group: an unnamed novel_j cluster "
        "takes it), or label a few of its cells (benchmarks/README.md, 'Cell types without "
        "labelled cells')."
    )
