"""Differential expression of groups too small to be groups: the cells each comparison reads,
and a warning where a side holds fewer than :data:`~._few_cells.FEW_CELLS`.

scvi-tools compares a group of one cell as any other: its log-fold changes and Bayes
factors are that cell's posterior against the rest, noise where a group's were asked for,
without a word. scanpy's ``rank_genes_groups`` refuses a group of one sample; the
posterior's draws give one cell a table, so it is warned of, as setup warns of categories of
fewer than 3 cells (:mod:`._few_cells`), and the table still comes."""

from __future__ import annotations

import numpy as np

from ._de_rows import idx_rows
from ._few_cells import FEW_CELLS
from ._validation import warn_user


def _names(value) -> list:
    return [] if value is None else [value] if np.ndim(value) == 0 else list(value)


def compared_sizes(adata, given: dict) -> list[tuple[str, int]]:
    """``(side, cells)`` of each side of each comparison of a ``differential_expression`` call
    (``given``: its arguments by name, its groups settled), ``adata`` the AnnData it reads:
    ``idx1`` and ``idx2`` (or the rest), or each group of ``group1`` (every group with cells
    where ``None``), ``group2`` and, without it, the rest each group is compared with."""
    n_obs = adata.n_obs
    idx1, idx2 = given.get("idx1"), given.get("idx2")
    if idx1 is not None:
        n1 = len(np.unique(idx_rows(adata, idx1) % n_obs))
        if idx2 is None:
            return [("idx1", n1), ("the rest (idx2=None)", n_obs - n1)]
        return [("idx1", n1), ("idx2", len(np.unique(idx_rows(adata, idx2) % n_obs)))]
    groupby = given.get("groupby")
    if groupby is None or groupby not in adata.obs:
        return []
    column = adata.obs[groupby]
    group2 = _names(given.get("group2"))
    group1 = _names(given.get("group1"))
    if not group1:
        held = column.dropna().unique()
        group1 = [g for g in sorted(held, key=str) if g not in group2]
    size = {repr(g): int((column == g).sum()) for g in group1 + group2}
    sides = [(name, n) for name, n in size.items()]
    if not group2:
        grouped = int(column.notna().sum())
        sides += [(f"the rest against {g!r}", grouped - size[repr(g)]) for g in group1]
    return sides


def warn_few_cells_compared(adata, given: dict) -> None:
    """Warn where a side of a comparison :func:`compared_sizes` names holds fewer than
    :data:`~._few_cells.FEW_CELLS` cells, naming each with its count and, for groups of a
    column, the ``group1`` that leaves them out."""
    sides = compared_sizes(adata, given)
    few = [(side, n) for side, n in sides if n < FEW_CELLS]
    if not few:
        return
    shown = ", ".join(f"{side} ({n} cell{'s' * (n != 1)})" for side, n in few[:5])
    where = "" if given.get("idx1") is not None else f" of adata.obs[{given['groupby']!r}]"
    advice = "Select more cells, or merge the group into another"
    groups = [side for side, n in sides if n >= FEW_CELLS and not side.startswith("the rest")]
    if given.get("idx1") is None and given.get("group2") is None and groups:
        advice += f", or leave it out: group1=[{', '.join(groups)}]"
    warn_user(
        f"differential_expression compares groups of fewer than {FEW_CELLS} cells{where}: "
        f"{shown}. Their expression is drawn from so few cells' posteriors that their "
        "log-fold changes and Bayes factors are those cells', not a group's: read them as "
        f"noise (scanpy's rank_genes_groups refuses a group of one cell). {advice}."
    )
