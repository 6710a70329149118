"""The condition column of predicted and sampled cells (``translate``, ``latent_shift``,
``nearest_response``, ``sample``): typed like the user's column, over the model's categories.

A model loaded onto some of its cells (its controls, from a file of their own) holds a
column of those cells' categories only, and a model loaded with its saved AnnData a column
that h5ad turned from strings into categories: neither is how the user's data hold the
condition. The model's registry keeps the categories it trained with, in their order;
``condition_dtypes_`` (saved with the model) the dtype of each column it trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._registered import category_mappings


def record_condition_dtypes(model, adata, keys) -> None:
    """Keep in ``model.condition_dtypes_`` the dtype of each condition column ``keys`` of the
    AnnData a fit starts on; a dtype kept from an earlier fit stays (a model loaded with its
    saved AnnData, whose strings h5ad made categories, and trained on). A categorical
    column's is its ``CategoricalDtype`` (categories, and whether they are ordered: a name,
    ``"category"``, lost the order of a column of time points or doses); others' their name
    (a model saved before holds names only)."""
    kept = dict(getattr(model, "condition_dtypes_", None) or {})
    now = {key: _dtype_record(adata.obs[key].dtype) for key in keys if key in adata.obs}
    model.condition_dtypes_ = {**now, **kept}


def _dtype_record(dtype):
    """What ``condition_dtypes_`` keeps of a column's dtype (see
    :func:`record_condition_dtypes`).

    Examples
    --------
    >>> _dtype_record(pd.CategoricalDtype(["t0", "t1"], ordered=True)).ordered
    True
    >>> _dtype_record(np.dtype(object))
    'object'
    """
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.CategoricalDtype(list(dtype.categories), ordered=bool(dtype.ordered))
    return str(dtype)


def model_column(model, key: str, obs: pd.DataFrame | None = None) -> tuple[pd.Series, list]:
    """The column predicted cells' condition ``key`` is typed like, and the categories it
    goes over: the given cells' own column (``obs``, as the caller holds it) where it has
    one, else the model's AnnData's, as it was when the model trained; the categories are the
    model's registry's (its training column's, where ``key`` is not registered).

    Examples
    --------
    >>> import types
    >>> covs = {"field_keys": ["c"], "mappings": {"c": ["a", "b", "z"]}}
    >>> registry = {"field_registries": {"extra_categorical_covs": {"state_registry": covs}}}
    >>> m = types.SimpleNamespace(registry_=registry, adata=None)
    >>> obs = pd.DataFrame({"c": pd.Categorical(["a"], categories=["a", "b"])})
    >>> model_column(m, "c", obs)[1]
    ['a', 'b', 'z']
    """
    known = category_mappings(model.registry_).get(key)
    trained = model.adata.obs[key] if model.adata is not None and key in model.adata.obs else None
    if known is None and trained is not None and hasattr(trained, "cat"):
        known = trained.cat.categories
    if obs is not None and key in obs:
        column = obs[key]
    else:
        column = trained
        dtype = (getattr(model, "condition_dtypes_", None) or {}).get(key)
        # h5ad's categories for strings; a record of a model saved before: the dtype's name
        if dtype is not None and str(dtype) != str(column.dtype):
            try:
                column = column.iloc[:0].astype(dtype)  # the dtype is all _like_column reads
            except (TypeError, ValueError):
                pass
    return column, None if known is None else list(known)


def predicted_condition(model, key: str, value, n: int, obs: pd.DataFrame | None = None):
    """Condition ``key`` of ``n`` predicted cells, all ``value``: typed like the given cells'
    column (``obs``) or the model's, over the model's categories (:func:`model_column`)."""
    column, known = model_column(model, key, obs)
    return condition_column(column, value, n, known)


def condition_column(train_column: pd.Series, value, n: int, known: list | None = None):
    """A condition column holding ``value`` for ``n`` cells, typed like ``train_column``
    (categorical over the model's categories ``known``, default the column's, or its dtype),
    so that a predicted AnnData concatenates with real cells of that condition.

    Examples
    --------
    >>> condition_column(pd.Series([0, 1, 1]), "1", 2).tolist()
    [1, 1]
    >>> list(condition_column(pd.Series(["ctrl"], dtype="category"), "stim", 1).categories)
    ['ctrl', 'stim']
    >>> ctrl = pd.Series(["ctrl"], dtype="category")  # a column of the controls alone
    >>> list(condition_column(ctrl, "stim", 1, ["ctrl", "other", "stim"]).categories)
    ['ctrl', 'other', 'stim']
    """
    candidates = _categories(train_column, known)
    names = [str(c) for c in candidates]
    if not isinstance(train_column.dtype, pd.CategoricalDtype):
        matches = train_column[train_column.astype(str) == str(value)]
        if len(matches):
            candidates, names = [matches.iloc[0]], [str(value)]
    typed = candidates[names.index(str(value))] if str(value) in names else value
    return _like_column(train_column, [typed] * n, known=known)


def _categories(train_column: pd.Series, known: list | None) -> list:
    """The categories of predicted cells: the model's (``known``), each as ``train_column``
    holds it where it has a category of that name; without ``known``, the column's."""
    own = list(train_column.cat.categories) if hasattr(train_column, "cat") else []
    if known is None:
        return own
    by_name = {str(c): c for c in own}
    return [by_name.get(str(v), v.item() if isinstance(v, np.generic) else v) for v in known]


def _like_column(
    train_column: pd.Series, values: list, possible: list | None = None, known: list | None = None
):
    """``values`` typed like ``train_column``: categorical over the model's categories
    (``known``, default the column's; those of the ``possible`` values, default ``values``,
    that it lacks, a query model's new conditions, added after them; ordered if it is, or
    concatenating both gave object), or its dtype (object if they do not fit it)."""
    if isinstance(train_column.dtype, pd.CategoricalDtype):
        categories = pd.Index(_categories(train_column, known))
        if known is None:
            categories = train_column.cat.categories
        new = [v for v in (values if possible is None else possible) if v not in categories]
        extra = pd.unique(pd.Series(new, dtype=object))
        # Nothing appended when nothing is new: appending an empty object Index to integer
        # (or string-dtype) categories is a pandas FutureWarning.
        if len(extra):
            categories = categories.append(pd.Index(extra))
        return pd.Categorical(values, categories=categories, ordered=train_column.cat.ordered)
    try:
        if isinstance(train_column.dtype, pd.api.extensions.ExtensionDtype):
            return pd.array(values, dtype=train_column.dtype)  # Int64, boolean, string
        return np.array(values, dtype=train_column.dtype)
    except (TypeError, ValueError):
        return np.array(values, dtype=object)


def typed_codes(train_column: pd.Series, known: list, codes: np.ndarray):
    """Condition codes (into ``known``, the model's categories) as values typed like the
    training column, as ``translate`` writes its target (bool stays bool, a categorical keeps
    the model's categories), so that sampled cells compare and concatenate with real ones.

    Examples
    --------
    >>> typed_codes(pd.Series([True, False]), ["False", "True"], np.array([1, 1, 0])).tolist()
    [True, True, False]
    """
    typed = [condition_column(train_column, value, 1, known)[0] for value in known]
    return _like_column(train_column, [typed[c] for c in codes], possible=typed, known=known)
