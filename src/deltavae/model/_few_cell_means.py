"""Means over fewer than :data:`~._few_cells.FEW_CELLS` cells, said where a read-out takes one
as a group's: ``predict_perturbation(method="latent_shift")``'s shift (the mean latent of the
training cells under each condition, per ``balance_key`` group) and ``differential_abundance``'s
samples (each one's aggregated posterior).

Of one or two cells such a mean is those cells', not a condition's or a sample's: the shift
moves every cell by one cell's place in the latent space, and a sample's column of
``da_log_probs`` says how near each cell is to one or two cells. ``differential_expression``
warns of a side of fewer than 3 cells (:mod:`._de_sizes`), setup of such categories
(:mod:`._few_cells`); these say it with the same bound, and the result still comes.
"""

from __future__ import annotations

import numpy as np

from ._few_cells import FEW_CELLS
from ._validation import warn_user


def _cells(n: int) -> str:
    return f"{n} cell{'s' * (n != 1)}"


def warn_few_cell_shift(sizes: dict, source, target, balance_key: str | None) -> None:
    """Warn where latent_shift reads a condition's mean latent from fewer than
    :data:`FEW_CELLS` training cells. ``sizes``: ``{group: (cells under source, under
    target)}`` of the groups the shift averages (one group, None, without ``balance_key``)."""
    few = {g: n for g, n in sizes.items() if min(n) < FEW_CELLS}
    if not few:
        return
    shown = "; ".join(
        ("" if g is None else f"{str(g)!r}: ")
        + f"{_cells(n[0])} under {str(source)!r}, {_cells(n[1])} under {str(target)!r}"
        for g, n in list(few.items())[:5]
    ) + (" ..." if len(few) > 5 else "")
    where = "" if balance_key is None else f" (groups of adata.obs[{balance_key!r}])"
    share = "" if balance_key is None else f" ({len(few)} of the {len(sizes)} groups averaged)"
    warn_user(
        f"latent_shift reads its shift from the mean latent of fewer than {FEW_CELLS} training "
        f"cells under a condition{where}: {shown}{share}. A mean of so few cells is those "
        "cells' place in the latent space, not the condition's: the predicted change is "
        "mostly noise. Read it with care; more training cells under both conditions make it "
        "reliable."
    )


def warn_few_cell_samples(
    values: np.ndarray, names, num_cells_posterior: int | None, sample_key: str
) -> None:
    """Warn where differential_abundance reads a sample's aggregated posterior from fewer
    than :data:`FEW_CELLS` cells: samples that small (``values``: each cell's sample, ``names``
    the samples), or every sample where ``num_cells_posterior`` is below it."""
    if num_cells_posterior is not None and num_cells_posterior < FEW_CELLS:
        warn_user(
            f"num_cells_posterior={num_cells_posterior} reads each sample's aggregated "
            f"posterior from {_cells(int(num_cells_posterior))}: its column of "
            "da_log_probs says how near each cell is to those cells, not to the sample. Pass "
            f"num_cells_posterior={FEW_CELLS} or more, or None (all of a sample's cells)."
        )
        return
    sizes = {name: int((values == name).sum()) for name in names}
    few = {name: n for name, n in sizes.items() if n < FEW_CELLS}
    if not few:
        return
    shown = ", ".join(f"{str(name)!r} ({_cells(n)})" for name, n in list(few.items())[:5])
    shown += " ..." if len(few) > 5 else ""
    warn_user(
        f"differential_abundance compares samples of fewer than {FEW_CELLS} cells of "
        f"adata.obs[{sample_key!r}]: {shown}. A sample's aggregated posterior over so few "
        "cells is those cells' own: its column of da_log_probs says how near each cell is "
        "to them, not the sample's abundance (noise, as a group of one cell is to "
        "differential_expression). Merge such samples into others, or leave their cells out."
    )
