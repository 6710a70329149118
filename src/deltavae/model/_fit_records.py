"""What CGMDVAE's fits recorded of their cells, per AnnData (``fit_records_``, saved): the pooled
records ``sample``, ``translate`` and the checks read (``condition_counts_``,
``condition_combinations_``, ``condition_counts_with_validation_``, ``cluster_conditions_``,
``library_log_stats_``, and the per-condition and per-cluster library moments of
``library_log_stats_by_condition_`` / ``_by_cluster_`` and quantiles of
``library_log_quantiles_by_condition_`` / ``_by_cluster_``) are their sums over every AnnData the
model trained on, each AnnData (its cells by name:
:func:`~deltavae.train._record.cells_digest`) by its last fit.

A fit on A, then B, then A again counted A twice: only the last AnnData's earlier record was
taken back before a fit added its cells.
"""

from __future__ import annotations

import contextlib
from collections import Counter

#: The record of what a model counted before it kept records per AnnData (a model saved
#: before them): kept beside the others, as it was.
EARLIER = "earlier"


def _digest(model) -> str:
    """The model's AnnData's :func:`~deltavae.train._record.cells_digest`: computed once inside
    :func:`digest_once` (a fit's records), else at each call."""
    from ..train._record import cells_digest

    memo = getattr(model, "__dict__", {}).get("_digest_once")
    if memo is None:
        return cells_digest(model.adata.obs.index)
    if memo[0] is not model.adata:  # another AnnData set meanwhile: its own
        memo[:] = [model.adata, cells_digest(model.adata.obs.index)]
    return memo[1]


@contextlib.contextmanager
def digest_once(model):
    """Around a fit's records: :func:`_digest` hashes the cells' names once, not once per
    record (12 times a fit with conditions: a SHA-1 of every name, 1 s at 1M cells each). Kept
    for the block only: between calls the user may rename cells in place (pandas lets an
    index's values be written), which no cache could tell."""
    model.__dict__["_digest_once"] = [None, None]
    try:
        yield
    finally:
        model.__dict__.pop("_digest_once", None)


def keep(model, field: str, value, earlier=None) -> dict:
    """This fit's ``value`` of ``field`` kept as the record of the model's AnnData, in place of
    its last fit's; ``earlier``, what the model had counted of ``field`` before it kept records
    (where none of them holds ``field`` yet), kept once under :data:`EARLIER`. Returns every
    record of ``field``, by AnnData."""
    records = {d: dict(r) for d, r in (getattr(model, "fit_records_", None) or {}).items()}
    if earlier and not any(field in r for r in records.values()):
        records.setdefault(EARLIER, {})[field] = earlier
    records.setdefault(_digest(model), {})[field] = value
    model.fit_records_ = records
    return {d: r[field] for d, r in records.items() if field in r}


def counts_per_key(records: dict) -> dict:
    """``{key: {value: cells}}`` summed over ``records``."""
    total: dict = {}
    for counts in records.values():
        for key, values in counts.items():
            total[key] = dict(Counter(total.get(key, {})) + Counter(values))
    return total


def summed(records: dict) -> dict:
    """``{combination: cells}`` summed over ``records``."""
    total: Counter = Counter()
    for values in records.values():
        total += Counter(values)
    return dict(total)


def library(records: dict) -> tuple[float, float] | None:
    """Mean and sd of the log library sizes of ``records`` (``(cells, mean, sd)`` each)."""
    from ._condition_counts import pooled

    n_total, stats = 0, None
    for n, mean, sd in records.values():
        stats, n_total = pooled(stats, n_total, (mean, sd), n), n_total + n
    return stats
