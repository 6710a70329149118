"""The condition columns a model registered, read from its scvi-tools registry: the batch and
the categorical covariates, each with its categories and where it enters the module."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from .._checks import short_repr

#: The batch column scvi-tools registers when a setup names none (one category, 0).
SCVI_STAND_IN_BATCH = "_scvi_batch"


def registered_category(value, categories: list):
    """The registered category that a user's ``value`` names, or ``None`` (also for ``None``).

    Read by name, as every argument naming a category is (``condition=``,
    ``transform_batch=``, ``batchid1=``, ``target_condition=``): ``"107"`` names the integer
    batch 107, ``1.0`` or ``True`` the integer 1, ``1`` the float 1.0 (a dose) or ``True``.

    Examples
    --------
    >>> registered_category("107", [107, 205]), registered_category(1, ["1", "2"])
    (107, '1')
    >>> registered_category(2.0, [1, 2]), registered_category("3", [1, 2])
    (2, None)
    >>> registered_category(1, [False, True]), registered_category(True, [0, 1])
    (True, 1)
    """
    if value is None:
        return None
    names = [str(c) for c in categories]
    spellings = [str(value)]
    if isinstance(value, numbers.Real | np.bool_) and float(value).is_integer():  # bool too
        spellings += [str(int(value)), str(float(value))]
        spellings += [str(bool(value))] if value in (0, 1) else []  # 1 == True, as numpy's
    for name in spellings:
        if name in names:
            return categories[names.index(name)]
    return None


def registered_columns(registry: dict) -> list[tuple[str, int | None, str, list]]:
    """``(registry key, column or None, obs key, categories)`` of the batch (unless it is
    scvi-tools' constant stand-in) and of every categorical covariate, in the module's order.

    Examples
    --------
    >>> registered_columns({"field_registries": {}})
    []
    """
    fields, out = registry["field_registries"], []
    batch = fields.get("batch", {}).get("state_registry", {})
    if batch.get("original_key") not in (None, SCVI_STAND_IN_BATCH):
        out.append(("batch", None, batch["original_key"], list(batch["categorical_mapping"])))
    covs = fields.get("extra_categorical_covs", {}).get("state_registry", {})
    for column, key in enumerate(covs.get("field_keys", [])):
        out.append(("extra_categorical_covs", column, key, list(covs["mappings"][key])))
    return out


def category_mappings(registry: dict) -> dict[str, list]:
    """The categories of each condition column a model registered, by obs key.

    Examples
    --------
    >>> category_mappings({"field_registries": {}})
    {}
    """
    return {key: categories for _, _, key, categories in registered_columns(registry)}


def decoded_under(registry: dict, key: str, target) -> list[tuple[str, int | None, int]]:
    """Where a cell's value of obs column ``key`` enters the model, if it registered it (its
    batch, a categorical covariate, CGMDVAE's condition, which it registers as both): each
    ``(registry key, column or None, code of target)``; empty when the model does not take
    ``key``.

    Examples
    --------
    >>> decoded_under({"field_registries": {}}, "condition", "stim")
    []
    """
    return [
        (field, column, [str(c) for c in categories].index(str(target)))
        for field, column, name, categories in registered_columns(registry)
        if name == key
    ]


def default_condition_key(registry: dict) -> str:
    """The model's one condition column; several (or none) must be named."""
    keys = list(category_mappings(registry))
    if not keys:  # "the model has 0 condition covariates ([])" named no column to pass
        raise ValueError(
            "Pass condition_key, the obs column of the conditions (e.g. "
            "condition_key='condition'): the model takes no condition covariate to read it from."
        )
    if len(keys) != 1:
        raise ValueError(
            f"Pass condition_key: the model has {len(keys)} condition covariates ({keys})."
        )
    return keys[0]


def several_conditions_error(keys: list[str], condition) -> ValueError:
    """The error for one condition value given to a model of several condition keys.

    Examples
    --------
    >>> str(several_conditions_error(["condition", "donor"], "stim"))[:60]
    "The model has several condition keys, ['condition', 'donor']"
    """
    return ValueError(
        f"The model has several condition keys, {keys}: name each value with its key, e.g. "
        f"{{{keys[0]!r}: {short_repr(condition)}}} (a key left out is drawn, or in translate and "
        "predict_perturbation kept at each cell's own value)."
    )


def condition_request(registry: dict, target, condition_key: str | None) -> tuple[str, object]:
    """The condition column and target value of a ``latent_shift`` or ``nearest_response``
    request; ``translate``'s form, a dict of one key, names both.

    Examples
    --------
    >>> condition_request({"field_registries": {}}, {"condition": "stim"}, None)
    ('condition', 'stim')
    """
    if isinstance(target, dict):
        if len(target) != 1 or condition_key not in (None, *target):
            raise ValueError(
                f"target_condition={target!r}: method='latent_shift' or 'nearest_response' "
                "moves cells on one condition; name one, e.g. target_condition='stim' with "
                "condition_key='condition', or {'condition': 'stim'}."
            )
        ((condition_key, target),) = target.items()
    if isinstance(target, list | tuple | set | dict | np.ndarray | pd.Series | pd.Index):
        raise ValueError(  # read as the text "['stim']", "never seen", or a dict's error above
            f"target_condition={short_repr(target)} is several values: method='latent_shift' "
            "or 'nearest_response' predicts one condition; give one value (e.g. 'stim'), "
            "and call once per value."
        )
    if condition_key is not None and not isinstance(condition_key, str):
        raise TypeError(  # a list: "unhashable type"
            f"condition_key must be the name of one obs column (e.g. 'condition'), got "
            f"{short_repr(condition_key)}."
        )
    return condition_key or default_condition_key(registry), target
