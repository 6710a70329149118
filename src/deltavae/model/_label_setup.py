"""The labels ``CGMDVAE.setup_anndata`` registers: checked, their mark of unlabelled cells,
and labels that look like such a mark."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import short_repr
from .._lookalike_names import plain
from ._validation import warn_user


def check_label_setup(
    adata: AnnData,
    labels_key: str | None,
    unlabeled_category: str | None,
    default: str,
    conditions: list | None = None,
) -> None:
    """``setup_anndata``'s labels: ``unlabeled_category`` only with a labels column (marking
    no cell where every cell is labelled, unless a label looks like a mark); at least one
    labelled cell, and two labels where every cell is labelled (one label on every cell
    leaves nothing to learn: each cell is put in its cluster); not a column also set up as a
    condition.

    Examples
    --------
    >>> a = AnnData(obs=pd.DataFrame({"t": ["B", "Unknown"]}, index=["c1", "c2"]))
    >>> check_label_setup(a, "t", None, "Unknown")
    """
    if labels_key is None:
        if unlabeled_category is not None:
            raise ValueError(
                f"unlabeled_category={unlabeled_category!r} names the label of unlabelled "
                "cells, but no labels_key was given: pass labels_key, the obs column of the "
                "labels, or omit unlabeled_category for unsupervised training."
            )
        return
    if unlabeled_category is not None and np.ndim(unlabeled_category) != 0:
        raise ValueError(
            f"unlabeled_category={short_repr(unlabeled_category)} is one value, the label that "
            f"marks unlabelled cells; give several marks one first: adata.obs[{labels_key!r}] "
            f"= adata.obs[{labels_key!r}].replace([...], 'Unknown'), and pass "
            "unlabeled_category='Unknown'."
        )
    if labels_key in (conditions or []):
        raise ValueError(
            f"{labels_key!r} is both labels_key and a condition_key: the model would cluster by "
            "the condition it corrects for. Name the cell types as labels and the condition "
            "(treatment, donor ...) as condition_key."
        )
    column = adata.obs[labels_key]
    labels = column.astype(str)
    # numpy's strings (np.str_, from indexing an array of names) are strings too.
    kinds = {"str" if isinstance(v, str) else type(v).__name__ for v in pd.unique(column.dropna())}
    if "str" in kinds and len(kinds) > 1:
        raise ValueError(
            f"adata.obs[{labels_key!r}] mixes strings with other values ({sorted(kinds)}); "
            f"make them all strings: adata.obs[{labels_key!r}] = "
            f"adata.obs[{labels_key!r}].astype(str)."
        )
    typed = column.dtype if not hasattr(column, "cat") else column.cat.categories.dtype
    marks = column[labels == str(unlabeled_category)]
    if unlabeled_category is not None and len(marks) and not (marks == unlabeled_category).any():
        mark = marks.iloc[0]
        mark = mark.item() if hasattr(mark, "item") else mark  # numpy scalars print plainly
        raise ValueError(
            f"unlabeled_category={unlabeled_category!r} is a {type(unlabeled_category).__name__},"
            f" but adata.obs[{labels_key!r}] holds {typed} values: pass it as it is "
            f"there, unlabeled_category={mark!r}."
        )
    # Integer labels: with an integer mark, or without one (every cell labelled, supervised).
    integer = isinstance(unlabeled_category, numbers.Number) or (
        unlabeled_category is None and _is_integer(typed, column)
    )
    if kinds and "str" not in kinds and not integer:
        col = f"adata.obs[{labels_key!r}]"
        whole = pd.api.types.is_float_dtype(typed) and (column.dropna() % 1 == 0).all()
        fix = (  # 1.0, 2.0 as text were labels '1.0', '2.0', which no prediction equals
            f"make them integers, {col} = {col}.astype(int)"
            if whole
            else f"make them strings, {col} = {col}.astype(str)"
        )
        if not pd.api.types.is_bool_dtype(typed):
            fix += (
                " (integer labels take an integer mark of unlabelled cells as "
                "unlabeled_category, or none when every cell is labelled)"
            )
        raise ValueError(f"{col} holds {typed} values, read as label names: {fix}.")
    if unlabeled_category is not None and not (labels == str(unlabeled_category)).any():
        if column.dtype.kind == "f" and (column == unlabeled_category).any():  # -1.0 for -1
            raise ValueError(
                f"adata.obs[{labels_key!r}] holds its labels as floats ({column.dtype}, e.g. "
                f"after fillna), so unlabeled_category={unlabeled_category!r} reads as another "
                f"value: make them integers, adata.obs[{labels_key!r}] = "
                f"adata.obs[{labels_key!r}].astype(int)."
            )
        alike = [v for v in pd.unique(labels) if looks_unlabelled(v)]
        alike = [column[labels == v].iloc[0] for v in alike]  # as the column holds it: -1
        alike = [v.item() if isinstance(v, np.generic) else v for v in alike]
        # Every cell labelled with a mark given (scANVI's required argument; scArches'
        # reference, whose query carries the mark): supervised, as scvi-tools trains it. A
        # label spelt like a mark ('unknown' for 'Unknown') would train as a cell type.
        if alike:
            raise ValueError(
                f"unlabeled_category={unlabeled_category!r} does not occur in "
                f"adata.obs[{labels_key!r}], so no cell is unlabelled. It holds {alike[0]!r}: "
                f"if that marks unlabelled cells, pass unlabeled_category={alike[0]!r}; else "
                "mark unlabelled cells with it, or omit it for supervised training."
            )
    unlabelled = str(unlabelled_mark(column, unlabeled_category, default))
    if labels.nunique() - int((labels == unlabelled).any()) < 1:
        raise ValueError(
            f"labels_key={labels_key!r} holds no labelled cell: every cell of "
            f"adata.obs[{labels_key!r}] is marked unlabelled ({short_repr(unlabelled)}). Label "
            "some cells for semi-supervised training, or omit labels_key to cluster without "
            "labels."
        )
    if labels.nunique() == 1 and not (labels == unlabelled).any():
        only = plain(column.iloc[0])
        mark = plain(unlabelled_mark(column, unlabeled_category, default))
        passed = "" if isinstance(mark, str) else f", passing unlabeled_category={mark!r}"
        raise ValueError(
            f"labels_key={labels_key!r} holds one label, {only!r}, and every cell carries it: "
            "trained supervised, every cell is put in its cluster, so the model finds no other "
            "group and predicts that label for every cell. Pass as labels_key a column of two "
            "or more cell types, mark the cells of unknown type unlabelled "
            f"({mark!r}{passed}) for semi-supervised training, or omit labels_key to "
            "cluster without labels."
        )
    if isinstance(column.dtype, pd.CategoricalDtype):
        unused = [str(c) for c in column.cat.categories if not (column == c).any()]
        unused = [c for c in unused if c != unlabelled]
        if unused:
            warn_user(
                f"adata.obs[{labels_key!r}] has categories no cell carries ({unused[:5]}); each "
                "label gets a cluster, and theirs learn no labelled cell: cells predicted as "
                "them are a cluster given that name, not cells matched to it. Drop them before "
                "setup_anndata: "
                f"adata.obs[{labels_key!r}] = adata.obs[{labels_key!r}]"
                ".cat.remove_unused_categories()."
            )


#: Label values that usually mark unlabelled cells (compared stripped, in lower case).
#: -1 marks them in integer labels (scANVI's and sklearn's convention); "" is what a table
#: written with empty cells for missing labels (or ``fillna("")``) holds; "?" and "-" are a
#: spreadsheet's marks of a cell left open; "undetermined" and "not assigned" annotation
#: tools' words for cells they gave no type. Names of real classes of cells ("doublet",
#: "low quality", "other") are not marks: they are what a cell was found to be.
_UNLABELLED_WORDS = {
    *("unknown", "unlabeled", "unlabelled", "unassigned", "not assigned", "undetermined"),
    *("unclassified", "undefined", "na", "n/a", "n.a.", "nan", "none", "?", "-", "--"),
    *("-1", ""),
}


def looks_unlabelled(value) -> bool:
    """Whether a label ``value`` reads as a mark of unlabelled cells (``'unknown'``, ``'NA'``,
    -1; compared as text in lower case).

    Examples
    --------
    >>> [looks_unlabelled(v) for v in (" Unlabelled", -1, "", "?", "Not assigned", "B")]
    [True, True, True, True, True, False]
    >>> [looks_unlabelled(v) for v in ("Unclassified", "n.a.", "--", "None", "nan", "NK")]
    [True, True, True, True, True, False]
    """
    return str(value).strip().lower() in _UNLABELLED_WORDS


def warn_if_unlabelled_lookalike(registry: dict) -> None:
    """Warn when a label of a model's ``registry`` looks like a mark of unlabelled cells but is
    not its mark: it would be trained as a cell type of its own (``'unknown'`` for
    ``'Unknown'``, -1 in integer labels all labelled).

    Examples
    --------
    >>> state = {"categorical_mapping": ["B", "Unknown"], "unlabeled_category": "Unknown"}
    >>> warn_if_unlabelled_lookalike({"field_registries": {"labels": {"state_registry": state}}})
    """
    state = registry["field_registries"]["labels"]["state_registry"]
    unlabelled = state["unlabeled_category"]
    for value in pd.unique(np.asarray(state["categorical_mapping"][:-1], dtype=object)):
        value = value.item() if isinstance(value, np.generic) else value  # -1, not np.int64(-1)
        if str(value) != str(unlabelled) and looks_unlabelled(value):
            warn_user(
                f"The labels hold {value!r}, which is trained as a cell type of its own: "
                f"unlabelled cells are those marked {unlabelled!r}. If {value!r} marks unlabelled "
                f"cells, pass unlabeled_category={value!r} to setup_anndata."
            )


def _is_integer(dtype, column: pd.Series) -> bool:
    """Whether labels of ``dtype`` (the column's, or its categories') are integers (Python
    integers in an object column too; not booleans)."""
    if pd.api.types.is_bool_dtype(dtype):
        return False
    if pd.api.types.is_object_dtype(dtype):
        return pd.api.types.infer_dtype(column.dropna(), skipna=True) == "integer"
    return pd.api.types.is_integer_dtype(dtype)


def unlabelled_mark(column: pd.Series, unlabeled_category, default: str, source=None):
    """The mark of unlabelled cells in the labels ``column``: the ``source`` registry's (a
    saved or reference model's), else ``unlabeled_category``, else ``default``; for integer
    labels without one (every cell labelled, supervised), an integer no cell carries, -1
    unless it is a label, so that the labels stay integers as the column holds them.

    Examples
    --------
    >>> unlabelled_mark(pd.Series([0, 1, 2]), None, "Unknown")
    -1
    >>> unlabelled_mark(pd.Series(["B", "T"]), None, "Unknown")
    'Unknown'
    """
    state = ((source or {}).get("field_registries", {}).get("labels") or {}).get("state_registry")
    if state and "unlabeled_category" in state:
        return state["unlabeled_category"]
    if unlabeled_category is not None or column is None:
        return default if unlabeled_category is None else unlabeled_category
    typed = column.cat.categories.dtype if hasattr(column, "cat") else column.dtype
    if not _is_integer(typed, column):
        return default
    taken, mark = set(np.asarray(column.dropna()).tolist()), -1
    while mark in taken:
        mark -= 1
    return mark


def _is_missing(value) -> bool:
    """Whether ``value`` is a scalar missing value (NaN, ``pd.NA``, ``pd.NaT``; not None)."""
    return value is not None and pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _refuse_missing_mark(labels_key: str, unlabeled_category) -> None:
    """``unlabeled_category=np.nan`` beside labels left NaN (``obs["cell_type"].where(mask)``)
    was told to mark those cells 'Unknown', then refused again: nan did not occur in the
    column. A missing value is no category (pandas drops it from the categories), so it
    cannot mark cells: say so, with the column's line and the mark to pass, in one error."""
    column = f"adata.obs[{labels_key!r}]"
    raise ValueError(
        f"unlabeled_category={unlabeled_category!r}: a missing value is no category, so it "
        "cannot mark unlabelled cells. Mark the cells without a label with a name and pass "
        f"it: {column} = {column}.astype(str).where({column}.notna(), 'Unknown'), then "
        f"setup_anndata(adata, labels_key={labels_key!r}, unlabeled_category='Unknown')."
    )


