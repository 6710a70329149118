"""Why no label is seen under both conditions, and the route to predicted labels' responses.

Without ``balance_key`` a label's observed response is read from the cells given that label
(``label_groups``): with the labels of one condition only (control cells labelled,
stimulated ones not) no label is seen under both, whatever the data hold. The refusal of
``nearest_response`` and the warning of ``translate`` say so, and name the route that
exists: the predicted labels stored in an obs column of the training AnnData and passed as
``predict_perturbation``'s ``balance_key``.
"""

from __future__ import annotations

import numpy as np

from ._labels import NoResponseError


class UnlabelledResponseError(NoResponseError):
    """No label is seen under both conditions among the labelled training cells;
    ``cause`` says why, without advice (each caller gives its own)."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def labels_cause(model, train, conditions, counted, source, target) -> str:
    """Why no label is seen under both ``source`` and ``target``: the groups are the labels
    of the labelled training cells (``counted`` among ``train``'s cells, whose conditions are
    ``conditions``), and which condition has none."""
    key = model.registry_["setup_args"].get("labels_key")
    column = f" (adata.obs[{key!r}])" if key is not None else ""
    labels = train.obs[key].astype(str).to_numpy() if key is not None else None
    known = np.isin(labels, model.label_names) if labels is not None else counted
    bare = [str(c) for c in (source, target) if not (known & (conditions == c)).any()]
    if bare:
        who = " nor ".join(repr(c) for c in bare)
        what = f"no training cell under {who} carries a label"
    else:
        what = f"no label is given to cells under both {str(source)!r} and {str(target)!r}"
    return (
        f"the groups are the labels of the labelled training cells{column}, and {what}: a "
        "label's response is taken from the cells given that label, not from unlabelled cells "
        "predicted to carry it"
    )


def predicted_labels_route(target) -> str:
    """How to transfer the responses of predicted labels: the supported route."""
    return (
        'model.adata.obs["predicted_label"] = model.predict_labels()["label"], then '
        f"model.predict_perturbation(cells, {str(target)!r}, method='nearest_response', "
        "balance_key='predicted_label')"
    )
