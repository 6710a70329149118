"""The cells given to a perturbation prediction that hold no data: all zeros in the genes the
model reads. Each is predicted from nothing, and all of them alike (a cell of no counts keeps
a library of 0, or 1 for nearest_response): ``translate``, ``latent_shift`` and
``nearest_response`` returned them without a word, where the setup warns of such cells.
Where the cells given hold other genes too (a query, the whole of a model trained on its
highly variable genes), the advice judges the model's genes alone: scanpy's
``filter_cells(adata, min_counts=1)`` counts every gene and kept those cells."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._warn import warn_user
from ._count_advice import drop_empty


def _genes_read(model, given) -> str | None:
    """How the advice names the genes ``model`` reads of ``given`` (the AnnData as passed)
    where it holds other genes too; None where it holds those alone (or is not known)."""
    trained = model._training_genes() if given is not None else None
    if trained is None:
        return None
    own = pd.Index(given.var_names).astype(str)
    if own.isin(trained).all():
        return None
    if trained.isin(own).all():
        return "model.adata.var_names"
    return "adata.var_names.intersection(model.adata.var_names)"  # a query lacking some


def warn_empty_cells(model, empty, names, method: str, given=None) -> None:
    """Warn, counting them and naming a few, of the cells ``empty`` marks (all zeros in the
    genes ``model`` reads; ``names``: the cells' names) among those given to ``method``, with
    the statement that leaves them out (:func:`~deltavae.model._count_advice.drop_empty`, in
    the layer the model reads; of the model's genes alone where ``given``, the AnnData as
    passed, holds others too).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> model = NS(registry_={"setup_args": {"layer": None}}, module=NS(likelihood="nb"))
    >>> warn_empty_cells(model, np.array([False, False]), ["a", "b"], "translate")  # no word
    """
    empty = np.asarray(empty, dtype=bool)
    n_empty = int(empty.sum())
    if not n_empty:
        return
    shown = ", ".join(map(str, np.asarray(names)[empty][:5]))
    layer = model.registry_["setup_args"].get("layer")
    counts = model.module.likelihood in ("zinb", "nb")
    genes = _genes_read(model, given)
    keep = drop_empty("adata", layer, True, counts=counts, nonnegative=counts, genes=genes)
    warn_user(
        f"{n_empty} of the {len(empty)} cells given to {method} (e.g. {shown}) are all zeros "
        "in the genes the model reads: each is predicted from no data, all of them alike. "
        f"Leave them out before predicting: {keep}."
    )
