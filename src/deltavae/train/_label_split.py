"""Labelled cells kept in training: a label whose few labelled cells all fell in the
validation (or test) split trained no cell of it (CGMDVAE, semi-supervised)."""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS


def _label_codes(adata_manager) -> np.ndarray | None:
    """Each cell's label code, the unlabelled code last (-1 here); ``None`` without a labels
    field that marks unlabelled cells (ZINBVAE's, or no labels)."""
    registries = adata_manager.registry["field_registries"]
    state = registries.get(REGISTRY_KEYS.LABELS_KEY, {}).get("state_registry", {})
    if "unlabeled_category" not in state or "categorical_mapping" not in state:
        return None
    codes = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
    codes = codes.astype(np.int64)
    codes[codes == len(state["categorical_mapping"]) - 1] = -1
    return codes


def keep_labels_in_training(adata_manager, train, val, test) -> tuple:
    """``(train, val, test)`` with one labelled cell of every label that has labelled cells
    but none in ``train`` moved into it, swapped with an unlabelled training cell (or one
    of the label with the most training cells, when every cell is labelled), so the split
    sizes stay. scvi-tools' ``SemiSupervisedDataSplitter`` (SCANVI) splits the labelled
    cells apart, rounding the training share up, so a label of one or two cells trains;
    scvi-tools' plain split, which this one follows otherwise, could validate a label's
    only labelled cell, leaving its cluster to learn no cell of it.

    Examples
    --------
    >>> class M:  # a manager whose cells 0-3 are labelled 0, 1, 1, unlabelled
    ...     registry = {"field_registries": {"labels": {"state_registry": {
    ...         "unlabeled_category": "U", "categorical_mapping": ["a", "b", "U"]}}}}
    ...     data_registry = {}  # no conditions
    ...     def get_from_registry(self, key):
    ...         return np.array([[0], [1], [1], [2]])
    >>> [p.tolist() for p in keep_labels_in_training(M(), np.array([1, 3]), np.array([0, 2]), [])]
    [[1, 0], [3, 2], []]
    """
    codes = _label_codes(adata_manager)
    if codes is None or len(train) == 0:
        return train, val, test
    train, parts = (
        np.array(train, dtype=np.int64),
        [np.array(p, dtype=np.int64) for p in (val, test)],
    )
    conditions = _condition_codes(adata_manager)
    for label in np.unique(codes[codes >= 0]):
        if (codes[train] == label).any():
            continue
        trained = codes[train]
        donors = np.flatnonzero(trained == -1)
        if not len(donors):  # every cell labelled: the label with the most training cells
            counts = np.bincount(trained[trained >= 0])
            if counts.max(initial=0) < 2:
                continue
            donors = np.flatnonzero(trained == counts.argmax())
        part, at = next(
            (p, np.flatnonzero(codes[p] == label)[0]) for p in parts if (codes[p] == label).any()
        )
        if conditions is not None:  # a donor of the cell's conditions keeps theirs in training
            same = (conditions[train[donors]] == conditions[part[at]]).all(axis=1)
            donors = donors[same] if same.any() else donors
        donor = donors[-1]  # train is shuffled already (scvi-tools' seeded permutation)
        part[at], train[donor] = train[donor], part[at]
    return (train, *parts)


def _condition_codes(adata_manager) -> np.ndarray | None:
    """Each cell's condition codes (cells x keys), ``None`` without conditions."""
    if REGISTRY_KEYS.CAT_COVS_KEY not in adata_manager.data_registry:
        return None
    values = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY))
    return values.reshape(len(values), -1) if values.size else None