def refuse_missing_integer_labels(adata: AnnData, labels_key, unlabeled_category) -> None:
    """Integer labels with missing values (floats after a merge, ``1.0, 2.0, NaN``): refused
    with advice that keeps them integers, an integer mark for the missing ones. The advice
    for names (``astype(str)``, ``'Unknown'`` for NaN) made them labels ``'1.0'``, ``'2.0'``,
    which no prediction of theirs equals. Other labels are left to ``check_obs_keys``; a
    missing value given as the mark (``unlabeled_category=np.nan``) is refused here.

    Examples
    --------
    >>> a = AnnData(obs=pd.DataFrame({"t": [1.0, None]}, index=["c1", "c2"]))
    >>> refuse_missing_integer_labels(a, "t", None)
    Traceback (most recent call last):
    ...
    ValueError: labels_key='t': adata.obs['t'] has 1 missing values (NaN) among integer labels; ...
    """
    if not isinstance(labels_key, str) or labels_key not in adata.obs:
        return
    if _is_missing(unlabeled_category):
        refuse_missing_integer_labels(adata, labels_key, None)  # integers: an integer mark
        _refuse_missing_mark(labels_key, unlabeled_category)
    column = adata.obs[labels_key]
    n_missing = int(column.isna().sum())
    given = pd.Series(np.asarray(column.dropna(), dtype=object))
    numeric = given.map(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool))
    if not n_missing or not len(given) or not numeric.all():  # names ("0" too), booleans
        return
    values = pd.to_numeric(given)
    if (values != values.round()).any():  # fractions
        return
    mark = unlabeled_category
    if not isinstance(mark, numbers.Integral) or isinstance(mark, bool):
        mark = unlabelled_mark(values.astype(int), None, None)
    raise ValueError(
        f"labels_key={labels_key!r}: adata.obs[{labels_key!r}] has {n_missing} missing values "
        f"(NaN) among integer labels; mark those cells unlabelled with an integer, keeping the "
        f"labels integers: adata.obs[{labels_key!r}] = adata.obs[{labels_key!r}].astype(float)"
        f".fillna({mark}).astype(int), and pass unlabeled_category={mark} (or drop them)."
    )


def unused_labels_hint(adata, labels_key: str, labels) -> str:
    """For a refusal that counts ``labels``: those no cell of ``adata`` carries (categories
    left unused by a subset of the cells, as scanpy keeps them) and the line that drops them,
    or "" where every label has cells."""
    column = None if adata is None else adata.obs.get(labels_key)
    if column is None:
        return ""
    held = set(column.astype(str))
    unused = [str(label) for label in labels if str(label) not in held]
    if not unused:
        return ""
    return (
        f" {len(unused)} of them no cell carries ({', '.join(unused[:5])}): categories left "
        f"unused, e.g. by a subset of the cells. Drop them, adata.obs[{labels_key!r}] = "
        f"adata.obs[{labels_key!r}].cat.remove_unused_categories(), then call setup_anndata "
        "again."
    )
