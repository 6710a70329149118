"""Checks of the arguments of scvi-tools' expression calls that read no model: numbers of
draws, the library size, the DE test's mode and weights, and the column the groups are read
from."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Hashable

import numpy as np
import pandas as pd

from .._checks import is_number, no_column, short_repr
from .._close_names import did_you_mean
from .._renamed import foreign_hint
from ._de_tables import missing_obs_column
from ._validation import warn_user

#: scvi-tools' values of differential_expression's ``mode`` and ``weights``.
_MODES = ("vanilla", "change")
_WEIGHTS = ("uniform", "importance", None)
#: Keywords of scvi-tools' get_bayes_factors that mode="vanilla" ignores.
_CHANGE_ONLY = ("pseudocounts", "test_mode", "change_fn", "m1_domain_fn", "cred_interval_lvls")


def check_library_size(library_size):
    """scvi-tools' ``library_size``: ``"latent"`` or a finite number above 0 (0 gave zeros, a
    negative number negative expression, NaN a table of NaN). Returns it, a 0-d array or
    tensor (``np.asarray(x).mean()``, ``torch.tensor(1e4)``, as scvi-tools takes) as a float."""
    if isinstance(library_size, str) and library_size == "latent":
        return library_size
    value = library_size
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # ndarray, tensor
        value = value.item()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.number)
        or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"library_size must be a number above 0 (e.g. 1e4 for counts per 10,000) or "
            f"'latent'; got {library_size!r}."
        )
    return value


def check_draws(given: dict, names: tuple[str, ...]) -> None:
    """Numbers of draws are integers from 1: scvi-tools read ``n_samples=0`` (or -1) as 1, and
    DE of ``n_samples_overall=0`` called every gene DE."""
    for name in names:
        value = given.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise ValueError(f"{name} is a number of draws, an integer from 1; got {value!r}.")


def check_de_test(given: dict) -> None:
    """``mode`` and ``weights`` are scvi-tools' values, and ``delta``/``fdr_target`` are
    not given to the vanilla mode, which ignores them: an unknown ``mode`` failed after every
    draw with ``NotImplementedError: Mode ... not recognized``, an unknown ``weights`` with
    ``AttributeError: 'NoneType' object has no attribute 'items'``."""
    for arg, allowed, default in (("mode", _MODES, "vanilla"), ("weights", _WEIGHTS, "uniform")):
        value = given.get(arg, default)
        if not any(value is v or (isinstance(value, str) and value == v) for v in allowed):
            raise ValueError(
                f"{arg}={short_repr(value)}: pass one of {[v for v in allowed if v]} "
                f"(scvi-tools' differential_expression; default {default!r})."
            )
    extra = given.get("kwargs", {})
    ignored = [arg for arg in ("delta", "fdr_target") if arg in given]
    ignored += [arg for arg in _CHANGE_ONLY if arg in extra]
    if ignored and given.get("mode", "vanilla") == "vanilla":
        named = ", ".join(ignored[:-1]) + " and " * (len(ignored) > 1) + ignored[-1]
        warn_user(  # scvi-tools reads them in mode="change" only: the table was the same
            f"{named} {'apply' if len(ignored) > 1 else 'applies'} to mode='change' only (the "
            "|LFC| a gene must pass, the false discovery rate of its is_de_fdr column, the LFC's "
            "pseudocounts, ...); mode='vanilla' (the default) ignores them. Pass mode='change' "
            "to use them."
        )
    if extra.get("test_mode", "three") not in ("two", "three"):  # else read as "three"
        raise ValueError(
            f"test_mode={short_repr(extra['test_mode'])}: pass 'three' (up and down apart, the "
            "default) or 'two' (both together)."
        )
    pseudocounts = extra.get("pseudocounts")
    if pseudocounts is not None and (not is_number(pseudocounts) or not pseudocounts >= 0):
        raise ValueError(  # < 0: NaN LFCs with numpy warnings; a string: a TypeError
            "pseudocounts, added to the scales before their log-fold change, is a number from "
            f"0 (or None to estimate it from the data); got {short_repr(pseudocounts)}."
        )


def check_groupby_column(adata, groupby, passed: bool = True) -> pd.Series:
    """The column ``groupby`` names in ``adata.obs``, which holds groups: a KeyError naming
    the user's columns (not scvi-tools' ``_scvi_labels``, ...) for a missing one, and a
    ValueError for a column of fractions, most of them distinct (``library_size``), which
    scvi-tools compared value by value, a cell per group."""
    if not isinstance(groupby, Hashable) or groupby not in adata.obs:
        if not passed:  # the model's own AnnData was read: the column is on another one
            raise missing_obs_column("groupby", groupby, adata, False, "differential_expression")
        raise KeyError(
            no_column("groupby", groupby, adata.obs)
            + " groupby names the obs column whose groups are compared (e.g. 'leiden' after "
            "sc.tl.leiden(adata), or the labels); add it first if it is a new grouping."
        )
    column = adata.obs[groupby]
    if pd.api.types.is_float_dtype(column.dtype):  # doses 0.5, 1.0, 2.5 are groups: many cells
        values = column.dropna().to_numpy()
        continuous = len(values) > 3 and 2 * len(np.unique(values)) > len(values)
        if continuous and (values != np.round(values)).any():
            raise ValueError(
                f"groupby={groupby!r}: adata.obs[{groupby!r}] holds continuous values "
                f"({column.dtype}, {column.nunique()} distinct), which would be compared one "
                f"value against the rest each. Group them first, e.g. adata.obs['bins'] = "
                f"pd.qcut(adata.obs[{groupby!r}], 4), and pass groupby='bins'."
            )
    return column


def fill_advice(groupby) -> str:
    """How to give cells without a group (NaN in ``adata.obs[groupby]``) one of their own."""
    return f"adata.obs[{groupby!r}] = adata.obs[{groupby!r}].astype(object).fillna('unassigned')"


def without_ungrouped_cells(
    column: pd.Series, groupby, against_rest: bool, marked=None, mark=None
) -> np.ndarray | None:
    """Which cells of ``column`` (``adata.obs[groupby]``) are kept: not those of no group
    (NaN) where each group is compared with the rest (``against_rest``): scvi-tools (as
    scanpy's ``rank_genes_groups``) took them into the rest without a word, so that
    unannotated cells, perhaps of the group itself, diluted the difference tested; nor the
    ``marked`` ones, cells the model's labels column marks unlabelled (``mark``), which were
    a group "Unknown" besides. Each left out with a warning naming how many; ``None`` where
    none is (or a ``group2`` is given, which leaves NaN out anyway)."""
    missing = column.isna().to_numpy()
    if missing.all():
        raise ValueError(
            f"adata.obs[{groupby!r}] holds no group: every value is NaN (a pandas Series "
            "assigned to obs is aligned by cell name, so one indexed otherwise gives NaN: "
            "assign its values, series.to_numpy())."
        )
    left = missing & against_rest
    if marked is not None:
        rest = " and of the rest each group is compared with" * against_rest
        warn_user(
            f"{int(marked.sum())} of {len(missing)} cells are marked unlabelled ({mark!r}) in "
            f"adata.obs[{groupby!r}], the model's labels column: they have no known label, so "
            f"they are left out of the groups compared{rest}. To compare them as a group, "
            f"name it: group1={mark!r}."
        )
        left = left | marked
    if against_rest and missing.any():
        warn_user(
            f"{int(missing.sum())} of {len(missing)} cells have no group in "
            f"adata.obs[{groupby!r}] (NaN): they are left out of the rest each group is "
            f"compared with, not counted in it. To count them in, give them a group first: "
            f"{fill_advice(groupby)}."
        )
    return ~left if left.any() else None


def check_de_selection(given: dict) -> None:
    """The cells compared are chosen one way: by ``groupby`` (with ``group1``/``group2``) or by
    ``idx1`` (with ``idx2``). scvi-tools failed with a bare ``KeyError: None`` given neither,
    and silently ignored ``group1``/``group2`` given with ``idx1``, and ``idx2`` without it.
    ``fdr_target`` and ``delta`` are checked too (out of range, every gene was DE)."""
    groups = [arg for arg in ("group1", "group2") if given.get(arg) is not None]
    if given.get("idx1") is not None and groups:
        raise ValueError(
            f"idx1 chooses the cells compared, so {groups[0]} would be ignored: pass groupby "
            "with group1/group2, or idx1 with idx2, not both."
        )
    if given.get("idx1") is None and given.get("idx2") is not None:
        raise ValueError(
            "idx2 is read only with idx1 (the cells compared with idx2): pass idx1 too, or "
            "groupby with group1/group2."
        )
    fdr, delta = given.get("fdr_target", 0.05), given.get("delta", 0.25)
    if not is_number(fdr) or not 0 < fdr < 1:  # e.g. 5 for 5%: every gene was called DE
        raise ValueError(f"fdr_target is a proportion in (0, 1), e.g. 0.05; got {fdr!r}.")
    if delta is not None and (not is_number(delta) or not delta >= 0):  # < 0: all DE
        raise ValueError(
            f"delta, the smallest |LFC| called DE, is a number from 0 (or None to estimate "
            f"it from the data); got {delta!r}."
        )
    if given.get("idx1") is None and given.get("groupby") is None:
        raise ValueError(
            "differential_expression needs the cells to compare: groupby (a column of "
            "adata.obs, with group1/group2 or each group against the rest) or idx1 (and idx2)."
        )


def de_group_lists(given: dict) -> dict:
    """``group1``/``group2``/``batchid1``/``batchid2`` that are sets, as sorted lists (a set
    was read as one group's name: "no cell is {'1', '0'}"), refusing an empty list (scvi-tools
    failed with "No objects to concatenate" or a ZeroDivisionError); and the switches
    ``batch_correction``/``all_stats``/``filter_outlier_cells`` as True or False (``"False"``
    corrected batches or filtered cells; a string left out every statistic, as scvi-tools
    reads ``all_stats is True``). Returns the arguments to replace."""
    for flag in ("batch_correction", "all_stats", "filter_outlier_cells"):
        if flag in given and not isinstance(given[flag], bool | np.bool_):
            raise ValueError(f"{flag} must be True or False, got {short_repr(given[flag])}.")
    replaced = {}
    for arg in ("group1", "group2", "batchid1", "batchid2"):
        value = given.get(arg)
        if isinstance(value, set | frozenset):
            value = replaced[arg] = sorted(value, key=str)
        if value is not None and np.ndim(value) > 0 and not len(list(value)):
            raise ValueError(f"{arg} is empty; name one at least, or leave {arg} out.")
    return replaced


def same_number(name, values) -> bool:
    """Whether the group ``name`` is a number equal to one of ``values`` (a column's):
    ``group1=0`` for a column of 0.0, 1.0 (integers made floats by a NaN), which scvi-tools
    compares by value and finds; it was refused as "no cell is 0; its groups: ['0.0', ...]".
    Booleans are not numbers here (True is not cluster 1)."""
    real = isinstance(name, numbers.Real) and not isinstance(name, bool | np.bool_)
    return real and any(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) and v == name
        for v in values
    )


def check_dataloader_alone(given: dict, call: str) -> None:
    """No argument that chooses the cells, their minibatches or the batch decoded under is
    given beside ``dataloader=`` (``given``: the call's arguments by name): scvi-tools reads
    the loader's minibatches as they come and drops ``indices``, ``batch_size`` and
    ``transform_batch`` (with a ``Warning`` it builds but never issues), so an expression
    asked for under another batch came back under each cell's own, and latents of other
    cells than ``indices``', without a word."""
    if given.get("dataloader") is None:
        return
    chosen = ("indices", "batch_size", "transform_batch")
    dropped = [arg for arg in chosen if given.get(arg) is not None]
    if dropped:
        batch = ", each cell under its own batch" if dropped[0] == "transform_batch" else ""
        raise ValueError(
            f"{call}() does not read {dropped[0]} with dataloader= (scvi-tools reads the "
            f"loader's minibatches as they come{batch}): pass adata= and indices= instead of "
            f"the loader, or leave {dropped[0]} out."
        )


#: scanpy's ``rank_genes_groups`` keywords and what ``differential_expression`` reads instead
#: (said by ``_renamed.foreign_hint``, as every function's).
SCANPY_DE_NAMES = {
    "groups": (
        "group1: the groups to test, each against group2 or the rest; all of groupby's by default"
    ),
    "reference": "group2: one group; leave it out for reference='rest'",
    "method": (
        "scanpy's rank_genes_groups(method=...) has no counterpart: the test is the model's "
        "Bayes factor, mode='vanilla' (default) or mode='change' (with delta=)"
    ),
}


def check_de_keywords(given: dict) -> None:
    """Keywords ``differential_expression`` does not name are those of scvi-tools'
    ``DifferentialComputation.get_bayes_factors`` (``n_samples_overall``, ``pseudocounts``,
    ...): any other failed there, named as that internal method's (``seed=0``, which other
    read-outs take, or ``n_samples=`` for ``n_samples_overall=``). ``importance_weighting_kwargs``
    without ``weights="importance"``, which alone reads them, are refused too."""
    from scvi.model.base import DifferentialComputation

    weighting = given.get("importance_weighting_kwargs") or {}
    if weighting and given.get("weights", "uniform") != "importance":
        # scvi-tools hands them to get_normalized_expression, which drops them: its refusal
        # (deltavae's) named that call and a keyword the user had passed inside this dict.
        raise TypeError(
            f"differential_expression() got importance_weighting_kwargs={weighting!r} with "
            f"weights={given.get('weights', 'uniform')!r}: they are read with "
            "weights='importance' only. Pass weights='importance', or leave "
            "importance_weighting_kwargs out."
        )
    takes = inspect.signature(DifferentialComputation.get_bayes_factors).parameters
    set_here = ("self", "idx1", "idx2", "mode", "batchid1", "batchid2", "use_observed_batches")
    set_here += ("delta",)  # differential_expression's own
    known = [name for name in takes if name not in set_here] + ["subset_idx"]
    unknown = [key for key in given.get("kwargs", {}) if key not in known]
    if not unknown:
        return
    name = unknown[0]
    if name in SCANPY_DE_NAMES:
        value = given["kwargs"][name]
        hint = f": {foreign_hint('differential_expression', name, value, SCANPY_DE_NAMES[name])}"
    elif name in ("seed", "random_state"):
        hint = (
            ": it draws cells with numpy's global generator and expression with torch's; to "
            "repeat its table, set scvi.settings.seed = 0 (both) before the call"
        )
    else:
        hint = did_you_mean(name, known)
        hint = f"; {hint}" if hint else ""
    raise TypeError(
        f"differential_expression() got an unexpected keyword argument {name!r}{hint} "
        f"(keywords it does not name go to scvi-tools' get_bayes_factors: {known})."
    )
