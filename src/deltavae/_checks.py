"""Checks and array helpers that several subpackages share (``datasets``, ``model``): one home,
public names, so that no private name crosses a subpackage."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def dense(X) -> np.ndarray:
    """``X`` (dense or sparse) as a dense float64 array."""
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def layer_matrix(adata: ad.AnnData, layer: str | None):
    """``adata.X`` for ``layer=None``, else ``adata.layers[layer]``; a clear KeyError if absent."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"layer {layer!r} is not in adata.layers; available: {list(adata.layers)}")
    return adata.layers[layer]


def check_labels(reference: ad.AnnData, labels_key: str) -> pd.Categorical:
    """The cell types of ``reference.obs[labels_key]``: present, no missing values, at least 2."""
    if labels_key not in reference.obs:
        raise KeyError(
            f"labels_key={labels_key!r} is not a column of reference.obs; available columns: "
            f"{list(reference.obs.columns)}"
        )
    labels = pd.Categorical(reference.obs[labels_key]).remove_unused_categories()
    if (labels.codes < 0).any():
        raise ValueError(
            f"reference.obs[{labels_key!r}] has {int((labels.codes < 0).sum())} missing labels; "
            "drop those cells first"
        )
    if len(labels.categories) < 2:
        raise ValueError(
            f"reference.obs[{labels_key!r}] has {len(labels.categories)} cell type(s); "
            "deconvolution needs at least 2"
        )
    return labels
