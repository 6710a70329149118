"""A query model's translation into or out of a condition category that only its query brought
(:meth:`~deltavae.model.CGMDVAE.load_query_data` added it): said, since the change between
such a category and the reference's is learned by the new category's columns alone, and the
encoder's column takes most of it up into z, where translate does not move it. Where the
query holds cells of one label under both categories of every move, translate's default is
its observed responses alone (``response_weight=1``), which predicted the change far better,
and a prediction made of them alone is not the model's and is not warned of."""

from __future__ import annotations

import numpy as np

from ._condition_counts import trained_conditions
from ._validation import warn_user

#: What a trial measured (benchmarks/README.md, "Translating into a condition that only a
#: query brought"; benchmarks/query_translation.py).
_MEASURED = (
    "Kang IFN-beta, a reference of control cells and the stimulated ones mapped as a query: "
    "translate's change of a held-out type's mean on its top-100 response genes matched the "
    "true change with R² 0.00-0.05, against 0.34-0.56 for one model trained on both conditions"
)
#: The same where the query held both conditions (a control reference of one donor, another
#: donor's control and stimulated cells mapped; benchmarks/query_translation.py --donors).
_MEASURED_BOTH = (
    "Kang IFN-beta, a control reference of one donor and the other donor's control and "
    "stimulated cells mapped as a query: a held-out type's change on its top-100 response "
    "genes matched the true change with R² 0.00-0.16 from the model alone, 0.47-0.78 "
    "averaged half and half with the query's observed responses, 0.65-0.82 from those alone"
)
#: The same query without labels (seeds 0-1): the responses read per predicted cluster.
_MEASURED_CLUSTERS = (
    "the same query without labels: R² of the change 0.32-0.79 from the responses alone, "
    "0.21-0.77 averaged half and half; R² over all genes 0.55-0.84 alone, 0.62-0.85 averaged"
)


def _labels_under(model, conditions: np.ndarray) -> dict[str, set[str]] | None:
    """The labels (the model's, not the unlabelled mark) its training cells carry under each
    condition value; None for a model without labels or an AnnData without their column."""
    key = model.registry_["setup_args"].get("labels_key")
    if not key or not model.label_names or key not in model.adata.obs:
        return None
    labels = model.adata.obs[key].astype(str).to_numpy()
    known = np.isin(labels, model.label_names)
    return {str(c): set(labels[known & (conditions == c)]) for c in np.unique(conditions)}


def query_moves(model, own, moved) -> tuple[list[str], bool, bool, bool]:
    """The moves of a query model's cells (``own``, ``moved``: their codes, cells x condition
    keys, before and after) into or out of a category its query added, as ``"key: 'a' ->
    'b'"``; whether its training cells (the query's) hold both values of every such move
    (with one condition key: where observed responses can be read); whether a label is
    carried by training cells under both values of every move (the responses are then read
    per label, not per predicted cluster); and whether every cell that moved made such a
    move. Nothing for a model that is no query model or a query that added no category."""
    mapping = getattr(model, "query_mapping_", None)
    new = (mapping or {}).get("new_categories") or {}
    own, moved = np.asarray(own), np.asarray(moved)
    if not any(new.values()):
        return [], False, False, False
    mappings = model._cat_state().mappings
    pairs, observed, labelled, only = [], len(model.condition_keys) == 1, True, True
    for j, key in enumerate(model.condition_keys):
        learned = {str(v) for v in new.get(key, [])}
        values = np.asarray([str(v) for v in mappings[key]], dtype=object)
        source, target = values[own[:, j]], values[moved[:, j]]
        held = trained_conditions(model, key) if learned else np.array([])
        under = _labels_under(model, held) if learned else None
        for s, t in sorted(set(zip(source, target, strict=True))):
            if s != t and (s in learned or t in learned):
                pairs.append(f"{key}: {s!r} -> {t!r}")
                observed = observed and s in held and t in held
                labelled = labelled and bool(under and under.get(s, set()) & under.get(t, set()))
            elif s != t:
                only = False
    observed = observed and bool(pairs)
    return pairs, observed, observed and labelled, only and bool(pairs)


def query_response_weight(moves: tuple, weight: float) -> float:
    """``translate``'s default ``weight`` on the observed responses, raised to 1 where every
    cell that moved went into or out of a category the query added and the query holds
    cells of one label under both values of each move (``moves``: :func:`query_moves`'):
    there the model's part predicted little of the change and averaging it in weakened the
    responses (:data:`_MEASURED_BOTH`). Read per predicted cluster (a query without labels),
    the responses alone were no better than averaged (:data:`_MEASURED_CLUSTERS`): the
    default is kept."""
    _, _, labelled, only = moves
    return 1.0 if weight > 0 and labelled and only else weight


def warn_query_condition_move(
    moves: tuple, call: str = "translate", response_weight: float = 0.0
) -> None:
    """Warn where ``call`` moved cells of a query model between a condition category its
    query added and another (``moves``: :func:`query_moves`' of the cells' codes before and
    after), naming the pairs. Quiet for a model that is no query model, for a query that
    added no category, for cells whose moved values are all the reference's, and for a
    prediction made of the observed responses alone (``response_weight`` 1: the model's
    translation has no part in it). Where the model's training cells (the query's) hold
    cells of one label under both values of every pair, the warning advises
    ``response_weight=1``; under both values without such a label, labelling the query."""
    if response_weight >= 1:
        return
    pairs, observed, labelled, _ = moves
    if not pairs:
        return
    said = (
        f"{call} moved cells between condition categories of which the query model learned "
        f"one from its query alone (load_query_data): {'; '.join(pairs[:5])}. Only that "
        "category's columns of the encoder, decoder and prior learned, and the encoder takes "
        "most of the change up into z, which translate does not move: the change predicted "
        "is a small part of the real one"
    )
    if labelled:  # the query's own responses, per label, are there to be read
        warn_user(
            f"{said}, and averaging it with the query's observed responses weakens theirs "
            f"({_MEASURED_BOTH}). The query holds cells of one label under both: predict "
            "from its observed responses alone, translate(..., response_weight=1) (or "
            "predict_perturbation(method='nearest_response')), or train one model on the "
            "cells of both conditions."
        )
    elif observed:  # read per predicted cluster: no better alone
        warn_user(
            f"{said} ({_MEASURED}). The query holds cells under both but no label under both, "
            "so its observed responses are read per predicted cluster, which predicted no "
            f"better alone than averaged ({_MEASURED_CLUSTERS}). Give the query's cells their "
            "labels (the reference's labels column) and translate with response_weight=1, or "
            "train one model on the cells of both conditions."
        )
    else:
        warn_user(
            f"{said} ({_MEASURED}). To predict a perturbation, set up the cells of both "
            "conditions together and train one model on them (a cell type held out of one "
            "condition is predicted with predict_perturbation), or map a query that holds "
            "labelled cells of both conditions and translate with response_weight=1 (its "
            "observed responses)."
        )
