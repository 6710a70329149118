"""The observed log library sizes that :meth:`deltavae.model.CGMDVAE.sample` draws each cell's
from: :data:`LEVELS` quantiles of those of the cells (outside the test split) of each cluster
and combination of conditions, kept with the model (``library_log_quantiles_by_cluster_``,
``library_log_quantiles_by_condition_``, of all of them ``library_log_quantiles_``; per
AnnData in ``fit_records_``), read at a uniform
made of the cell's normal draw (``Phi(z)``): the cells' totals come as the group's observed
ones, as resampling its cells' libraries would, without keeping every cell's.

Drawn log-normal from the group's mean and sd, a group whose log libraries are skewed (a
long tail of shallow cells: most cell types of 10x data) got totals under its real ones:
PBMC 3k's FCGR3A+ monocytes' sampled median was 9.5% under their observed median (exp of
the mean of the logs), CD14+ monocytes' 6.5%, DCs' 10%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

#: Quantiles kept of each group's log library sizes (at 0, 1/(LEVELS-1), ..., 1).
LEVELS = 101


def group_quantiles(log_lib: np.ndarray, groups: list) -> dict:
    """``(cells, quantiles)`` (a tuple of :data:`LEVELS` floats) of ``log_lib`` per
    combination of ``groups`` (arrays of the cells' values), keyed as
    :func:`~deltavae.model._library_stats._moments` keys its moments."""
    levels = np.linspace(0.0, 1.0, LEVELS)
    out = {}
    for combo, values in pd.Series(log_lib).groupby(list(groups)):
        combo = combo if isinstance(combo, tuple) else (combo,)
        q = np.quantile(values.to_numpy(dtype=float), levels)
        out[tuple(map(str, combo))] = (len(values), tuple(float(v) for v in q))
    return out


def mixture(parts: list) -> tuple:
    """``(cells, quantiles)`` of the cells of every part (``(cells, quantiles)`` each) together:
    the quantiles of the mixture of the parts' distributions, weighted by their cells."""
    if len(parts) == 1:
        return parts[0]
    levels = np.linspace(0.0, 1.0, LEVELS)
    total = sum(n for n, _ in parts)
    grid = np.unique(np.concatenate([np.asarray(q) for _, q in parts]))
    cdf = sum(n * np.interp(grid, q, levels, left=0.0, right=1.0) for n, q in parts) / total
    return total, tuple(float(v) for v in np.interp(levels, cdf, grid))


def record_quantiles(model, kind: str, quantiles: dict, min_cells: int, cells: dict) -> None:
    """This fit's :func:`group_quantiles` kept as the record of the model's AnnData
    (``fit_records_``), and ``library_log_quantiles_by_<kind>_`` their :func:`mixture` over
    every AnnData's last fit, for the groups of ``min_cells`` cells or more whose moments
    pooled as many cells (``cells``: group: cells): not for a group that a model saved
    before its fits kept quantiles counted cells of (their libraries were not kept, so the
    group's draws stay log-normal from its pooled moments)."""
    from ._fit_records import keep

    parts: dict = {}
    for fits in keep(model, f"library_quantiles_{kind}", quantiles).values():
        for combo, part in fits.items():
            parts.setdefault(combo, []).append(part)
    joined = {c: mixture(p) for c, p in parts.items()}
    setattr(
        model,
        f"library_log_quantiles_by_{kind}_",
        {c: q for c, (n, q) in joined.items() if n >= min_cells and cells.get(c) == n},
    )


def record_pooled_quantiles(model, log_lib: np.ndarray, cells: int) -> None:
    """``library_log_quantiles_``: the quantiles of ``log_lib`` (this fit's cells outside the
    test split) pooled as ``library_log_stats_`` is over every AnnData's last fit (kept in
    ``fit_records_``), which a cell of a group without cells (a novel cluster) is drawn
    from; None where ``library_log_stats_`` pooled ``cells`` cells, more than the records
    kept libraries of (a model saved before)."""
    from ._fit_records import keep

    part = (len(log_lib), tuple(float(v) for v in np.quantile(log_lib, np.linspace(0, 1, LEVELS))))
    n, q = mixture(list(keep(model, "library_quantiles_all", part).values()))
    model.library_log_quantiles_ = q if n == cells else None


def library_draw(mean: torch.Tensor, sd: torch.Tensor, tables: list, like: torch.Tensor):
    """The log library sizes of the cells from their standard normal draws ``z`` (``(n, 1)``,
    float64 on the CPU), as a function: where a cell's group kept quantiles (``tables``, one a
    cell: a tuple of :data:`LEVELS` floats or None), those read at ``Phi(z)`` (linearly
    between two quantiles), else ``mean + sd * z`` (``(n, 1)`` tensors). On ``like``'s
    device, in its dtype; computed on the CPU in float64, alike on any device."""
    mean, sd = mean.detach().cpu().double(), sd.detach().cpu().double()
    has = torch.tensor([t is not None for t in tables], dtype=torch.bool)
    table = torch.tensor([t for t in tables if t is not None], dtype=torch.float64)

    def draw(z: torch.Tensor) -> torch.Tensor:
        lib = mean + sd * z
        if len(table):
            pos = torch.special.ndtr(z[has, 0]) * (LEVELS - 1)
            i = pos.floor().clamp(0, LEVELS - 2).long()
            frac = (pos - i).unsqueeze(-1)
            rows = torch.arange(len(table))
            low, high = table[rows, i].unsqueeze(-1), table[rows, i + 1].unsqueeze(-1)
            lib[has] = low + frac * (high - low)
        return lib.to(device=like.device, dtype=like.dtype)

    return draw
