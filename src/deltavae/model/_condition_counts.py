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

from .._checks import short_repr
from ._fit_cells import subset_since_fit
from ._validation import warn_user


def cells_per_value(column: pd.Series) -> dict[str, int]:
    """Cells per value of an obs column, by the value as a string.

    Examples
    --------
    >>> cells_per_value(pd.Series(["a", "b", "a"], dtype="category"))
    {'a': 2, 'b': 1}
    """
    return {str(k): int(n) for k, n in column.astype(str).value_counts().items()}


#: The condition of the model's cells no mean or response reads (its test split, cells without
#: a value): no condition's.
NOT_TRAINED = "\x00not trained"


def trained_conditions(model, key: str) -> np.ndarray:
    """The condition ``key`` of every cell of the model's AnnData, as strings, with
    :data:`NOT_TRAINED` for the cells of its test split (external_indexing), held out on
    purpose, and for cells without a value (NaN, None: in a column the model does not take,
    such as a ZINBVAE's ``condition_key``, which setup never checked): no mean or observed
    response reads them, and they are no condition ``"nan"`` to predict or to name.
    Validation cells are read (their data are the user's training data; only the gradient
    skipped them), but a value of a column the model takes that no training cell carried is
    refused where it is asked for (:func:`untrained_condition`)."""
    column = model.adata.obs[key]
    conditions = column.astype(str).to_numpy()
    if column.isna().any():
        conditions = conditions.copy()  # may be the column's own array
        conditions[column.isna().to_numpy()] = NOT_TRAINED
    test = getattr(model, "test_indices", None)
    # After an in-place subset its positions name other cells (or none): warned by the caller.
    if test is not None and len(test) and subset_since_fit(model) is None:
        conditions = conditions.copy()
        conditions[np.asarray(test)] = NOT_TRAINED
    return conditions


def training_positions(model) -> np.ndarray:
    """Positions in the model's AnnData of the cells its last fit trained on
    (``train_indices``); where the split is not known (a model loaded onto other cells, or
    saved before it was kept), every cell but those of its test split."""
    train = getattr(model, "train_indices", None)
    if train is not None:
        return np.sort(np.asarray(train, dtype=int))
    return not_test_positions(model)


def not_test_positions(model) -> np.ndarray:
    """Positions of the model's cells outside its test split (training and validation)."""
    cells, test = np.arange(model.adata.n_obs), getattr(model, "test_indices", None)
    return cells if test is None or not len(test) else np.setdiff1d(cells, np.asarray(test))


_COUNT_FIELDS = (
    "condition_counts_",
    "condition_combinations_",
    "condition_counts_with_validation_",
)


def _counts_of(model, rows: np.ndarray) -> tuple[dict, dict | None]:
    """Cells per condition value and per combination of values (in the condition keys'
    order) of the model's cells at positions ``rows``."""
    cells = model.adata.obs.iloc[rows]
    counts = {key: cells_per_value(cells[key]) for key in model.condition_keys}
    values = cells[model.condition_keys].astype(str)
    return counts, dict(Counter(values.itertuples(index=False, name=None)))


