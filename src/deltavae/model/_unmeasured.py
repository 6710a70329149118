"""Predictions that add a change to each cell's observed data, made for cells that lack some of
a query model's genes (:meth:`~deltavae.model.CGMDVAE.load_query_data` filled them with zeros):
those genes' predictions are the change added to zero, not to measured data, and were
returned among the others with nothing said."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import short_repr
from ._validation import warn_user


def unmeasured_genes(model, adata: AnnData) -> pd.Index:
    """The model's genes that ``adata`` (as given to a read-out) does not hold; the model's own
    AnnData is read as the query it was given (its aligned copy holds the zeros)."""
    genes = model._training_genes() if getattr(model, "is_query_model", False) else None
    if genes is None:
        return pd.Index([])
    query = getattr(model, "_query_adata", None)
    if adata is model.adata and query is not None:
        adata = query
    elif adata is model.adata:  # e.g. the aligned query saved with the model: its zeros
        return _still_zero(adata, model.query_mapping_.get("genes_missing", []), model)
    return genes[~genes.isin(np.asarray(adata.var_names).astype(str))]


def _still_zero(adata: AnnData, names: list, model) -> pd.Index:
    """Of the genes the query lacked when it was mapped (``names``), those still zero in every
    cell of the model's own AnnData (not measured since, in an AnnData it was given later)."""
    names = [g for g in names if g in adata.var_names]
    if not names:
        return pd.Index([])
    layer = model.registry_["setup_args"].get("layer")
    part = adata[:, names]
    matrix = part.X if layer is None else part.layers[layer]
    totals = np.asarray(abs(matrix).sum(0)).ravel()
    return pd.Index(names)[totals == 0]


def warn_unmeasured(model, adata: AnnData, what: str, instead: str) -> None:
    """Warn when ``adata`` lacks some of a query model's genes, whose predictions ``what``
    (the prediction's words) made from the zeros they were filled with; ``instead``: the
    call that decodes every gene."""
    missing = unmeasured_genes(model, adata)
    if not len(missing):
        return
    warn_user(
        f"adata lacks {len(missing)} of the model's {len(model._training_genes())} genes "
        f"({short_repr(list(missing))}), read as the zeros the query mapping filled them with: "
        f"{what}, so their predictions are that change added to zero, not to measured data. "
        f"Keep the measured genes, pred[:, adata.var_names], or use {instead} for the model's "
        "decoded values of every gene."
    )
