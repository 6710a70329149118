"""What the checks for a cell type without labelled cells read, saved once per trained model
(``unlabelled_types.py --save DIR``), for ``unlabelled_criteria.py`` to compare them offline.

Both checks live in the package, ``deltavae.model._unlabelled_types``: ``training_groups(model,
data_sign=False)`` is the first attempt, z alone (withdrawn: false alarms on 7 of 12 seeds of
the set whose labels each cover two natural groups, benchmarks/README.md, "Cell types without
labelled cells"), and ``training_groups(model)`` the check ``train`` runs, z with the data's
sign.
"""

from __future__ import annotations

import numpy as np

from deltavae.model._unlabelled_types import training_read


def training_record(model, truth: np.ndarray) -> dict:
    """The training cells' positions, z (each condition's mean removed), q(y | z), whether each
    was labelled, its true type (``truth``, one per cell of ``model.adata``), the counts' 50
    principal components, the cluster names, the number of labels and, with condition
    covariates, each cell's condition group: what
    :func:`deltavae.model._unlabelled_types.training_read` reads for the check."""
    read = training_read(model)
    if read is None:
        raise ValueError("training_record reads semi-supervised models only")
    record = {
        "cells": read["cells"],
        "z": read["z"].astype(np.float32),
        "probs": read["probs"].astype(np.float32),
        "labelled": read["labelled"],
        "truth": np.asarray(truth)[read["cells"]].astype(str),
        "pcs": read["pcs"].astype(np.float32),
        "names": np.asarray(model.cluster_names, dtype=str),
        "n_labels": len(model.label_names),
    }
    if read["conditions"] is not None:  # each cell's condition group
        record["conditions"] = read["conditions"]
    return record
