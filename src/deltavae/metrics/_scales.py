"""Whether the two sides of a perturbation score are on one scale: counts scored against
log-normalized values give a low R² that looks like a bad prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._warn import warn_user

#: Ratio of the largest gene means above which the two sides look like different scales.
_SCALE_RATIO = 20.0

#: The largest value log-normalized data reach at a target sum of a million (CPM):
#: ``log1p(1e6)``; whole counts above it cannot be on a log scale.
_LOG_CEILING = float(np.log1p(1e6))


def warn_if_scales_differ(
    pred_means, true_means, predicted=None, observed=None, name: str = "predicted"
) -> None:
    """Say so when the two sides look like different scales: one side's gene means many times
    the other's, or (where the gene means alone cannot tell, a log-normalized mean of 6
    against a count mean of 100) one side whole counts above ``log1p(1e6)`` and the other
    values that are not whole and stay below it, as log-normalized values do.
    A prediction holds expected counts in ``X`` and, for ``nearest_response``,
    log-normalized values in ``layers["log_normalized"]``: either may be scored by mistake.
    Not for changes from control (a side with negative means): a predicted change smaller
    than the observed one is no other scale.

    Examples
    --------
    >>> counts = np.array([[0.0, 40.0, 3.0], [2.0, 60.0, 1.0]])
    >>> logs = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    >>> warn_if_scales_differ(logs.mean(0), counts.mean(0), logs, counts)  # doctest: +SKIP
    UserWarning: observed holds whole counts (up to 60) and predicted values that are not ...
    """
    top_pred = float(np.max(pred_means, initial=0.0))
    top_true = float(np.max(true_means, initial=0.0))
    if min(top_pred, top_true) <= 0 or min(pred_means.min(), true_means.min()) < 0:
        return
    if max(top_pred, top_true) / min(top_pred, top_true) > _SCALE_RATIO:
        warn_user(
            f"The largest {name} gene mean is {top_pred:.4g} and the largest observed one "
            f"{top_true:.4g}: the two look like different scales (counts against log-normalized "
            "values?). Give both on one scale, e.g. dv.metrics.log_normalize of the counts.",
        )
        return
    pred_values, true_values = _values(predicted), _values(observed)
    if pred_values is None or true_values is None:
        return
    for (counts, c_name), (logs, l_name) in (
        ((true_values, "observed"), (pred_values, name)),
        ((pred_values, name), (true_values, "observed")),
    ):
        if counts[0] and counts[1] > _LOG_CEILING and not logs[0] and logs[1] <= _LOG_CEILING:
            warn_user(
                f"{c_name} holds whole counts (up to {counts[1]:.4g}) and {l_name} values that "
                f"are not whole and stay below {_LOG_CEILING:.3g} (up to {logs[1]:.4g}): counts "
                "against log-normalized values? (a prediction's layers['log_normalized'] holds "
                "log-normalized values.) Give both on one scale, e.g. "
                f"dv.metrics.log_normalize of {c_name}'s counts.",
            )
            return


def _values(data) -> tuple[bool, float] | None:
    """Whether every value of cells x genes ``data`` in memory is whole, and the largest;
    ``None`` where it is on disk or not numbers (the gene means say enough there)."""
    if isinstance(data, AnnData):
        data = data.X
    if isinstance(data, pd.DataFrame):
        try:
            data = data.to_numpy(dtype=float)
        except (TypeError, ValueError):
            return None
    if sparse.issparse(data):
        values = np.asarray(data.data, dtype=float)
    elif isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
        values = np.asarray(data, dtype=float).ravel()
    else:
        return None
    if values.size == 0 or not np.isfinite(values).all():
        return None
    return bool(np.all(values == np.round(values))), float(values.max(initial=0.0))
