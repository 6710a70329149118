"""The library sizes :meth:`deltavae.model.CGMDVAE.sample` draws for count likelihoods: of
the cells outside the test split (training and validation) of each combination of the
conditions, as scvi-tools' library prior is of each batch.

Drawn from the library sizes of all training cells, cells sampled under a condition sequenced
four times deeper (a batch, a donor, a protocol) got the depth of all cells together: their
totals matched no real cells of that condition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS

from ._condition_counts import pooled
from ._library_quantiles import group_quantiles, library_draw, record_quantiles
from ._matrices import row_sums

#: The fewest cells of a combination of conditions whose spread of library sizes is its own.
MIN_CELLS_FOR_SD = 10


def log_libraries(model) -> np.ndarray:
    """The log library size of every cell of the model's AnnData (1 for an empty cell)."""
    x = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    return np.log(np.maximum(row_sums(x), 1.0))


def batch_library_prior(adata_manager, n_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """scvi-tools' ``_init_library_size`` (the mean and variance of the log library size of
    each batch, 1 x ``n_batch``; an empty cell counts as log 0, a batch without cells 0 and
    1), with the totals summed in float64: summed in X's dtype, float16 counts overflowed
    past 65504 per cell, which gave such cells an infinite library, a prior mean far off
    and a warning of empty cells that there were not.

    Examples
    --------
    >>> class Manager:  # the two fields it reads: 2 cells of 90000 counts in float16
    ...     def get_from_registry(self, key):
    ...         return {"X": np.full((2, 3), 30000, np.float16), "batch": np.zeros((2, 1))}[key]
    >>> np.round(batch_library_prior(Manager(), 1)[0], 3).tolist()
    [[11.408]]
    """
    totals = row_sums(adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
    batches = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
    means, variances = np.zeros(n_batch), np.ones(n_batch)
    for b in np.unique(batches).astype(int):
        logs = np.log(np.where(totals[batches == b] > 0, totals[batches == b], 1.0))
        means[b], variances[b] = np.float32(logs.mean()), np.float32(logs.var())
    return means.reshape(1, -1), variances.reshape(1, -1)


def record_library_stats(model, log_lib: np.ndarray | None = None, rows=None) -> None:
    """After a fit: mean and sd of the log library sizes of the model's cells at positions
    ``rows`` (default all; after a fit its training and validation cells: a library size is
    observed, not fitted, but a test split is held out) per combination of its condition
    keys' values (a tuple of strings, in the keys' order), kept with the model in
    ``library_log_stats_by_condition_``: pooled over the AnnData it trained on (a query's
    with its reference's), each of them by its last fit (:func:`_record_moments`); a
    combination of fewer than :data:`MIN_CELLS_FOR_SD` cells keeps no spread of its own
    (``sd`` None: that of all cells is drawn; two cells' sd might be near 0). Nothing for a
    model without conditions or of a likelihood that is not of counts. ``log_lib``:
    :func:`log_libraries` of the model's cells at ``rows``, where the caller has read them."""
    keys = model.condition_keys
    if not keys or not model.module.observation.is_count:
        return
    obs = model.adata.obs if rows is None else model.adata.obs.iloc[rows]
    groups = [obs[key].astype(str).to_numpy() for key in keys]
    if log_lib is None:
        log_lib = log_libraries(model) if rows is None else log_libraries(model)[rows]
    _record_moments(model, "condition", log_lib, groups)


def _moments(log_lib: np.ndarray, groups: list) -> dict:
    """``(cells, mean, sd)`` (numpy's sd, ``ddof=0``) of ``log_lib`` per combination of
    ``groups`` (arrays of the cells' values), keyed by the combination's values as strings."""
    table = pd.Series(log_lib).groupby(list(groups)).agg(["mean", "std", "size"])
    moments = {}
    for combo, (mean, sd, n) in zip(table.index, table.to_numpy(), strict=True):
        combo = combo if isinstance(combo, tuple) else (combo,)
        sd = sd * np.sqrt((n - 1) / n) if n > 1 else 0.0
        moments[tuple(map(str, combo))] = (int(n), float(mean), float(sd))
    return moments


def _record_moments(model, kind: str, log_lib: np.ndarray, groups: list) -> None:
    """This fit's :func:`_moments` kept as the record of the AnnData it trained on
    (``fit_records_``: :func:`~deltavae.model._fit_records.keep`), in place of that AnnData's
    last fit's; ``library_log_stats_by_<kind>_`` (``kind``: ``"condition"`` or
    ``"cluster"``) pooled over every AnnData's. A fit on other cells replaced the stats of
    each combination they shared, while ``library_log_stats_`` and the counts ``sample`` draws
    from pooled them; a fit again on the same cells counts them once."""
    from ._fit_records import EARLIER, keep

    stats_name = f"library_log_stats_by_{kind}_"
    moments = _moments(log_lib, groups)
    # A model saved before the records kept its earlier stats: kept beside these, as they were.
    records = keep(model, f"library_moments_{kind}", moments, getattr(model, stats_name, None))
    earlier = records.pop(EARLIER, None) or {}
    joined: dict = {}
    for fits in records.values():
        for combo, (n, mean, sd) in fits.items():
            n_before, *before = joined.get(combo, (0, None, None))
            mean, sd = pooled(tuple(before) if n_before else None, n_before, (mean, sd), n)
            joined[combo] = (n_before + n, mean, sd)
    stats = {c: (m, s if n >= MIN_CELLS_FOR_SD else None) for c, (n, m, s) in joined.items()}
    setattr(model, stats_name, {**earlier, **stats})
    # The groups' observed libraries, which sample draws from (their moments: where few cells)
    counted = {c: n for c, (n, _, _) in joined.items()}
    record_quantiles(model, kind, group_quantiles(log_lib, groups), MIN_CELLS_FOR_SD, counted)


def record_cluster_library_stats(
    model, cells: np.ndarray, columns: list, log_lib: np.ndarray | None = None
) -> None:
    """After a fit, for count likelihoods: mean and sd of the log library sizes of the
    cells at positions ``cells`` (outside the test split, as
    :func:`record_library_stats`'s) per ``(cluster, *condition values)`` (``columns``:
    each cell's cluster name, then its values of the condition keys, as strings), in
    ``library_log_stats_by_cluster_`` (saved with the model; pooled over the AnnData it
    trained on as :func:`record_library_stats`'s); sd None under :data:`MIN_CELLS_FOR_SD`
    cells. Cell types differ in depth (Kang IFN-beta: monocytes 2-3x the counts of T and B
    cells), which the libraries of a condition's cells, drawn for every type alike, did not
    keep. ``log_lib``: every cell's log library size (:func:`log_libraries`), where read
    already."""
    if not model.module.observation.is_count:
        return
    log_lib = (log_libraries(model) if log_lib is None else log_lib)[cells]
    _record_moments(model, "cluster", log_lib, columns)


def cell_library_stats(
    model, cats: torch.Tensor | None, pooled: tuple[float, float], clusters=None
):
    """The function of the sampled cells' standard normal draws that gives their log library
    sizes (:func:`~deltavae.model._library_quantiles.library_draw`), each cell's from its
    group: the cells (outside the test split) of its cluster (``clusters``, indices; in
    ``library_log_stats_by_cluster_``) and combination of conditions (``cats``, codes cells x
    keys), else those of its combination of conditions, else (a combination no cell carried,
    a model saved before these were kept, a model without conditions) ``pooled``, the mean
    and sd of all cells outside the test split. The observed libraries of the group (its
    quantiles, where it had :data:`MIN_CELLS_FOR_SD` cells or more:
    ``library_log_quantiles_by_cluster_`` / ``_by_condition_``; ``library_log_quantiles_``
    where it took ``pooled``), else log-normal from its mean and sd (a mean without its own
    sd, few cells, takes the next one's sd); ``pooled`` itself where every cell's are those
    and no quantiles were kept."""
    stats = getattr(model, "library_log_stats_by_condition_", None) or {}
    by_cluster = (
        getattr(model, "library_log_stats_by_cluster_", None) if clusters is not None else None
    )
    like = model.module.alpha
    q_pooled = getattr(model, "library_log_quantiles_", None)
    if (cats is None or not stats) and not by_cluster:
        n = len(cats) if cats is not None else None if clusters is None else len(clusters)
        if q_pooled is None or n is None:
            return pooled  # drawn log-normal
        mean, sd = (torch.full((n, 1), v, dtype=torch.float64) for v in pooled)
        return library_draw(mean, sd, [q_pooled] * n, like)
    n = len(clusters) if cats is None else len(cats)
    keys = model.condition_keys
    mappings = model._cat_state().mappings if keys else {}
    known = [[str(v) for v in mappings[key]] for key in keys]
    codes = np.zeros((n, 0), dtype=np.int64) if cats is None else cats.cpu().numpy()
    if by_cluster:
        codes = np.column_stack([np.asarray(clusters).ravel(), codes])
    rows, inverse = np.unique(codes, axis=0, return_inverse=True)
    names = model.cluster_names if by_cluster else None
    q_condition = getattr(model, "library_log_quantiles_by_condition_", None) or {}
    q_cluster = getattr(model, "library_log_quantiles_by_cluster_", None) or {}
    per_row, tables = [], []
    for row in rows:
        conditions = row[1:] if by_cluster else row
        values = tuple(known[j][c] for j, c in enumerate(conditions))
        mean, sd = stats.get(values, pooled) if cats is not None else pooled
        table = q_condition.get(values) if cats is not None and values in stats else q_pooled
        sd = pooled[1] if sd is None else sd
        if by_cluster and (names[row[0]], *values) in by_cluster:
            mean, own = by_cluster[(names[row[0]], *values)]
            sd = sd if own is None else own
            table = q_cluster.get((names[row[0]], *values))
        per_row.append((mean, sd))
        tables.append(table)
    inverse = np.asarray(inverse).ravel()
    cells = torch.tensor(per_row, dtype=torch.float64)[torch.as_tensor(inverse)]
    return library_draw(cells[:, :1], cells[:, 1:], [tables[i] for i in inverse], like)