def record_condition_counts(model) -> None:
    """Add the training cells of ``model``'s AnnData (``train_indices``: not its validation
    or test split, which give no gradient) per condition value to ``model.condition_counts_``,
    per combination of the condition keys' values (a tuple of strings, in the keys' order) to
    ``model.condition_combinations_``, and its training and validation cells (all but the
    test split, those that means and responses read) per value to
    ``model.condition_counts_with_validation_`` (all saved with the model): ``train`` calls it
    once the cells have trained. The same AnnData trained again (``train`` called twice, or
    after ``load`` onto the cells it was saved from) is counted once, with the last fit's
    split (the frequencies ``sample`` draws from): what was recorded before its cells were
    added is kept with the model (not saved; after ``load``, the counts less the saved
    split's cells) and the cells added to that. Which values trained in any fit is
    ``trained_categories_``: a value whose cells all fell in the last fit's validation split
    after training in an earlier one is still accepted as a target."""
    uuid = model.adata_manager.adata_uuid
    last = getattr(model, "_counted_before", None)
    if last is not None and last[0] == uuid:
        for field, value in zip(_COUNT_FIELDS, last[1:], strict=True):
            setattr(model, field, value)
    model._counted_before = (uuid, *(getattr(model, f, None) for f in _COUNT_FIELDS))
    before = getattr(model, "condition_counts_", None) or {}
    # Counts of a model saved before validation cells were told apart: counted with them.
    seen_before = getattr(model, "condition_counts_with_validation_", None) or before
    from ._fit_records import counts_per_key, keep, summed

    counts, combinations = _counts_of(model, training_positions(model))
    held = _counts_of(model, not_test_positions(model))[0]
    # Summed over every AnnData's last fit (``fit_records_``); ``before``: what a model that
    # kept no records per AnnData (saved before them) had counted, kept beside them.
    model.condition_counts_ = counts_per_key(keep(model, "condition_counts_", counts, before))
    model.condition_counts_with_validation_ = counts_per_key(
        keep(model, "condition_counts_with_validation_", held, seen_before)
    )
    combos = getattr(model, "condition_combinations_", None)
    # A model that kept counts but not combinations (saved before them) keeps drawing each
    # key on its own: combinations of these cells alone would leave out the earlier ones.
    if model.condition_keys and (combos is not None or not before):
        records = keep(model, "condition_combinations_", combinations, combos)
        model.condition_combinations_ = summed(records)


def cells_counted(model) -> int:
    """Cells the model's recorded counts hold, training and validation ones
    (``condition_counts_with_validation_``, over every AnnData it trained on): what its
    recorded library sizes are of. 0 where it keeps none."""
    counts = getattr(model, "condition_counts_with_validation_", None) or {}
    return int(sum(next(iter(counts.values()), {}).values()))


def cells_read(model) -> int:
    """Cells of the model's AnnData that its last fit trained or validated on."""
    return len(not_test_positions(model))


def pooled(earlier, n_earlier: int, stats, n: int) -> tuple[float, float]:
    """Mean and sd of two groups of ``n_earlier`` and ``n`` values, from their own
    (``earlier`` None or ``n_earlier`` 0: ``stats``).

    Examples
    --------
    >>> pooled((0.0, 1.0), 1, (2.0, 1.0), 1)
    (1.0, 1.4142135623730951)
    """
    if earlier is None or n_earlier <= 0:
        return stats
    (m1, s1), (m2, s2) = earlier, stats
    mean = (n_earlier * m1 + n * m2) / (n_earlier + n)
    square = (n_earlier * (s1**2 + m1**2) + n * (s2**2 + m2**2)) / (n_earlier + n)
    return float(mean), float(np.sqrt(max(square - mean**2, 0.0)))


def _unpooled(stats, n: int, part, n_part: int):
    """The mean and sd of the ``n - n_part`` values that ``stats`` (of ``n``) held besides
    ``part`` (of ``n_part``): :func:`pooled` undone; (None, 0) where none are left."""
    rest = n - n_part
    if stats is None or part is None or rest <= 0:
        return None, 0
    (m, s), (m2, s2) = stats, part
    mean = (n * m - n_part * m2) / rest
    square = (n * (s**2 + m**2) - n_part * (s2**2 + m2**2)) / rest
    return (float(mean), float(np.sqrt(max(square - mean**2, 0.0)))), rest


def remember_loaded_split(model) -> None:
    """A model loaded onto the cells it was saved from keeps their split
    (``train_indices``): what its counts held before those cells were added (the counts less
    the split's cells) is kept, so that training it on counts them once
    (:func:`record_condition_counts`), not twice. Not for counts saved before validation
    cells were told apart (no ``condition_counts_with_validation_``)."""
    fields = [getattr(model, field, None) for field in _COUNT_FIELDS]
    if getattr(model, "train_indices", None) is None or fields[0] is None or fields[2] is None:
        return
    counts, combinations = _counts_of(model, training_positions(model))
    held = _counts_of(model, not_test_positions(model))[0]

    def less(recorded: dict, cells: dict) -> dict:
        return {k: dict(Counter(v) - Counter(cells.get(k, {}))) for k, v in recorded.items()}

    before = (
        less(fields[0], counts),
        None if fields[1] is None else dict(Counter(fields[1]) - Counter(combinations)),
        less(fields[2], held),
    )
    model._counted_before = (model.adata_manager.adata_uuid, *before)
    if getattr(model, "library_log_stats_", None) is not None:  # CGMDVAE's, of count data
        own = model._library_log_stats(recorded=False)
        total = cells_counted(model)
        model._library_before = _unpooled(model.library_log_stats_, total, own, cells_read(model))


