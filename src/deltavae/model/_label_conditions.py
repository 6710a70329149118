"""The conditions each label's training cells carried (``label_conditions_``), kept with a
labelled CGMDVAE, so that :meth:`~deltavae.model.CGMDVAE.sample` says when it draws a cell
type under conditions none of its labelled cells trained in (a type held out of a
stimulation, to predict its response): those cells are extrapolated."""

from __future__ import annotations

from collections import Counter

import numpy as np
from scvi import REGISTRY_KEYS

from .._checks import short_repr
from ._condition_counts import training_positions
from ._validation import warn_user


def record_label_conditions(model) -> None:
    """After a fit: the labelled training cells per ``(label, *condition values)`` (strings,
    in the condition keys' order), added to ``model.label_conditions_`` (saved with the
    model; presence is what is read). Nothing for a model without labels or conditions."""
    labels, keys = model.label_names, model.condition_keys
    if not labels or not keys:
        return
    cells = training_positions(model)
    codes = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
    codes = codes[cells].astype(int)
    labelled = codes < len(labels)  # the unlabelled mark is the last code
    frame = model.adata.obs.iloc[cells[labelled]][keys].astype(str)
    frame.insert(0, "\x00label", np.asarray(labels, dtype=object)[codes[labelled]])
    combos = Counter(frame.itertuples(index=False, name=None))
    before = Counter(getattr(model, "label_conditions_", None) or {})
    model.label_conditions_ = dict(before | combos)  # a fit of the same cells: not twice


def warn_unseen_label_conditions(model, cluster: int | None, cats) -> None:
    """Warn where ``sample`` drew cells of a label (``cluster``, its index) under
    combinations of conditions (``cats``, codes cells x keys) that none of that label's
    labelled training cells carried, naming them and those that did. Quiet for a drawn or
    novel cluster and for a model saved before the combinations were kept."""
    seen = getattr(model, "label_conditions_", None)
    if seen is None or cluster is None or cats is None:
        return
    name = model.cluster_names[cluster]
    if name not in model.label_names:
        return
    mappings = model._cat_state().mappings
    known = [[str(v) for v in mappings[key]] for key in model.condition_keys]
    trained = {combo[1:] for combo, n in seen.items() if combo[0] == name and n > 0}
    rows, counts = np.unique(np.asarray(cats.cpu()), axis=0, return_counts=True)
    unseen = []
    for row, n in zip(rows, counts, strict=True):
        values = tuple(known[j][c] for j, c in enumerate(row))
        if values not in trained:
            named = ", ".join(
                f"{k}={v!r}" for k, v in zip(model.condition_keys, values, strict=True)
            )
            unseen.append(f"{named} ({n} cells)")
    if len(known) == 1:  # one condition key: its values, not tuples of one
        trained = {values[0] for values in trained}
    if unseen:
        warn_user(
            f"sample drew cells of {name!r} under conditions that none of its labelled training "
            f"cells carried: {'; '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}. The "
            f"model never saw {name!r} there (a cell type held out of a condition), so these "
            f"cells are extrapolated; the labelled training cells of {name!r} carried: "
            f"{short_repr(sorted(trained), 10, 'combinations')}."
        )
