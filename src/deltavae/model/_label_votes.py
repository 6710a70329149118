"""Labels of cells under conditions where a label had no labelled training cells.

The cluster head q(y | z, c) reads each cell's conditions. Where the labelled training cells
of a combination of conditions lacked a label that others carried (a cell type held out of a
stimulation), the head learned under that combination that the label does not occur, and gives
the label's cells the nearest label it saw there. The cells of such a combination are labelled
instead by a vote over conditions: each label's probability is the mean of q(y | z, c') over
the combinations c' its labelled cells trained under (``label_conditions_``), renormalised.
Cells of combinations where every label trained, and combinations without labelled cells (a
query's new donor), are read under their own conditions, unchanged.
(benchmarks/README.md, "Labels of a type held out of one condition".)
"""

from __future__ import annotations

import numpy as np
import torch


def label_vote_table(model) -> dict[str, torch.Tensor] | None:
    """What the vote needs, from ``label_conditions_``: the combinations with labelled
    training cells (``codes``, combinations x condition keys), which clusters trained under
    each (``trained``, clusters x combinations; a ``novel_j`` cluster, and a label none of
    whose training cells was labelled, under every one) and which combinations lack a label
    that trained elsewhere (``lacking``). None where none lacks one (every prediction is then
    q(y | z, c) itself), for a model without labels or conditions, and for one saved before
    the combinations were kept."""
    seen = getattr(model, "label_conditions_", None)
    keys, labels = model.condition_keys, model.label_names
    if not seen or not keys or not labels:
        return None
    mappings = model._cat_state().mappings
    code = [{str(v): i for i, v in enumerate(mappings[key])} for key in keys]
    pairs = [(combo[0], combo[1:]) for combo, n in seen.items() if n > 0]
    pairs = [(y, c) for y, c in pairs if all(v in code[j] for j, v in enumerate(c))]
    combos = sorted({c for _, c in pairs})
    if not combos:
        return None
    column = {c: j for j, c in enumerate(combos)}
    names = model.cluster_names
    trained = np.zeros((len(names), len(combos)), dtype=bool)
    trained[len(labels) :] = True  # novel clusters: no label to lack
    row = {name: k for k, name in enumerate(labels)}
    for y, c in pairs:
        if y in row:
            trained[row[y], column[c]] = True
    trained[~trained.any(1)] = True  # a label none of whose cells was labelled: as novel
    lacking = ~trained.all(0)
    if not lacking.any():
        return None
    codes = [[code[j][v] for j, v in enumerate(c)] for c in combos]
    return {
        "codes": torch.as_tensor(codes, dtype=torch.long),
        "trained": torch.as_tensor(trained),
        "lacking": torch.as_tensor(lacking),
    }


def voted_probs(module, table: dict, z: torch.Tensor, cats: torch.Tensor, probs: torch.Tensor):
    """``probs`` (q(y | z, c), cells x clusters) with the rows of cells whose own combination
    of conditions (``cats``, cells x keys) lacks a label replaced by the vote over the
    combinations each cluster trained under, q(y | z, c') read at ``z`` (the posterior
    means). Every cell of the minibatch is read under every combination and the rows chosen
    on the device: picking the cells first (a boolean index, or asking whether any cell
    lacks a label) made the host wait for the device once a minibatch."""
    codes = table["codes"].to(cats.device)
    own = (cats.long().unsqueeze(1) == codes.unsqueeze(0)).all(-1)  # cells x combinations
    hit = (own & table["lacking"].to(cats.device)).any(1, keepdim=True)
    n, n_combos = len(z), len(codes)
    logits, _ = module.cluster_posterior(z.repeat(n_combos, 1), codes.repeat_interleave(n, dim=0))
    read = torch.softmax(logits, -1).view(n_combos, n, -1)  # combinations x cells x clusters
    trained = table["trained"].to(read.device, read.dtype).T.unsqueeze(1)  # combos x 1 x K
    votes = (read * trained).sum(0) / trained.sum(0)
    return torch.where(hit.to(probs.device), votes / votes.sum(-1, keepdim=True), probs)
