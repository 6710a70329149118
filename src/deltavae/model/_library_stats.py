"""The library sizes :meth:`deltavae.model.CGMDVAE.sample` draws for count likelihoods: of
the training cells of each combination of the conditions, as scvi-tools' library prior is of
each batch.

Drawn from the library sizes of all training cells, cells sampled under a condition sequenced
four times deeper (a batch, a donor, a protocol) got the depth of all cells together: their
totals matched no real cells of that condition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS

from ._matrices import row_sums

#: The fewest cells of a combination of conditions whose spread of library sizes is its own.
MIN_CELLS_FOR_SD = 10


def log_libraries(model) -> np.ndarray:
    """The log library size of every cell of the model's AnnData (1 for an empty cell)."""
    x = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    return np.log(np.maximum(row_sums(x), 1.0))


def record_library_stats(model, log_lib: np.ndarray | None = None, rows=None) -> None:
    """After a fit: mean and sd of the log library sizes of the model's cells at positions
    ``rows`` (default all; after a fit its training and validation cells: a library size is
    observed, not fitted, but a test split is held out) per combination of its condition
    keys' values (a tuple of strings, in the keys' order), kept with the model in
    ``library_log_stats_by_condition_`` and joined to those of earlier fits (a query's to its
    reference's); a combination of fewer than :data:`MIN_CELLS_FOR_SD` cells keeps no spread
    of its own (``sd`` None: that of all cells is drawn; two cells' sd might be near 0).
    Nothing for a model without conditions or of a likelihood that is not of counts.
    ``log_lib``: :func:`log_libraries` of the model's cells at ``rows``, where the caller
    has read them."""
    keys = model.condition_keys
    if not keys or not model.module.observation.is_count:
        return
    obs = model.adata.obs if rows is None else model.adata.obs.iloc[rows]
    groups = [obs[key].astype(str).to_numpy() for key in keys]
    if log_lib is None:
        log_lib = log_libraries(model) if rows is None else log_libraries(model)[rows]
    table = pd.Series(log_lib).groupby(groups).agg(["mean", "std", "size"])
    stats = dict(getattr(model, "library_log_stats_by_condition_", None) or {})
    for combo, (mean, sd, n) in zip(table.index, table.to_numpy(), strict=True):
        combo = combo if isinstance(combo, tuple) else (combo,)
        sd = sd * np.sqrt((n - 1) / n) if n >= MIN_CELLS_FOR_SD else None  # numpy's std
        stats[tuple(map(str, combo))] = (float(mean), None if sd is None else float(sd))
    model.library_log_stats_by_condition_ = stats


def cell_library_stats(model, cats: torch.Tensor | None, pooled: tuple[float, float]):
    """The mean and sd of each sampled cell's log library size, as ``(n, 1)`` tensors on the
    module's device: those of the training cells of its combination of conditions (``cats``,
    codes cells x keys), else (a combination no cell carried, a model saved before these were
    kept, a model without conditions) ``pooled``, those of all training cells."""
    stats = getattr(model, "library_log_stats_by_condition_", None)
    if cats is None or not stats:
        return pooled
    keys, mappings = model.condition_keys, model._cat_state().mappings
    known = [[str(v) for v in mappings[key]] for key in keys]
    rows, inverse = np.unique(cats.cpu().numpy(), axis=0, return_inverse=True)
    per_row = []
    for row in rows:
        mean, sd = stats.get(tuple(known[j][c] for j, c in enumerate(row)), pooled)
        per_row.append((mean, pooled[1] if sd is None else sd))
    table = torch.tensor(per_row, dtype=model.module.alpha.dtype, device=model.module.device)
    cells = table[torch.as_tensor(np.asarray(inverse).ravel(), device=table.device)]
    return cells[:, :1], cells[:, 1:]