def upgrade_saved_counts(model) -> None:
    """A model saved before the counts were of its training cells alone (no
    ``condition_counts_with_validation_``) counted its validation cells as trained: those
    counts become ``condition_counts_with_validation_``, and the training counts keep only
    the values that held training cells (``trained_categories_``, where the model kept them),
    so that a value only validation cells held is not drawn by ``sample`` nor taken as a
    target. The other values' counts stay those of training and validation cells together."""
    counts = getattr(model, "condition_counts_", None)
    if counts is None or getattr(model, "condition_counts_with_validation_", None) is not None:
        return
    model.condition_counts_with_validation_ = counts
    seen = getattr(model, "trained_categories_", None) or {}
    trained = {key: set(seen[key]) for key in counts if key in seen}
    model.condition_counts_ = {
        key: {v: n for v, n in values.items() if key not in trained or v in trained[key]}
        for key, values in counts.items()
    }
    combos = getattr(model, "condition_combinations_", None)
    if combos is not None:
        keys = model.condition_keys
        model.condition_combinations_ = {
            combo: n
            for combo, n in combos.items()
            if all(k not in trained or v in trained[k] for k, v in zip(keys, combo, strict=True))
        }


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
        trained = sorted({tuple(v[j] for j in given) for v, n in combos.items() if n > 0})
        raise ValueError(
            f"No training cell carries the conditions {named} together; the values of "
            f"{list(named)} that trained together: {short_repr(trained, 10, 'combinations')}."
        )
    rows.sort()  # in the categories' order, as the draws of one key were
    p = np.array([n for _, n in rows], dtype=float)
    pick = rng.choice(len(rows), size=len(codes), p=p / p.sum())
    codes[:, drawn] = np.array([row for row, _ in rows], dtype=codes.dtype)[pick]
    return codes


def condition_counts(model, key: str) -> dict[str, int]:
    """Training cells per value of condition ``key``: as ``train`` recorded them, else (a
    model saved before they were kept) those of the model's AnnData (its training split's,
    where the model knows it)."""
    recorded = (getattr(model, "condition_counts_", None) or {}).get(key)
    if recorded is not None:
        return recorded
    return cells_per_value(model.adata.obs[key].iloc[training_positions(model)])


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


def warn_already_target(model, target_condition) -> None:
    """``translate`` given cells that are all under the target already: it has nothing to
    translate and returns the cells' own data (``residual``) or their reconstruction, which
    read as a prediction of a change."""
    warn_user(
        f"Every cell given to translate is already under the target {short_repr(target_condition)}"
        ": nothing is translated, and what comes back is the cells' own data (residual=True) "
        "or the model's reconstruction of them. Pass the cells of another condition, e.g. "
        "adata[adata.obs[key] != target]."
    )


def warn_source_is_target(contrast, method: str) -> None:
    """``predict_perturbation``'s cells (``contrast``, its :class:`~deltavae.model._perturbation.
    Contrast`) given under the target itself: no change to apply, a prediction equal to the
    model's reconstruction (``latent_shift``) or to the cells' own data (``nearest_response``),
    returned with nothing said, as though predicted."""
    key, target = contrast.condition_key, contrast.target
    others = sorted(set(contrast.train_conditions) - {NOT_TRAINED, target})
    returned = (
        "the model's reconstruction of them (z shifted by 0)"
        if method == "latent_shift"
        else "their own data (every response is 0)"
    )
    warn_user(
        f"adata's cells are already under {key}={target!r}, the target: {method} has no change "
        f"to apply and returns {returned}. Pass the cells of another condition "
        f"(the model's others: {others})."
    )


