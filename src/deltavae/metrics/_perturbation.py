"""Perturbation prediction: agreement of predicted and observed mean expression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData
from scipy import sparse


def _gene_means(data, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    genes = None
    if isinstance(data, AnnData):
        genes = np.asarray(data.var_names)
        data = data.X
    if sparse.issparse(data):
        means = np.asarray(data.mean(0)).ravel()
    else:
        data = np.asarray(data, dtype=float)
        if data.ndim != 2:
            raise ValueError(f"{name} must be cells x genes (2-D); got shape {data.shape}.")
        means = data.mean(0)
    if means.size == 0 or not np.isfinite(means).all():
        raise ValueError(f"{name} must hold finite values for at least one gene.")
    return means, genes


def mean_expression_r2(predicted, observed, genes: Sequence | None = None) -> float:
    """R² of per-gene mean expression, predicted against observed cells (as scGen reports it).

    The squared Pearson correlation between the two vectors of per-gene means, the score of
    scGen's held-out cell-type benchmark. Compare data on the same scale (e.g. both
    log-normalized).

    Parameters
    ----------
    predicted, observed
        Cells x genes, as AnnData (``X`` is used) or arrays; the numbers of cells may differ,
        the genes must match.
    genes
        Restrict to these genes: names (needs AnnData), integer positions or a boolean mask.

    Returns
    -------
    R² in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> obs = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0]])
    >>> round(mean_expression_r2(obs * 2, obs), 3)
    1.0
    """
    pred, pred_genes = _gene_means(predicted, "predicted")
    true, true_genes = _gene_means(observed, "observed")
    if pred.shape != true.shape:
        raise ValueError(
            f"predicted has {pred.size} genes and observed {true.size}; they must match."
        )
    if (
        pred_genes is not None
        and true_genes is not None
        and not np.array_equal(pred_genes, true_genes)
    ):
        raise ValueError("predicted and observed have different gene names (or order).")
    if genes is not None:
        index = np.asarray(genes)
        if index.dtype.kind in ("U", "S", "O"):
            names = pred_genes if pred_genes is not None else true_genes
            if names is None:
                raise ValueError("Gene names need AnnData inputs; pass positions or a mask.")
            missing = sorted(set(index) - set(names))
            if missing:
                raise KeyError(f"genes not found: {missing[:5]} ({len(missing)} in all).")
            index = np.flatnonzero(np.isin(names, index))
        pred, true = pred[index], true[index]
    if pred.size < 2:
        raise ValueError(f"R² needs at least 2 genes; got {pred.size}.")
    if np.ptp(pred) == 0 or np.ptp(true) == 0:
        raise ValueError("R² is undefined: the mean expression is constant over the genes.")
    return float(np.corrcoef(pred, true)[0, 1] ** 2)
