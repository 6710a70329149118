"""Observed responses read from a handful of training cells (``nearest_response``, and
``translate``'s average with it): said, for the cells that take most of their change from them.

A group's response is the difference of its mean data under the two conditions. Over 2 or 5
cells that mean is mostly noise, and the cells nearest the group take it whole: on synthetic
counts (600 cells x 60 genes, 3 types x 2 conditions, one type kept with 2, 5, 10, 20 or all 97
of its cells under the target, seeds 0-1) the R² of the predicted change of that type's cells
against their true change was -3.4 / -5.1 (2 cells), -0.9 / -1.1 (5), 0.03 / 0.36 (10),
0.51 / 0.68 (20) and 0.99 (97), against 0.05-0.34 for the model's translation alone
(``response_weight=0``) and 0 for predicting no change; the R² of the predicted means still
read 0.70-0.87 (0.96 with every cell).
"""

from __future__ import annotations

import numpy as np

from ._validation import warn_user

#: The most training cells under either of the two conditions a group's observed response is
#: read from with a warning (5: a change predicted from it was worse than none in the trial
#: above; 10 was about as good as the model alone).
THIN_RESPONSE_CELLS = 5


def warn_thin_responses(
    names, n_source: np.ndarray, n_target: np.ndarray, weights: np.ndarray, contrast, memo
) -> None:
    """Warn where cells given take most of their response (their largest weight in
    ``weights``, cells x groups) from groups of ``names`` seen in :data:`THIN_RESPONSE_CELLS`
    training cells or fewer under the source (``n_source``) or the target (``n_target``)
    condition. ``memo``: the dict shared by one translate's sources (said once
    for them all, with translate's advice); None for nearest_response alone."""
    thin = np.minimum(n_source, n_target) <= THIN_RESPONSE_CELLS
    if not thin.any() or not len(weights):
        return
    taken = thin[weights.argmax(1)]
    if not taken.any() or (memo is not None and memo.get("thin_said")):
        return
    if memo is not None:
        memo["thin_said"] = True
    _, source, target = contrast[:3]
    groups = [
        f"{str(name)!r} ({int(n_source[i])} under {str(source)!r}, {int(n_target[i])} under "
        f"{str(target)!r})"
        for i, name in enumerate(names)
        if thin[i]
    ]
    listed = "; ".join(groups[:5]) + " ..." * (len(groups) > 5)
    advice = (
        "response_weight=0 predicts them from the model's translation alone"
        if memo is not None
        else "method='translate' with response_weight=0 predicts them from the model alone"
    )
    warn_user(
        f"{int(taken.sum())} of the {len(taken)} cells take most of their predicted change from "
        f"the observed response of groups seen in {THIN_RESPONSE_CELLS} training cells or fewer "
        f"under a condition: {listed}. A mean over so few cells is mostly noise, and so is the "
        "change predicted from it (from 2-5 such cells: worse than predicting no change, in a "
        f"synthetic trial). Read these cells' predictions with care: {advice}; more cells of "
        "those groups under both conditions make it reliable."
    )
