"""The first attempt, z alone (withdrawn): after semi-supervised CGMDVAE training, a group of
cells that looks like a cell type none of whose cells was labelled, folded into a labelled
type's cluster; and :func:`training_record`, what the checks read, saved once per trained model.

It caught every PBMC run with a type unlabelled and stayed quiet on PBMC's fine-grained labels,
but raised false alarms on 7 of 12 seeds of a synthetic set whose labels each cover two natural
groups (benchmarks/README.md, "Cell types without labelled cells"): the labelled cells of a
group sit apart in z from its unlabelled ones, which then form a cluster of z with no labelled
cell. The check ``train`` runs (``deltavae.model._unlabelled_types``) adds the data's sign to
it; this one is kept to compare the two (``unlabelled_criteria.py``).

With one cluster per label, a type without a labelled cell has no component of its own: its
cells take a label's (PBMC 3k, 5% of the cells labelled, label seed 1: the 14 platelets had
none, took Memory CD4 T's component, and the Memory CD4 T cells went to Naive CD4 T's;
accuracy 0.787 against 0.873-0.886 on seeds 0, 2 and 3), and every confidence stays near 1.
Such cells still form a group of their own in z, which the confidence and ``typicality``
do not tell (the model trained on them: their typicality's median was 0.37-0.88).
:func:`unlabelled_groups` clusters the training cells' z as scanpy's defaults do (15
neighbours, UMAP's fuzzy graph, Leiden at resolution 1) and reports a cluster whose cells given
its most common label are at least :data:`MOST` of it and :data:`MIN_CELLS`, hold no labelled
cell, and would hardly hold none had they been labelled as that label's other cells were:
(1 - r)^n < :data:`ALPHA`, r the labelled share of the label's cells outside the cluster, n the
cluster's cells given the label. A label of a few labelled cells per type is never surprising
there (r small), so a sparsely labelled run stays quiet. The clusters found are merged per
label. Measured in benchmarks/README.md, "Cell types without labelled cells": on PBMC 3k all
8 runs with a type unlabelled warned, none of the 8 with every type labelled; on Kang's
PBMCs none of 4 with every type labelled, and of three types left out the B cells, not CD8 T
cells or FCGR3A+ monocytes (in z among their labelled neighbours: a miss, not a false alarm).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from scvi import REGISTRY_KEYS

from deltavae._rng import forked_generators

#: Fewest cells (given one label, in one cluster of z) to warn of.
MIN_CELLS = 10
#: The share of its cluster of z a group must hold.
MOST = 0.75
#: The chance, if labelled like the label's other cells, of no labelled cell among them.
ALPHA = 0.05
#: Neighbours of each cell in z, and Leiden's resolution (scanpy's defaults).
NEIGHBOURS, RESOLUTION = 15, 1.0
#: The most training cells read (drawn among more).
MAX_CELLS = 20_000


def _leiden(z: np.ndarray, seed: int) -> np.ndarray:
    """Leiden (modularity, resolution :data:`RESOLUTION`, run to convergence) clusters of
    UMAP's fuzzy graph of z's :data:`NEIGHBOURS` nearest neighbours."""
    import igraph
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    from deltavae.train._graph_clusters import fuzzy_graph

    k = min(NEIGHBOURS, len(z))
    distances, indices = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    upper = sparse.triu(fuzzy_graph(indices, distances), k=1).tocoo()
    graph = igraph.Graph(
        n=len(z), edges=list(zip(upper.row.tolist(), upper.col.tolist(), strict=True))
    )
    previous = random.getstate()  # igraph draws from Python's random: a private, seeded one
    igraph.set_random_number_generator(random.Random(seed))
    try:
        found = graph.community_leiden(
            objective_function="modularity",
            weights=upper.data,
            resolution=RESOLUTION,
            n_iterations=-1,
        )
    finally:
        igraph.set_random_number_generator(random)
        random.setstate(previous)
    return np.asarray(found.membership)


def unlabelled_groups(
    z: np.ndarray,
    predicted: np.ndarray,
    labelled: np.ndarray,
    n_labels: int,
    seed: int = 0,
) -> list[tuple[int, np.ndarray]]:
    """Groups of cells likely of a type without labelled cells (see the module): pairs of the
    label (an index below ``n_labels``; novel clusters, at or above it, are left alone) and
    the positions of the group's cells, largest group first. ``z``: cells x dims (each
    condition's mean removed), ``predicted``: each cell's most probable cluster,
    ``labelled``: whether its label was given.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(30, 1, (40, 2))])
    >>> labelled = np.zeros(240, bool); labelled[:200:5] = True
    >>> [(label, len(cells)) for label, cells in unlabelled_groups(z, np.zeros(240), labelled, 1)]
    [(0, 40)]
    """
    if len(z) < 2 * MIN_CELLS:
        return []
    clusters = _leiden(np.asarray(z, dtype=np.float64), seed)
    found = {}  # label -> its cells in the clusters found
    for cluster in np.unique(clusters):
        member = clusters == cluster
        label = int(np.bincount(predicted[member].astype(int)).argmax())
        group = member & (predicted == label)
        # Most of a cluster given one label, none labelled (not a few stray cells between
        # components), where the label's other cells are labelled densely enough.
        if label >= n_labels or labelled[group].any() or group.sum() < MIN_CELLS:
            continue
        others = ~member & (predicted == label)
        share = labelled[others].mean() if others.any() else 0.0
        chance = group.sum() * np.log1p(-min(share, 1 - 1e-12))
        if group.sum() >= MOST * member.sum() and share > 0 and chance < np.log(ALPHA):
            found[label] = found.get(label, np.zeros(len(z), bool)) | group
    found = [(label, np.flatnonzero(group)) for label, group in found.items()]
    return sorted(found, key=lambda item: -len(item[1]))


def training_groups(model) -> list[tuple[str, np.ndarray]]:
    """:func:`unlabelled_groups` among a semi-supervised model's training cells (labels, some
    training cells unlabelled; not a query model; at most :data:`MAX_CELLS` of them, drawn):
    pairs of the label their cells took and their positions in ``model.adata``; empty for
    other models."""
    from scvi import settings

    from deltavae.model._label_record import _label_codes
    from deltavae.train._mixture_init import _condition_centred, _condition_groups

    names, cells = model.label_names, getattr(model, "train_indices", None)
    if not names or model.is_query_model or cells is None or not len(cells):
        return []
    cells = np.sort(np.asarray(cells, dtype=int))
    labelled = _label_codes(model)[cells] < len(names)
    if labelled.all() or not labelled.any():
        return []
    seed = settings.seed or 0
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
    z = _condition_centred(post["z"], group)
    found = unlabelled_groups(z, post["probs"].argmax(1), labelled, len(names), seed)
    return [(names[label], cells[members]) for label, members in found]


def training_record(model, truth: np.ndarray) -> dict:
    """What a criterion reads, saved once per trained model (``unlabelled_types.py --save``):
    the training cells' positions, z (each condition's mean removed), q(y | z), whether each
    was labelled, its true type, and the counts' 50 principal components (the refit's
    :func:`deltavae.train._label_space.data_components`, of the same cells)."""
    from scvi import settings

    from deltavae.model._label_record import _label_codes
    from deltavae.model._matrices import take_rows
    from deltavae.train._mixture_init import (
        _condition_centred,
        _condition_groups,
        data_components,
    )

    names = model.label_names
    cells = np.sort(np.asarray(model.train_indices, dtype=int))
    labelled = _label_codes(model)[cells] < len(names)
    with forked_generators(model.device):
        post = model._posterior(model.adata, indices=cells)
    group = None
    if model.condition_keys:
        cats = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY))
        group = _condition_groups(torch.as_tensor(cats[cells]))
    z = _condition_centred(post["z"], group)
    x = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    pcs = data_components(take_rows(x, cells), group, settings.seed or 0)
    return {
        "cells": cells,
        "z": np.asarray(z, dtype=np.float32),
        "probs": np.asarray(post["probs"], dtype=np.float32),
        "labelled": labelled,
        "truth": np.asarray(truth)[cells].astype(str),
        "pcs": np.asarray(pcs, dtype=np.float32),
        "names": np.asarray(model.cluster_names, dtype=str),
        "n_labels": len(names),
    }
