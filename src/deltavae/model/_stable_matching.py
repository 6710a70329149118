"""One-to-one stable matching (Gale-Shapley), as Archetypes matches signatures to archetypes.

Hand-written: scipy's ``linear_sum_assignment`` maximises the total score, which splits a
pair that prefers each other most; no well-kept library offers the stable matching itself.
"""

from __future__ import annotations

import numpy as np


def stable_matching(scores: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one stable matching of rows to columns, both preferring higher scores.

    Gale-Shapley with rows proposing: no row and column both prefer each other to their
    partners. Unlike the assignment that maximises the total score, a pair that prefers each
    other most is never split to raise the sum.

    Parameters
    ----------
    scores
        Rows (e.g. signatures) x columns (e.g. archetypes).

    Returns
    -------
    list of (row, column)
        ``min(n_rows, n_columns)`` pairs, sorted by row.

    Examples
    --------
    >>> stable_matching(np.array([[0.9, 0.8], [0.7, 0.1]]))
    [(0, 0), (1, 1)]
    """
    scores = np.asarray(scores, dtype=float)
    n_rows, n_cols = scores.shape
    preferences = [list(np.argsort(-scores[r], kind="stable")) for r in range(n_rows)]
    partner_of_col: dict[int, int] = {}
    free = list(range(n_rows))
    while free:
        row = free.pop(0)
        if not preferences[row]:
            continue
        col = int(preferences[row].pop(0))
        current = partner_of_col.get(col)
        if current is None:
            partner_of_col[col] = row
        elif scores[row, col] > scores[current, col]:
            partner_of_col[col] = row
            free.append(current)
        else:
            free.append(row)
    return sorted((row, col) for col, row in partner_of_col.items())
