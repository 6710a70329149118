"""Observed responses averaged into a translation (``translate``'s ``response_weight``)."""

from __future__ import annotations

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from ..distributions._draws import CellDraws
from ._condition_counts import trained_conditions
from ._fit_cells import warn_if_subset_since_fit
from ._label_responses import UnlabelledResponseError, predicted_labels_route
from ._labels import NoResponseError
from ._matrices import memory_copy, row_sums
from ._perturbation import Contrast, nearest_response
from ._registered import condition_request
from ._validation import warn_user


def with_observed_responses(
    model,
    adata: AnnData,
    translated: dict,
    target_condition,
    weight: float,
    batch_size=None,
    strict: bool = True,
    draws: CellDraws | None = None,
) -> tuple[dict, float]:
    """Average a translation with the observed responses of the most similar training groups.

    ``translated`` holds the model's residual translation of ``adata``'s cells (``expected``
    and, for counts, ``counts``, numpy arrays). For every source condition other than the
    target, :func:`nearest_response` predicts the same cells from the groups' observed
    responses, and the two predictions are averaged with weight ``weight`` on the observed
    responses, on the scale where responses add: the data for ``likelihood="normal"``,
    log-normalized counts at each cell's own library (:func:`deltavae.metrics.log_normalize`)
    for count models. For counts the averaged expectation becomes counts as in the residual
    translation: the expectation rounded stochastically to whole counts, drawn on the CPU
    from ``draws`` (:class:`~deltavae.distributions._draws.CellDraws`, the translation's;
    ``None``: seeded from torch's generator), so the same on any device and for any
    ``batch_size``. Cells already under
    the target condition are left as translated. When no training group is seen under both a
    source and the target condition there is no response to average: ``strict`` raises,
    otherwise those cells keep the translation (the weight returned is 0 when no cell was
    averaged). Returns the dict with ``expected`` and ``counts`` replaced, and the weight
    used.
    """
    warn_if_subset_since_fit(
        model,
        "the observed responses translate averages in (response_weight) are read from",
        "Translate before subsetting, pass response_weight=0 for the model's translation alone",
    )
    key = condition_request(model.registry_, None, None)[0]
    in_model = set(trained_conditions(model, key))  # not the test split's cells: never trained
    if str(target_condition) not in in_model:
        # A query model reads the query's cells, not the reference's: none under the target.
        if strict:
            raise NoResponseError(
                f"The model's AnnData holds no training cells under {str(target_condition)!r}, so"
                f" there is no observed response to average{_query_note(model)}; pass "
                "response_weight=0."
            )
        sources = sorted(set(adata.obs[key].astype(str)) - {str(target_condition)})
        _warn_model_alone(sources, target_condition, model)
        return translated, 0.0
    own = adata.obs[key].astype(str).to_numpy()
    expected = translated["expected"].copy()
    counts = None if translated["counts"] is None else translated["counts"].copy()
    is_count = model.module.observation.is_count
    x = model.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
    blended, alone, cause = False, [], None
    draws = CellDraws() if draws is None else draws
    memo = {}  # the training cells' groups, data and coordinates, for every source
    library = None
    for source in sorted(set(own) - {str(target_condition)}):
        if source not in in_model:
            # A query model's cells are the query's: no observed response from the reference's.
            if strict:
                raise NoResponseError(
                    f"The model's AnnData holds no training cells under {source!r}, so no observed "
                    f"response from it to average{_query_note(model)}; pass response_weight=0."
                )
            alone.append(source)
            continue
        rows = np.flatnonzero(own == source)
        part = adata if len(rows) == adata.n_obs else adata[rows]
        if part.is_view:  # anndata copies a backed AnnData only to a file: read its rows
            part = memory_copy(part)
        contrast = Contrast.resolve(model, part, target_condition, key, None)
        try:
            nearest = nearest_response(model, part, contrast, batch_size, memo=memo)
            # The scale responses add on: log-normalized counts, or the data of other models.
            nearest = nearest.layers["log_normalized"] if is_count else nearest.X
            nearest = np.asarray(nearest, dtype=np.float64)
        except UnlabelledResponseError as err:  # labels of one condition only
            if strict:
                raise NoResponseError(
                    f"No group of the model's training cells is seen under both {source!r} and "
                    f"{str(target_condition)!r}: {err.cause}, so there is no observed response "
                    f"to average. {_route(target_condition)}"
                ) from None
            alone.append(source)
            cause = err.cause
            continue
        except NoResponseError:
            if strict:
                raise
            alone.append(source)
            continue
        blended = True
        if not is_count:
            expected[rows] = (1 - weight) * expected[rows] + weight * nearest
            continue
        if library is None:  # every cell's, once
            library = np.maximum(row_sums(x), 1.0)
        own_library = library[rows].reshape(-1, 1)
        model_log = np.log1p(np.maximum(expected[rows], 0.0) / own_library * 1e4)
        mean = np.expm1((1 - weight) * model_log + weight * nearest) * own_library / 1e4
        expected[rows] = mean
        counts[rows] = draws.round_counts(torch.as_tensor(mean).float(), "blend").numpy()
    _warn_model_alone(alone, target_condition, model, cause)
    return {"expected": expected.astype(np.float32), "counts": counts}, weight if blended else 0.0


def _query_note(model) -> str:
    """For a query model: where its training cells come from (its query, not its reference)."""
    if not getattr(model, "is_query_model", False):
        return ""
    return (
        " (a query model's training cells are its query's alone: it does not read its "
        "reference's cells, so a response is observed only where the query holds cells of "
        "both conditions)"
    )


def _route(target) -> str:
    """translate's advice where no label is seen under both conditions: it takes no
    balance_key, predict_perturbation's nearest_response does."""
    return (
        "translate takes no balance_key; to transfer the responses of predicted labels, store "
        "them in the training AnnData and pass them as balance_key: "
        f"{predicted_labels_route(target)}. Pass response_weight=0 to ask for the model's "
        "translation alone."
    )


def _warn_model_alone(sources: list[str], target, model, cause: str | None = None) -> None:
    """translate's default averages in observed responses; where there were none to average,
    the cells kept the model's translation alone, which the user is told rather than left to
    find in ``uns["response_weight"]``. ``cause``: why no label is seen under both conditions
    (labels of one condition only), said with the route to predicted labels' responses."""
    if not sources:
        return
    why = f": {cause}" if cause is not None else _query_note(model)
    advice = (
        _route(target)
        if cause is not None
        else ("Pass response_weight=0 to ask for the model alone.")
    )
    warn_user(
        "translate's default (response_weight=None: 0.5 for counts) averages the model's "
        "translation with the observed responses of the most similar training groups, but "
        f"no group of the model's training cells is seen under both "
        f"{', '.join(map(repr, sources))} and {str(target)!r}{why}. Those "
        "cells were translated by the model alone (uns['response_weight'] records the "
        f"weight used). {advice}"
    )
