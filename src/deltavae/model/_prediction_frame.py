"""The AnnData of predicted cells (``translate``, ``predict_perturbation``'s ``latent_shift`` and
``nearest_response``): the given cells' obs and obsm, each moved condition set to the target,
the condition each cell came from beside it (``obs["<key>_source"]``), and the target as
``uns["prediction"]["target"]`` records it.

scGen's ``predict`` keeps the control cells' obs and obsm (their UMAP, PCA) and leaves the
condition column at the control; here the column holds the target, so the source, which for
``translate``'s cells of several conditions differs from cell to cell, gets a column of its own.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from anndata import AnnData

from .._warn import warn_user
from ._condition_types import predicted_condition
from ._scanpy_keys import palette_by_name

#: Appended to a condition key, the obs column of each predicted cell's source condition.
SOURCE_SUFFIX = "_source"


def source_key(key: str) -> str:
    """The obs column of the source condition of ``key``: ``"condition"`` gives
    ``"condition_source"``.

    Examples
    --------
    >>> source_key("condition")
    'condition_source'
    """
    return f"{key}{SOURCE_SUFFIX}"


def predicted_cells(
    model,
    obs: pd.DataFrame,
    obsm,
    x: np.ndarray,
    var: pd.DataFrame,
    targets: dict,
    uns=None,
    note_replaced: bool = True,
) -> AnnData:
    """AnnData of ``x`` (cells x genes, float32) for the given cells: their ``obs`` (as the
    caller holds it, before validation; scvi-tools' ``_scvi_*`` columns left out) with each
    condition key of ``targets`` set to its target value (typed by
    :func:`~deltavae.model._condition_types.predicted_condition`: over the model's
    categories) and the cells' own values of it in ``obs[source_key(key)]``, placed after it
    and typed alike; their ``obsm`` copied (``_scvi_*`` keys left out); ``var`` copied; the
    scanpy colours in ``uns`` (the given AnnData's) of each column kept over the same categories
    (:func:`carried_colours`). A column of the source's name that the given cells (not a
    prediction) hold with other values is replaced with a warning (``note_replaced``: not for
    a prediction made inside another, which warns once)."""
    kept = obs.loc[:, [k for k in obs if not str(k).startswith("_scvi")]].copy()
    for key, value in targets.items():
        target = predicted_condition(model, key, value, len(kept), obs)
        source = _source_column(obs[key], target)
        kept[key] = target
        name = source_key(key)
        if name in kept:  # a prediction predicted on: the source of this one
            if note_replaced:
                _warn_replaced(kept[name], source, name, uns)
            kept[name] = source
        else:
            kept.insert(kept.columns.get_loc(key) + 1, name, source)
    coordinates = {k: _copied(v) for k, v in obsm.items() if not str(k).startswith("_scvi")}
    colours = carried_colours(uns or {}, obs, kept, *training_colours(model))
    return AnnData(
        X=np.asarray(x, dtype=np.float32), obs=kept, var=var.copy(), obsm=coordinates, uns=colours
    )


def _warn_replaced(column: pd.Series, source, name: str, uns) -> None:
    """Say so when the given cells' own ``obs[name]`` is replaced by their source condition
    with other values, unless they are a prediction (``uns["prediction"]``), whose column of
    that name is the record this one continues."""
    if "prediction" in (uns or {}):
        return
    before, after = column.astype(object).to_numpy(), pd.Series(source).astype(object).to_numpy()
    changed = ~((before == after) | (pd.isna(before) & pd.isna(after)))
    if changed.any():
        example = before[changed.argmax()]
        warn_user(
            f"adata.obs[{name!r}] (e.g. {example!r}) is replaced in the prediction by each "
            f"cell's source condition, which the prediction writes there: {int(changed.sum())} "
            "cells held other values. Rename the column to keep it; adata itself is unchanged."
        )


def training_colours(model) -> list[tuple]:
    """The ``(uns, obs)`` of ``model``'s training AnnData (a query model's: the query), the
    palettes :func:`carried_colours` reads after the given cells' (its ``more``); none where
    the model holds no AnnData."""
    training = getattr(model, "adata", None)
    return [(training.uns, training.obs)] if training is not None else []


def carried_colours(uns, given: pd.DataFrame, kept: pd.DataFrame, *more) -> dict:
    """``uns["<column>_colors"]`` for each categorical column of ``kept`` (a source column: its
    condition's) where every category has a colour by name in the given cells' ``uns`` (with
    ``given``'s categories) or in one of ``more`` (``(uns, obs)`` pairs: the model's training
    AnnData, whose colours cover the conditions a subset of control cells lost), so that
    ``sc.pl.umap(pred, color="condition")`` draws each condition (and cell type) in the colours
    of the user's own plots; scanpy colours a column without them by category position, which
    put the target in the colour the user's plots gave the control.

    Examples
    --------
    >>> given = pd.DataFrame({"condition": pd.Categorical(["ctrl", "stim"])})
    >>> kept = given.assign(condition_source=given["condition"])
    >>> carried_colours({"condition_colors": ["#1f77b4", "#ff7f0e"]}, given, kept)
    {'condition_colors': ['#1f77b4', '#ff7f0e'], 'condition_source_colors': ['#1f77b4', '#ff7f0e']}
    """
    colours = {}
    for column in kept:
        after = kept[column].dtype
        if not isinstance(after, pd.CategoricalDtype):
            continue
        own = str(column)
        if own.endswith(SOURCE_SUFFIX) and own not in given:
            own = own[: -len(SOURCE_SUFFIX)]
        named = {}
        for palette_uns, obs in reversed(((uns, given), *more)):  # the given cells' win
            named.update(palette_by_name(palette_uns, obs, own))
        if named and all(c in named for c in after.categories):
            colours[f"{column}_colors"] = [named[c] for c in after.categories]
    return colours


def _source_column(given: pd.Series, target):
    """The cells' own condition values, categorical over the target column's categories (the
    model's) where that column is categorical, with any of the cells' own categories it lacks
    after them, so that the source and target columns compare and share colours; else as
    given."""
    if not isinstance(getattr(target, "dtype", None), pd.CategoricalDtype):
        return given.values.copy()  # numpy or extension (Int64, boolean, string) as given
    categories = pd.Index(target.categories)
    own = pd.unique(given.dropna())
    extra = [v for v in own if v not in categories]
    if extra:
        categories = categories.append(pd.Index(extra, dtype=object))
    return pd.Categorical(given.to_numpy(), categories=categories, ordered=target.ordered)


def _copied(value):
    """A copy of an obsm entry (array, sparse matrix, DataFrame, an AnnData view's array)."""
    copy = value.copy()
    return np.asarray(copy) if isinstance(copy, np.ndarray) else copy


def target_record(target_condition, targets: dict):
    """``uns["prediction"]["target"]``: the target as the model names it, a string for one
    condition; a dict of strings, one per condition key moved (keys left out or ``None``
    omitted), where ``target_condition`` was given as a dict, which an .h5ad file writes
    and reads back as one (``str`` of the dict could not be read back).

    Examples
    --------
    >>> target_record({"condition": "stim", "donor": None}, {"condition": "stim"})
    {'condition': 'stim'}
    >>> target_record(1.0, {"dose": 1})
    '1'
    """
    if isinstance(target_condition, dict):
        return {str(key): str(value) for key, value in targets.items()}
    if len(targets) == 1:
        return str(next(iter(targets.values())))
    return str(target_condition)


def checked_response_weight(model, weight: float | None, residual: bool) -> float:
    """``translate``'s weight on the observed responses, checked; ``None``: the default."""
    is_count = model.module.observation.is_count
    if weight is None:
        return 0.5 if is_count and residual and len(model.condition_keys) == 1 else 0.0
    if not isinstance(weight, numbers.Real) or isinstance(weight, bool) or not 0 <= weight <= 1:
        raise ValueError(f"response_weight must be a number in [0, 1], got {weight!r}.")
    if weight > 0 and (model.module.likelihood == "bernoulli" or len(model.condition_keys) != 1):
        raise ValueError(
            "response_weight > 0 averages observed responses over one condition covariate "
            "of counts or real values; use response_weight=0 for this model."
        )
    if weight > 0 and is_count and not residual:
        raise ValueError(
            "response_weight > 0 adds observed responses to the cells' own counts; use "
            "residual=True, or response_weight=0 for a fully decoded translation."
        )
    return float(weight)
