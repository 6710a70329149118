"""What :meth:`deltavae.model.CGMDVAE.sample` was asked, kept with the cells it drew
(``uns["sample"]``), and the size of its parts."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from scvi import REGISTRY_KEYS, settings

from ._label_order import labels_ordered, ordered_as_labels
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


def sample_names(record: dict, seed: int, module, n_cells: int) -> list[str]:
    """The sampled cells' names, ``sample_<token>_<i>``: ``<token>`` a short hash of what was
    asked (``record``, ``uns["sample"]``, but for ``n_cells``), of the seed the cells were
    drawn from (:class:`~deltavae.distributions._draws.CellDraws`' ``seed``: an unseeded
    call's is drawn from torch's global generator) and of the module's parameters, so that
    the same cells (the same seed, or torch's global seed set again, of the same model) have
    the same names, the first cells of a seed too whatever ``n_cells``, on any device, and
    the cells of separate calls, concatenated (``anndata.concat``), names of their own: every
    call named them ``sample_0``, ``sample_1``, ... (repeated names). Of the first cell's
    values instead, the names of one seed's cells differed between a GPU and the CPU (a
    normal likelihood's values carry the device's round-off)."""
    from ._saved import weights_digest

    digest = hashlib.sha1(usedforsecurity=False)
    asked = {key: value for key, value in record.items() if key != "n_cells"}
    digest.update(json.dumps(asked, sort_keys=True, default=str).encode())
    digest.update(str(int(seed)).encode())
    digest.update(json.dumps(weights_digest(module.state_dict()), sort_keys=True).encode())
    return [f"sample_{digest.hexdigest()[:8]}_{i}" for i in range(n_cells)]


def sampled_labels(model, clusters: np.ndarray) -> pd.Categorical | None:
    """The labels column of sampled cells (``None`` for a model without labels): each cell's
    cluster's label, as the training column holds it, and the model's unlabelled mark for a
    cell of a novel cluster (no label); as strings where the labels and the mark are of
    different types (integers and ``"Unknown"``: h5ad writes one type a column). Its
    categories are the labels drawn, in the model's order (the training column's), as
    ``obs["cluster"]``'s; where the labels column is ordered, every label (:func:`_ordered_dtype`),
    so that the cells concatenate with real ones as one ordered column."""
    if model.registry_["setup_args"].get("labels_key") is None:
        return None
    state = model.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    mapping = list(state.categorical_mapping)  # the labels, in cluster order, then the mark
    labels, mark = mapping[:-1], state.unlabeled_category
    order = [v.item() if isinstance(v, np.generic) else v for v in [*labels, mark]]
    values = [order[c] if c < len(labels) else order[-1] for c in np.asarray(clusters)]
    if len({isinstance(v, str) for v in values}) > 1:
        values, order = [str(v) for v in values], [str(v) for v in order]
    # In the model's order (the training column's categories), as obs["cluster"]: sorted,
    # the column of cells concatenated with real ones had other categories than theirs.
    used = set(values)
    if labels_ordered(model):  # a scale: kept whole (anndata.concat gave object otherwise)
        return pd.Categorical(values, dtype=_ordered_dtype(model, order, used))
    drawn = pd.Categorical(values, categories=[v for v in order if v in used])
    return ordered_as_labels(model, drawn, labels_only=False)  # as the labels column


def _ordered_dtype(model, order: list, used: set) -> pd.CategoricalDtype:
    """The dtype of an ordered labels column of sampled cells: the training AnnData's labels
    column's where it holds every value ``used`` (its categories, the mark included where the
    user's column has it, in the user's order); else the model's (``order``: the labels in
    its order, the mark last), the same whatever was drawn."""
    adata = getattr(model, "adata", None)
    column = None if adata is None else adata.obs.get(model.registry_["setup_args"]["labels_key"])
    dtype = getattr(column, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered and used <= set(dtype.categories):
        return dtype
    return pd.CategoricalDtype(order, ordered=True)


def _what_x_holds(likelihood: str) -> dict[str, str]:
    """In words, what the sampled cells' ``X`` and ``layers["expected"]`` (and for counts
    ``layers["counts"]``) hold."""
    if likelihood in ("nb", "zinb"):
        dropout = " (dropout included)" if likelihood == "zinb" else ""
        draw = f"whole counts: one draw of the negative binomial{dropout}, at a library size "
        draw += (
            "drawn from the observed library sizes (their quantiles) of its cluster's and "
            "conditions' cells in training (log-normal from their mean and sd where fewer "
            "than 10 cells trained)"
        )
        expected = f"the mean counts of that draw{dropout}"
        return {"X": draw, "expected": expected, "counts": "the whole counts of X"}
    if likelihood == "bernoulli":
        return {"X": "0 or 1: one Bernoulli draw", "expected": "the probabilities of 1"}
    return {
        "X": "one draw of the normal likelihood, on the training data's scale",
        "expected": "the mean of that draw",
    }
