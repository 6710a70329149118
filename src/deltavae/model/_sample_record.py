"""What :meth:`deltavae.model.CGMDVAE.sample` was asked, kept with the cells it drew
(``uns["sample"]``), and the size of its parts."""

from __future__ import annotations

import numpy as np
from scvi import settings

from ._registered import registered_category
from ._training_checks import check_batch_size

#: The value ``uns["sample"]`` records for a cluster or condition that was drawn.
DRAWN = "drawn"


def checked_batch_size(batch_size) -> int:
    """``sample``'s cells decoded at a time: ``batch_size`` checked, or scvi-tools'
    ``settings.batch_size`` for ``None``, as every read-out reads it."""
    check_batch_size(batch_size)
    return int(settings.batch_size if batch_size is None else batch_size)


def sample_record(
    model, n_cells: int, cluster: int | None, condition, seed, clipped: bool = False
) -> dict:
    """``uns["sample"]``: ``n_cells``; the ``cluster`` asked (its name) and each condition key's
    value asked (as the model names it), or :data:`DRAWN`; the ``seed`` where one was given;
    and what ``X`` and ``layers["expected"]`` hold (``clipped``: a normal likelihood's, at 0,
    the floor of its data). Strings and integers only, so that the
    cells write to h5ad.

    Examples
    --------
    >>> import types
    >>> module = types.SimpleNamespace(likelihood="normal")
    >>> m = types.SimpleNamespace(cluster_names=["B", "T"], condition_keys=[], module=module)
    >>> sample_record(m, 5, 1, None, None)["cluster"]
    'T'
    """
    record = {
        "n_cells": int(n_cells),
        "cluster": DRAWN if cluster is None else str(model.cluster_names[cluster]),
    }
    keys = model.condition_keys
    if keys:
        asked = condition if isinstance(condition, dict) else {keys[0]: condition}
        mappings = model._cat_state().mappings
        record["condition"] = {
            key: DRAWN
            if asked.get(key) is None
            else str(registered_category(asked[key], list(mappings[key])))
            for key in keys
        }
    if seed is not None:  # h5ad writes integers up to 2**63 - 1 as int64
        record["seed"] = int(seed) if seed < 2**63 else np.uint64(seed)
    record.update(_what_x_holds(model.module.likelihood))
    for key in ("X", "expected") if clipped else ():
        record[key] += ", clipped at 0 (the data's floor)"
    return record


def _what_x_holds(likelihood: str) -> dict[str, str]:
    """In words, what the sampled cells' ``X`` and ``layers["expected"]`` hold."""
    if likelihood in ("nb", "zinb"):
        dropout = " (dropout included)" if likelihood == "zinb" else ""
        draw = f"whole counts: one draw of the negative binomial{dropout}, at a library size "
        draw += "drawn from the log-normal of its conditions' cells in training"
        return {"X": draw, "expected": f"the mean counts of that draw{dropout}"}
    if likelihood == "bernoulli":
        return {"X": "0 or 1: one Bernoulli draw", "expected": "the probabilities of 1"}
    return {
        "X": "one draw of the normal likelihood, on the training data's scale",
        "expected": "the mean of that draw",
    }
