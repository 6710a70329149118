"""A query model's translation into or out of a condition category that only its query brought
(:meth:`~deltavae.model.CGMDVAE.load_query_data` added it): said, since the change between
such a category and the reference's is learned by the new category's columns alone, and the
encoder's column takes most of it up into z, where translate does not move it."""

from __future__ import annotations

import numpy as np

from ._validation import warn_user

#: What a trial measured (benchmarks/README.md, "Translating into a condition that only a
#: query brought"; benchmarks/query_translation.py).
_MEASURED = (
    "Kang IFN-beta, a reference of control cells and the stimulated ones mapped as a query: "
    "translate's change of a held-out type's mean on its top-100 response genes matched the "
    "true change with R² 0.00-0.05, against 0.34-0.56 for one model trained on both conditions"
)


def warn_query_condition_move(model, own, moved, call: str = "translate") -> None:
    """Warn where ``call`` moved cells of a query model between a condition category its
    query added and another (``own``, ``moved``: the cells' codes, cells x condition keys,
    before and after), naming the pairs. Quiet for a model that is no query model, for a
    query that added no category, and for cells whose moved values are all the reference's."""
    mapping = getattr(model, "query_mapping_", None)
    if not mapping:
        return
    new = mapping.get("new_categories") or {}
    own, moved = np.asarray(own), np.asarray(moved)
    mappings = model._cat_state().mappings
    pairs = []
    for j, key in enumerate(model.condition_keys):
        learned = {str(v) for v in new.get(key, [])}
        if not learned:
            continue
        values = np.asarray([str(v) for v in mappings[key]], dtype=object)
        source, target = values[own[:, j]], values[moved[:, j]]
        for s, t in sorted(set(zip(source, target, strict=True))):
            if s != t and (s in learned or t in learned):
                pairs.append(f"{key}: {s!r} -> {t!r}")
    if not pairs:
        return
    warn_user(
        f"{call} moved cells between condition categories of which the query model learned "
        f"one from its query alone (load_query_data): {'; '.join(pairs[:5])}. Only that "
        "category's columns of the encoder, decoder and prior learned, and the encoder takes "
        "most of the change up into z, which translate does not move: the change predicted "
        f"is a small part of the real one ({_MEASURED}). To predict a perturbation, set up "
        "the cells of both conditions together and train one model on them (a cell type held "
        "out of one condition is predicted with predict_perturbation)."
    )
