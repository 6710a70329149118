"""The two conditions a perturbation prediction goes between (:class:`Contrast`), resolved
from :meth:`~deltavae.model._perturbation.PerturbationMixin.predict_perturbation`'s arguments
and checked once for every method against the model's training data, with the advice for cells
of several source conditions and for a condition_key left out."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import short_repr
from .._close_names import did_you_mean
from ._cgmdvae_mixins import _as_known
from ._condition_counts import (
    NOT_TRAINED,
    trained_conditions,
    untrained_condition,
    warn_if_cells_not_trained,
)
from ._labels import seen_categories
from ._latent_shift import training_obs
from ._registered import category_mappings, condition_request
from ._validation import NO_CELLS


def _several_sources(model, adata, key: str, target, known: list, defaulted: bool) -> str:
    """Advice for cells of several source conditions: where the target is a value of ``key``
    the key was right (told to name it, ``condition_key='condition'`` for ``'condition'``,
    the user could not act on it): one call per source condition, or ``translate``, which
    takes them together; else (a defaulted key) the column holding the target, if one does."""
    target = str(_as_known(target, known))
    if target not in known:
        frames = (adata.obs, training_obs(model))
        return _defaulted_key(key, target, frames) if defaulted else ""
    column = adata.obs[key]
    source = next(v for v in column.unique() if str(v) != target)  # a value as typed there
    advice = (
        f" Call once per source condition, e.g. adata[adata.obs[{key!r}] == {short_repr(source)}]"
    )
    if "translate" in model.perturbation_methods and key in category_mappings(model.registry_):
        advice += ", or use method='translate', which takes cells of several"
    return advice + "."


def _defaulted_key(key: str, value=None, frames: tuple = ()) -> str:
    """What a ``condition_key`` left out was read as, and how to name another column. For an
    unseen ``value`` of the key, only where another obs column of ``frames`` (the cells', the
    training cells') holds it, named: where none does the key was right and the value
    mistyped, which the hint would hide."""
    name = "e.g. condition_key='condition'"
    if frames:
        holding = [
            column
            for obs in frames
            for column in obs.columns
            if column != key
            and not str(column).startswith("_scvi")
            and obs[column].astype(str).eq(str(value)).any()
        ]
        if not holding:
            return ""
        name = f"condition_key={str(holding[0])!r} ({str(value)!r} is a value of it)"
    return (
        f" condition_key was left out, so the model's own covariate {key!r} was read as the "
        f"condition; name the column of the conditions, {name}."
    )


class Contrast(NamedTuple):
    """The two conditions a prediction goes between, resolved and checked once for every method.

    Built by :meth:`resolve` from
    :meth:`~deltavae.model._perturbation.PerturbationMixin.predict_perturbation`'s arguments.
    """

    #: obs column of the condition.
    condition_key: str
    #: The condition of the cells to predict from, and the one to predict.
    source: str
    target: str
    #: The condition of every cell of the model's AnnData, as strings (``NOT_TRAINED`` for
    #: the cells of its test split and those without a value, which no mean or response reads).
    train_conditions: np.ndarray
    #: obs column of the groups (``balance_key``), or None.
    groups_key: str | None

    @classmethod
    def resolve(cls, model, adata, target_condition, condition_key, groups_key) -> Contrast:
        """Check the keys and the conditions of ``adata`` against the model's training data."""
        if not adata.n_obs:  # as every read-out says it (not "one source condition; none")
            raise ValueError(NO_CELLS)
        defaulted = condition_key is None and not isinstance(target_condition, dict)
        condition_key, target_condition = condition_request(
            model.registry_, target_condition, condition_key
        )
        if target_condition is None or (
            isinstance(target_condition, float) and np.isnan(target_condition)
        ):  # read as the text 'None' or 'nan': "was never seen in training"
            raise ValueError(
                f"target_condition={target_condition!r} names no condition to predict: give the "
                "value of the condition to move the cells to (e.g. 'stim')."
            )
        train = model.adata
        if condition_key not in train.obs:  # did you mean: a misspelt column
            own = [str(c) for c in train.obs if not str(c).startswith("_scvi")]
            raise KeyError(
                f"condition_key={condition_key!r} is not a column of the training AnnData.obs "
                f"({own}); {did_you_mean(condition_key, own) or 'pass one of them.'}"
            )
        if condition_key not in adata.obs:  # the cells' source condition, as translate says
            known = sorted(set(trained_conditions(model, condition_key)) - {NOT_TRAINED})
            raise KeyError(
                f"condition_key={condition_key!r} is not a column of adata.obs: add each cell's "
                f"source condition (one of {known}), e.g. adata.obs[{condition_key!r}] = "
                f"{short_repr(known[0] if known else 'ctrl')}."
            )
        if groups_key is not None and not isinstance(groups_key, str):  # a list: unhashable
            raise TypeError(
                "balance_key must be the name of one obs column of the model's AnnData (e.g. "
                f"'cell_type'), got {short_repr(groups_key)}."
            )
        if groups_key is not None and groups_key not in training_obs(model):  # not adata's
            hint = did_you_mean(groups_key, training_obs(model).columns)
            raise KeyError(
                f"balance_key={groups_key!r} is not a column of the obs of the model's "
                "AnnData (a query model's: its query), which holds the groups"
                + (f"; {hint}" if hint else ".")
            )
        n_missing = int(adata.obs[condition_key].isna().sum())
        if n_missing:  # read as a condition 'nan' beside the source ('one source condition')
            raise ValueError(
                f"adata.obs[{condition_key!r}] has {n_missing} missing values (NaN); give those "
                "cells their source condition or drop them."
            )
        sources = adata.obs[condition_key].astype(str).unique()
        train_conditions = trained_conditions(model, condition_key)  # not the test split's
        known = sorted(set(train_conditions) - {NOT_TRAINED})
        if len(sources) != 1:
            raise ValueError(
                "adata must hold cells of one source condition; "
                f"obs[{condition_key!r}] has {sorted(sources)}."
                + _several_sources(model, adata, condition_key, target_condition, known, defaulted)
            )
        # 1.0 or True for condition 1 names it, as translate reads it; 1 for a dose of 1.0.
        source, target = sources[0], str(_as_known(target_condition, known))
        for value in (source, target):
            if value not in known:
                seen = known
                hint = (
                    _defaulted_key(condition_key, value, (adata.obs, training_obs(model)))
                    if defaulted
                    else ""
                ) or (" " + did_you_mean(value, known)).rstrip().replace(" did", " Did", 1)
                if value in {
                    str(v) for v in category_mappings(model.registry_).get(condition_key, [])
                }:
                    way = (  # ZINBVAE has no translate
                        "use method='translate'"
                        if "translate" in model.perturbation_methods
                        else "a conditional model (CGMDVAE) can move cells to it with "
                        "method='translate'"
                    )
                    raise ValueError(  # a query model's AnnData holds the query's cells only
                        f"Condition {condition_key}={value!r} is the model's, but its AnnData "
                        f"holds no cell under it to take means or responses from (only {seen}); "
                        f"{way}."
                    )
                raise ValueError(
                    f"Condition {condition_key}={value!r} was never seen in training; "
                    f"conditions seen: {seen}.{hint}"
                )
        trained = (seen_categories(model) or {}).get(condition_key)  # a column it takes
        for value in (source, target):  # whose cells all validated: its weights never trained
            if trained is not None and value not in trained:
                raise ValueError(untrained_condition(model, condition_key, value, trained))
        warn_if_cells_not_trained(model, condition_key, train_conditions, (source, target))
        return cls(condition_key, source, target, train_conditions, groups_key)
