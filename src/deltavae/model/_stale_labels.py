"""The label columns of a query model's ``write_to_adata`` removed where a model without
labels writes again under the same key.

A query CGMDVAE writes ``obs["<key>_label"]``, ``obs["<key>_label_confidence"]`` and
``obs["<key>_typicality"]`` besides ``obs["<key>_cluster"]``; a later write of a model
without labels (the reference, an unsupervised fit) under that key replaced the clusters and
left the earlier model's labels beside them, read as this model's. Only the columns that
read as our own are removed: the labels equal to the clusters written with them (but for
the cells ``unknown_below`` gave one unlabelled mark), the confidence the largest of their
cluster probabilities, the typicality in [0, 1] or NaN (a column of the user's under these
names is left alone).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._file_unchanged_on_failure import remove_entry
from ._scanpy_keys import scanpy_uns_keys

_CLUSTER = "_cluster"
#: The columns of a query write beside ``<key>_cluster``, by their suffix.
_QUERY_COLUMNS = ("_label", "_label_confidence", "_typicality")


def _label_columns(obs, key: str) -> list[str]:
    """The columns of a query write under ``key`` that ``obs`` holds."""
    return [f"{key}{suffix}" for suffix in _QUERY_COLUMNS if f"{key}{suffix}" in obs]


def _as_float(values) -> np.ndarray | None:
    """``values`` as float64, None where they are not numbers."""
    try:
        return np.asarray(values, dtype=object).astype(np.float64)
    except (TypeError, ValueError):
        return None


def _same_but_marked(label, cluster) -> bool:
    """The labels are the clusters, but for cells that all hold one other value (the mark of
    ``unknown_below``)."""
    label, cluster = label.astype(str).to_numpy(), cluster.astype(str).to_numpy()
    return len(set(label[label != cluster])) <= 1


def _ours(adata: AnnData, key: str) -> bool:
    """Whether ``<key>_label`` and ``<key>_label_confidence`` are as a query write left them:
    the labels are the clusters written with them, the confidence the largest cluster
    probability of each cell (where those probabilities are still there)."""
    obs = adata.obs
    label, confidence = obs[f"{key}_label"], obs[f"{key}_label_confidence"]
    cluster = obs.get(f"{key}_cluster")
    if cluster is None:
        return False
    if f"{key}_typicality" in obs:  # written with unknown_below's marks, or without
        typical = _as_float(obs[f"{key}_typicality"])
        if typical is None or not np.all(np.isnan(typical) | ((typical >= 0) & (typical <= 1))):
            return False
        if not _same_but_marked(label, cluster):
            return False
    elif not label.astype(str).equals(cluster.astype(str)):
        return False
    values = _as_float(confidence)
    if values is None:
        return False
    probs = adata.obsm.get(f"{key}_cluster_probs")
    if probs is None or np.shape(probs)[0] != len(values):
        return bool(np.all((values >= 0) & (values <= 1)))
    return bool(np.allclose(values, np.asarray(probs, dtype=np.float64).max(1), atol=1e-5))


def drop_stale_labels(adata: AnnData, key: str, query: bool) -> AnnData:
    """``adata`` without the label columns of an earlier query write under ``key``, where
    this write (``query`` false) writes none (``writes_backed`` removes them from a backed
    file, with their scanpy colours and dendrogram)."""
    names = [f"{key}_label", f"{key}_label_confidence"]
    if query or adata.is_view or not set(names) <= set(adata.obs.columns):
        return adata
    if not _ours(adata, key):
        return adata
    adata.obs.drop(columns=_label_columns(adata.obs, key), inplace=True)
    return adata


def remove_obs_columns(h5, names: list[str]) -> None:
    """Remove the obs columns ``names`` (removed in memory by the write) from an .h5ad file
    open for writing (``h5``, its root), with their scanpy colours and dendrogram."""
    stored = h5["obs"]
    for name in names:
        if name in stored:
            remove_entry(stored, name)
        for uns_key in scanpy_uns_keys(name):
            if "uns" in h5 and uns_key in h5["uns"]:
                remove_entry(h5["uns"], uns_key)
    order = [str(c) for c in stored.attrs.get("column-order", []) if str(c) not in names]
    stored.attrs["column-order"] = order  # as write_obs_columns and anndata write it


def remove_stale_labels_in_store(group, adata: AnnData, keys: list[str]) -> None:
    """Remove from a file or store (``group``, its root: h5py or zarr) the label columns of an
    earlier query write that writing ``keys`` removed from ``adata.obs`` (:func:`drop_stale_labels`
    of the clusters ``obs/<key>_cluster`` written): :func:`deltavae.write_results_to_store`
    wrote the keys only, and the store kept the earlier model's labels beside the clusters."""
    if "obs" not in group:
        return
    stale = []
    for key in keys:
        slot, _, name = str(key).partition("/")
        if slot != "obs" or not name.endswith(_CLUSTER):
            continue
        base = name[: -len(_CLUSTER)]
        labels = [f"{base}{suffix}" for suffix in _QUERY_COLUMNS]
        stale += [c for c in labels if c in group["obs"] and c not in adata.obs.columns]
    if stale:
        remove_obs_columns(group, stale)
