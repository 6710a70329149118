"""Labels of cells under conditions where a label had no labelled training cells.

The cluster head q(y | z, c) reads each cell's conditions. Where the labelled training cells
of a combination of conditions lacked a label that others carried (a cell type held out of a
stimulation), the head learned under that combination that the label does not occur, and gives
the label's cells the nearest label it saw there. The cells of such a combination are labelled
instead by a vote over conditions: each label's probability is the mean of q(y | z, c') over
the combinations c' its labelled cells trained under (``label_conditions_``), renormalised.
A combination without any labelled training cell (only the control cells labelled, the
stimulated ones to be labelled) lacks every label: the head under it learned its clusters
unsupervised, with nothing tying them to the labels' names, and its cells are voted too (on
Kang's harmony PBMCs, control cells labelled, 40 epochs: 50% of the stimulated cells labelled
as their markers say, 87% by the vote). Cells of combinations where every label trained, and
of a combination holding a category a query added (a query's new donor, whose head columns
its query trained), are read under their own conditions, unchanged.
(benchmarks/README.md, "Labels of a type held out of one condition".)
"""

from __future__ import annotations

import numpy as np
import torch


def label_vote_table(model) -> dict[str, torch.Tensor] | None:
    """What the vote needs, from ``label_conditions_``: the combinations with labelled
    training cells (``codes``, combinations x condition keys), which clusters trained under
    each (``trained``, clusters x combinations; a ``novel_j`` cluster, and a label none of
    whose training cells was labelled, under every one), which combinations lack a label
    that trained elsewhere (``lacking``) and, per condition key, which categories a query
    added (``added``, a list of boolean tensors over each key's codes: a combination holding
    one is read as before; the others without labelled cells are voted). None where no
    combination of the model's categories lacks a label (every prediction is then
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
    added = _added_categories(model, mappings)
    known = np.prod([int((~a).sum()) for a in added])  # combinations of the model's own
    if not lacking.any() and len(combos) >= known:
        return None
    codes = [[code[j][v] for j, v in enumerate(c)] for c in combos]
    return {
        "codes": torch.as_tensor(codes, dtype=torch.long),
        "trained": torch.as_tensor(trained),
        "lacking": torch.as_tensor(lacking),
        "added": [torch.as_tensor(a) for a in added],
    }


def _added_categories(model, mappings) -> list[np.ndarray]:
    """Per condition key, whether each category (by code) is one a query added."""
    new = (getattr(model, "query_mapping_", None) or {}).get("new_categories") or {}
    return [
        np.isin(np.asarray(mappings[key]).astype(str), [str(v) for v in new.get(key, [])])
        for key in model.condition_keys
    ]


def voted_probs(module, table: dict, z: torch.Tensor, cats: torch.Tensor, probs: torch.Tensor):
    """``probs`` (q(y | z, c), cells x clusters) with the rows of cells whose own combination
    of conditions (``cats``, cells x keys) lacks a label, or has no labelled training cell and
    no category a query added, replaced by the vote over the combinations each cluster trained
    under, q(y | z, c') read at ``z`` (the posterior means). Every cell of the minibatch is
    read under every combination and the rows chosen on the device: picking the cells first
    (a boolean index, or asking whether any cell lacks a label) made the host wait for the
    device once a minibatch."""
    cats = cats.long()
    codes = table["codes"].to(cats.device)
    own = (cats.unsqueeze(1) == codes.unsqueeze(0)).all(-1)  # cells x combinations
    added = torch.stack(
        [a.to(cats.device)[cats[:, j]] for j, a in enumerate(table["added"])], 1
    ).any(1)
    unlabelled = ~own.any(1) & ~added  # a combination no labelled training cell carried
    hit = ((own & table["lacking"].to(cats.device)).any(1) | unlabelled).unsqueeze(1)
    n, n_combos = len(z), len(codes)
    logits, _ = module.cluster_posterior(z.repeat(n_combos, 1), codes.repeat_interleave(n, dim=0))
    read = torch.softmax(logits, -1).view(n_combos, n, -1)  # combinations x cells x clusters
    trained = table["trained"].to(read.device, read.dtype).T.unsqueeze(1)  # combos x 1 x K
    votes = (read * trained).sum(0) / trained.sum(0)
    return torch.where(hit.to(probs.device), votes / votes.sum(-1, keepdim=True), probs)
