"""The cells given to a perturbation prediction that hold no data: all zeros in the genes the
model reads. Each is predicted from nothing, and all of them alike (a cell of no counts keeps
a library of 0, or 1 for nearest_response): ``translate``, ``latent_shift`` and
``nearest_response`` returned them without a word, where the setup warns of such cells."""

from __future__ import annotations

import numpy as np

from .._warn import warn_user
from ._count_advice import drop_empty


def warn_empty_cells(model, empty, names, method: str) -> None:
    """Warn, counting them and naming a few, of the cells ``empty`` marks (all zeros in the
    genes ``model`` reads; ``names``: the cells' names) among those given to ``method``, with
    the statement that leaves them out (:func:`~deltavae.model._count_advice.drop_empty`, in
    the layer the model reads).

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
    keep = drop_empty("adata", layer, True, counts=counts, nonnegative=counts)
    warn_user(
        f"{n_empty} of the {len(empty)} cells given to {method} (e.g. {shown}) are all zeros "
        "in the genes the model reads: each is predicted from no data, all of them alike. "
        f"Leave them out before predicting: {keep}."
    )
