"""The cells CGMDVAE trained on per condition value, kept with the model (``condition_counts_``).

A model saved and loaded onto other cells (its controls alone, say, to translate them) reads
its conditions from these counts, not from the AnnData it holds now: translating to a
condition, and the conditions :meth:`~deltavae.model.CGMDVAE.sample` draws, are those of
the training cells.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch

from ._validation import warn_user


def cells_per_value(column: pd.Series) -> dict[str, int]:
    """Cells per value of an obs column, by the value as a string.

    Examples
    --------
    >>> cells_per_value(pd.Series(["a", "b", "a"], dtype="category"))
    {'a': 2, 'b': 1}
    """
    return {str(k): int(n) for k, n in column.astype(str).value_counts().items()}


#: The condition of the model's cells that did not train (its test split): no condition's.
NOT_TRAINED = "\x00not trained"


def trained_conditions(model, key: str) -> np.ndarray:
    """The condition ``key`` of every cell of the model's AnnData, as strings, with
    :data:`NOT_TRAINED` for the cells of its test split (external_indexing), which never
    trained: no mean or observed response reads them."""
    conditions = model.adata.obs[key].astype(str).to_numpy()
    test = getattr(model, "test_indices", None)
    if test is not None and len(test):
        conditions = conditions.copy()
        conditions[np.asarray(test)] = NOT_TRAINED
    return conditions


def record_condition_counts(model) -> None:
    """Add the cells of ``model``'s AnnData (not its test split, which never trained) per
    condition value to ``model.condition_counts_`` and per combination of the condition keys'
    values (a tuple of strings, in the keys' order) to ``model.condition_combinations_``
    (both saved with the model): ``train`` calls it once the cells have trained. The same
    AnnData trained again (``train`` called twice) is counted once: what was recorded before
    its cells were added is kept with the model (not saved) and the cells added to that."""
    uuid = model.adata_manager.adata_uuid
    last = getattr(model, "_counted_before", None)
    if last is not None and last[0] == uuid:
        _, model.condition_counts_, model.condition_combinations_ = last
    model._counted_before = (
        uuid,
        getattr(model, "condition_counts_", None),
        getattr(model, "condition_combinations_", None),
    )
    before = getattr(model, "condition_counts_", None) or {}
    cells, test = model.adata.obs, getattr(model, "test_indices", None)
    if test is not None and len(test):  # a test split (external_indexing) never trained
        cells = cells.iloc[np.setdiff1d(np.arange(len(cells)), test)]
    model.condition_counts_ = {
        key: dict(Counter(before.get(key, {})) + Counter(cells_per_value(cells[key])))
        for key in model.condition_keys
    }
    combos = getattr(model, "condition_combinations_", None)
    # A model that kept counts but not combinations (saved before them) keeps drawing each
    # key on its own: combinations of these cells alone would leave out the earlier ones.
    if model.condition_keys and (combos is not None or not before):
        obs = cells[model.condition_keys].astype(str)
        combos = Counter(combos or {})
        model.condition_combinations_ = dict(
            combos + Counter(obs.itertuples(index=False, name=None))
        )


def draw_conditions(model, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``codes`` (cells x condition keys) with the columns marked -2, the keys left to draw,
    drawn from the training cells whose values agree with those given in the other columns
    (their combinations' frequencies: no cell gets a combination never trained, such as a
    stimulated cell of a donor seen only in control); a model saved before the combinations
    were kept draws each key from its own frequencies."""
    keys, mappings = model.condition_keys, model._cat_state().mappings
    known = [[str(v) for v in mappings[key]] for key in keys]
    drawn = np.flatnonzero(codes[0] == -2)
    combos = getattr(model, "condition_combinations_", None)
    if combos is None:
        for j in drawn:
            freq = condition_counts(model, keys[j])
            p = np.array([freq.get(v, 0) for v in known[j]], dtype=float)
            codes[:, j] = rng.choice(len(known[j]), size=len(codes), p=p / p.sum())
        return codes
    given = {j: known[j][c] for j, c in enumerate(codes[0]) if c >= 0}
    rows = [
        ([known[j].index(v[j]) for j in drawn], n)
        for v, n in combos.items()
        if n > 0
        and all(v[j] == value for j, value in given.items())
        and all(v[j] in known[j] for j in drawn)
    ]
    if not rows:
        named = {keys[j]: value for j, value in given.items()}
        raise ValueError(f"No training cell carries the conditions {named} together.")
    rows.sort()  # in the categories' order, as the draws of one key were
    p = np.array([n for _, n in rows], dtype=float)
    pick = rng.choice(len(rows), size=len(codes), p=p / p.sum())
    codes[:, drawn] = np.array([row for row, _ in rows], dtype=codes.dtype)[pick]
    return codes


def condition_counts(model, key: str) -> dict[str, int]:
    """Training cells per value of condition ``key``: as ``train`` recorded them, else (a
    model saved before they were kept) those of the model's AnnData."""
    recorded = (getattr(model, "condition_counts_", None) or {}).get(key)
    return recorded if recorded is not None else cells_per_value(model.adata.obs[key])


def warn_untrained_combinations(model, codes, call: str) -> None:
    """Warn when ``call`` moved cells to combinations of the condition keys' values that no
    training cell carried (``codes``: cells x condition keys, an array or a list of tensors
    of minibatches, on any device), naming each with its cells: the
    model learned nothing of them (a cell type or donor under a condition it was never seen
    in), so its prediction there is an extrapolation. Quiet for one condition key (a value
    never seen is refused) and for a model saved before the combinations were kept."""
    combos = getattr(model, "condition_combinations_", None)  # CGMDVAE's, once trained
    if combos is None or len(model.condition_keys) < 2 or not len(codes):
        return
    if isinstance(codes, list):
        codes = torch.cat(codes).cpu().numpy()
    keys = model.condition_keys
    trained = {tuple(map(str, v)) for v, n in combos.items() if n > 0}
    known = [[str(v) for v in model._cat_state().mappings[key]] for key in keys]
    rows, cells = np.unique(np.asarray(codes), axis=0, return_counts=True)
    untrained = []
    for row, n in zip(rows, cells, strict=True):
        values = tuple(known[j][c] for j, c in enumerate(row))
        if values not in trained:
            named = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values, strict=True))
            untrained.append(f"{named} ({n} cells)")
    if untrained:
        warn_user(
            f"{call} put cells under combinations of conditions that no training cell "
            f"carried: {'; '.join(untrained[:5])}{' ...' if len(untrained) > 5 else ''}. "
            "The model never trained on these combinations (such as a cell type under a "
            "condition it was held out of), so what it predicts there is extrapolated; the "
            f"combinations that trained: {sorted(trained)[:10]}."
        )


def warn_if_cells_not_trained(model, key: str, conditions: np.ndarray, values) -> None:
    """Means and responses are read from the model's AnnData: warn where it holds more cells
    under a condition than the model trained on (``condition_counts_``), e.g. a held-out
    model loaded onto the full data, whose held-out cells would enter the prediction."""
    trained = (getattr(model, "condition_counts_", None) or {}).get(key)
    if trained is None or model.is_query_model:  # a query model reads its query, by design
        return  # (None: ZINBVAE, a column the model does not take, an older model)
    more = {v: int((conditions == v).sum()) for v in dict.fromkeys(values)}
    more = {v: n for v, n in more.items() if n > trained.get(v, 0)}
    if more:
        listed = ", ".join(
            f"{key}={v!r}: {n} cells, {trained.get(v, 0)} trained" for v, n in more.items()
        )
        warn_user(
            f"The model's AnnData holds cells it was not trained on ({listed}), and this "
            "prediction reads means and observed responses from them: cells held out of "
            "training (a held-out type's stimulated cells, loaded with the full data) enter "
            "the prediction. Load the model onto the cells it trained on to keep them out."
        )