def warn_if_cells_not_trained(model, key: str, conditions: np.ndarray, values) -> None:
    """Means and responses are read from the model's AnnData: warn where it holds more cells
    under a condition than the model trained and validated on
    (``condition_counts_with_validation_``, else the counts of a model saved before it), e.g.
    a held-out model loaded onto the full data, whose held-out cells would enter the
    prediction."""
    counts = getattr(model, "condition_counts_with_validation_", None)
    trained = (counts or getattr(model, "condition_counts_", None) or {}).get(key)
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


def untrained_condition(model, key: str, value, seen=None) -> str:
    """The refusal of condition ``key``'s ``value``, a category of the model's training
    column that no training cell carried: its cells, if any, were validation (or test)
    cells, which give no gradient, so its decoder column kept the weights it was built
    with. ``seen``: the values that trained (CGMDVAE's ``_seen_conditions`` if not given)."""
    held = (getattr(model, "condition_counts_with_validation_", None) or {}).get(key)
    validation = getattr(model, "validation_indices", None)
    if held is None and validation is not None and key in model.adata.obs:  # ZINBVAE's
        held = cells_per_value(model.adata.obs[key].iloc[np.asarray(validation, dtype=int)])
    n = (held or {}).get(str(value), 0)
    seen = model._seen_conditions(key) if seen is None else seen
    if not n and _no_cell_holds(model, key, value):  # train_size=1.0 would not help
        return (
            f"Condition {key}={short_repr(value)} was never seen in training: no cell of the "
            f"model's AnnData holds it (an unused category of adata.obs[{key!r}], as a "
            "subset keeps its parent's categories), so the model learned nothing of it. "
            f"Conditions seen: {sorted(seen)}. A model learns a condition from cells of it: "
            "set up and train a model on data that hold some."
        )
    why = (
        f"its {n} cell{'s' * (n != 1)} all fell in the validation split, which gives no gradient"
        if n
        else f"a category of adata.obs[{key!r}] without training cells (validation and test "
        "cells give no gradient)"
    )
    return (
        f"Condition {key}={short_repr(value)} was never seen in training: {why}, so the model "
        f"learned nothing of it. Conditions seen: {sorted(seen)}. To learn it, train with "
        "some of its cells among the training cells (train_size=1.0 trains on every cell)."
    )


def _no_cell_holds(model, key: str, value) -> bool:
    """Whether no cell of the model's AnnData (a reference model's: its training data) holds
    condition ``key``'s ``value``: an unused category of a pandas Categorical. A query
    model's reference may have held cells of it (its test split): not said so."""
    adata = getattr(model, "adata", None)
    if adata is None or model.is_query_model or key not in adata.obs:
        return False
    return not bool((adata.obs[key].astype(str) == str(value)).any())


def warn_categories_without_training_cells(model, train, validation) -> None:
    """At the start of a fit: warn of the categories of the model's condition columns (batch,
    covariates, CGMDVAE's conditions) whose cells here all fell in the validation split
    (positions ``validation``; ``train``: the training positions), unless an earlier fit
    trained them (a query's reference): validation cells give no gradient, so the model
    learns nothing of them, and read-outs, translations, samples and query mappings that
    need them are refused. A test split's categories are held out on purpose: not named."""
    if train is None or validation is None or not len(validation):
        return
    from ._registered import category_mappings

    obs, before = model.adata.obs, getattr(model, "trained_categories_", None) or {}
    named = []
    for key in category_mappings(model.registry_):
        if key not in obs:
            continue
        column = obs[key].astype(str).to_numpy()
        held = pd.Series(column[np.asarray(validation, dtype=int)]).value_counts()
        untrained = set(held.index) - set(column[np.asarray(train, dtype=int)])
        untrained -= set(before.get(key, []))
        named += [f"{key}={v!r} ({held[v]} cells)" for v in sorted(untrained)]
    if named:
        warn_user(
            f"No cell of {', '.join(named[:5])}{' ...' if len(named) > 5 else ''} is among "
            "the training cells: they all fell in the validation split, which gives no "
            "gradient, so the model learns nothing of them and refuses to read, translate "
            "to or sample them. Train with train_size=1.0, or list validation cells that leave "
            "some of each in training (datasplitter_kwargs={'external_indexing': [train, "
            "validation]}), or drop those cells."
        )
