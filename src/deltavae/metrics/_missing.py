"""Spots the scores of :mod:`deltavae.metrics._deconvolution` leave out (pred's NaN rows, a
spot model's spots without counts), refuse (NaN or infinite entries elsewhere) or warn about
(too few to score a column across them), and profiles constant over the genes that
matched_profile_correlation counts as 0."""

from __future__ import annotations

import decimal
import numbers

import numpy as np
import pandas as pd

from .._checks import short_repr
from .._close_names import did_you_mean
from .._warn import warn_user


def without_missing_spots(true, pred, totals):
    """The spots whose row of ``pred`` is not all NaN: the spot models (NMFDeconv,
    SpatialImputer, Archetypes) give NaN rows to spots without counts, which hold no
    prediction; left out of the scores with a warning counting them. Other NaN entries are
    refused by :func:`refuse_not_finite` (as a table of NaN only)."""
    missing = pred.isna().all(axis=1).to_numpy()
    if not missing.any() or missing.all():
        return true, pred, totals
    warn_user(
        f"{int(missing.sum())} of the {len(missing)} spots have no prediction (NaN rows of "
        f"pred, e.g. {short_repr(pred.index[missing][:3].tolist())}: a spot model's spots "
        f"without counts): they are left out, the scores are over the other "
        f"{int((~missing).sum())} spots.",
    )
    return true[~missing], pred[~missing], totals[~missing]


def refuse_not_finite(name: str, frame: pd.DataFrame, values: str) -> None:
    """Refuse NaN or infinite entries of ``frame`` (``true`` or ``pred``, holding ``values``),
    naming how many spots (rows) and columns hold them, and how to leave those spots out of
    both tables."""
    finite = np.isfinite(frame.to_numpy())
    bad = ~finite.all(axis=0)
    if not bad.any():
        return
    rows = ~finite.all(axis=1)
    unit = "cell types" if values == "proportions" else "columns"
    if np.isnan(frame.to_numpy()).all():  # leaving out its NaN rows or columns leaves nothing
        raise ValueError(
            f"{name} holds no {values}: all its {frame.size} entries are NaN (a failed "
            f"prediction, or the wrong table?). Check how {name} was made; there is nothing "
            "to score."
        )
    infinite = bool(np.isinf(frame.to_numpy()).any())
    kept = f"{name}.replace([np.inf, -np.inf], np.nan)" if infinite else name
    if rows.all():  # every spot: a failed column (a gene an imputation could not predict)
        advice = f"{kept}.dropna(axis=1).columns, then pass true[kept] and pred[kept]"
    else:
        advice = f"{kept}.dropna().index, then pass true.loc[kept] and pred.loc[kept]"
        if name == "pred":
            advice += " (rows of pred that are all NaN are left out by themselves)"
    raise ValueError(
        f"{name} contains NaN or infinite {values} in {int(bad.sum())} {unit} (e.g. "
        f"{short_repr(frame.columns[bad].tolist(), n=5)}) and {int(rows.sum())} of its "
        f"{len(rows)} spots (e.g. {short_repr(frame.index[rows][:3].tolist())}): fill them, "
        f"or leave those {'columns' if rows.all() else 'spots'} out of both tables: kept = "
        f"{advice}."
    )


def warn_few_spots(n_spots: int, scores: tuple[str, ...]) -> None:
    """Warn where a per-type score is set by the number of spots, not by the prediction: a
    Pearson correlation over 2 spots is +1 or -1; over 1 spot it is undefined (NaN, as is the
    z-scored RMSE where ``scores`` holds ``"rmse"``: one value has no spread), and each column
    scaled by its maximum (SSIM) or by its sum (JS distance) is 1, so SSIM is 1 and the
    distance 0."""
    if n_spots == 2 and "pcc" in scores:
        trivial = "over two spots PCC is +1 or -1 whatever the prediction"
    elif n_spots == 1 and {"pcc", "ssim", "jsd"} & set(scores):
        parts = []
        if "pcc" in scores:  # NaN, which .median() skips: every type left the summary
            nan = "PCC and the z-scored RMSE are" if "rmse" in scores else "PCC is"
            parts.append(f"{nan} undefined (NaN: one value has no spread)")
        texts = {"ssim": "SSIM is 1", "jsd": "the JS distance 0"}
        named = [text for name, text in texts.items() if name in scores]
        if named:
            parts.append(f"{' and '.join(named)} whatever the prediction (values above 0)")
        trivial = "over one spot " + ", and ".join(parts)
    else:
        return
    warn_user(
        f"Only {n_spots} spot{'s' if n_spots > 1 else ''} to score: each per-type score "
        f"compares a column across spots, and {trivial}. Score at least 3 spots (the RMSE, "
        "or presence_aupr over all pairs, still says how close a single spot is).",
    )


def type_hint(missing, columns, axis: str = "columns") -> str:
    """Advice where every name ``true`` has and ``pred`` lacks is one of ``pred``'s columns
    written as text or as a number (0 and '0': a table read back from a file or an h5ad
    names its columns as text), else ''."""
    as_text = {str(c): c for c in columns}
    if not len(missing) or not all(str(m) in as_text for m in missing):
        return ""

    def kind(value) -> str:
        return f"'{value}' (text)" if isinstance(value, str) else f"{value} (a number)"

    name = missing[0]
    return (
        f": the names differ only in type (true's {kind(name)}, pred's "
        f"{kind(as_text[str(name)])}); give both the same, e.g. "
        f"table.{axis} = table.{axis}.astype(str) on each"
    )


#: Spread, relative to a column's largest magnitude, up to which its values count as equal:
#: rounding (scipy's pearsonr warns of a near-constant input from about 2e-12).
_FLAT = 1e-12


def flat(values: np.ndarray, axis: int | None = None):
    """Whether ``values`` (each column, with ``axis=0``) are equal up to float64 rounding:
    rows divided by their sums give a type's fixed share of every spot 1e-17 apart, and the
    PCC of that noise was reported as a score."""
    return np.ptp(values, axis=axis) <= _FLAT * np.abs(values).max(axis=axis)


def warn_constant_predictions(true, pred, unit: str, scores: tuple[str, ...] = ()) -> None:
    """Warn where ``pred`` is constant across spots in a column whose true values vary (a
    type predicted nowhere, a gene imputed flat): its PCC is NaN (and its z-scored RMSE
    where ``scores`` holds ``"rmse"``, its JS distance where the column is all 0), which
    ``.median()`` skips, leaving the failure out of the summary."""
    flat, varies = _flat_but_true_varies(true, pred)
    flat = pred.columns[flat]
    if not len(flat):
        return
    undefined = "PCC and z-scored RMSE are" if "rmse" in scores else "PCC is"
    warn_user(
        f"pred is constant across spots in {len(flat)} of the {int(varies.sum())} {unit} whose "
        f"true values vary (e.g. {short_repr(flat[:5].tolist())}): their {undefined} undefined "
        "(NaN, as is the JS distance of a column of 0s), and .median() skips NaN, leaving "
        "these failures out of the summary. Count them as failures, e.g. "
        "scores['pcc'].fillna(0).median(), as Li et al.'s code does.",
    )


def warn_constant_truth(true, unit: str, scores: tuple[str, ...]) -> None:
    """Warn where ``true`` is constant across spots in a column (a type absent from the
    truth, all 0; a gene measured flat): its PCC is NaN (and its z-scored RMSE, where
    ``scores`` holds ``"rmse"``; its JS distance where the column is all 0, ``"jsd"``),
    whatever the prediction, and ``.median()`` skips NaN: those columns left the summary
    without a word."""
    values = true.to_numpy()
    constant = flat(values, axis=0)
    if len(values) < 2 or not constant.any():  # over one spot: warn_few_spots
        return
    names = true.columns[constant]
    zero = "jsd" in scores and bool((values[:, constant] == 0).all(axis=0).any())
    undefined = "PCC and z-scored RMSE are" if "rmse" in scores else "PCC is"
    warn_user(
        f"true is constant across spots in {len(names)} of the {len(constant)} {unit} (e.g. "
        f"{short_repr(names[:5].tolist())}): their {undefined} undefined whatever the "
        "prediction (NaN"
        + (", as is the JS distance of those all 0" if zero else "")
        + "; a constant has no pattern), and .median() skips NaN, so the summary is over "
        f"the other {unit}. Leave them out on purpose (a {unit[:-1]} absent from the truth), "
        "or judge them by another score (the RMSE of the values).",
    )


def _flat_but_true_varies(true, pred) -> tuple[np.ndarray, np.ndarray]:
    """Columns :func:`warn_constant_predictions` names (``pred`` constant, ``true`` not), and
    the columns ``true`` varies in, as boolean masks."""
    varies = ~flat(true.to_numpy(), axis=0)
    return flat(pred.to_numpy(), axis=0) & varies, varies


def warn_zero_columns(true, pred, unit: str, named_already: bool) -> None:
    """Warn where the JS distance is NaN: a column of ``true`` or of ``pred`` sums to 0 (after
    negative values are set to 0), so it is no distribution over spots; ``jsd`` alone had
    given NaN in silence. ``named_already``: the constant-prediction warning has named the
    columns of 0s predicted against varying true values."""
    zero = (true.clip(lower=0).sum(axis=0).to_numpy() == 0) | (
        pred.clip(lower=0).sum(axis=0).to_numpy() == 0
    )
    if named_already:  # by the constant-prediction and the constant-truth warnings
        zero &= ~_flat_but_true_varies(true, pred)[0]
        zero &= ~((true.to_numpy() == 0).all(axis=0))
    if not zero.any():
        return
    warn_user(
        f"{int(zero.sum())} of the {len(zero)} {unit} sum to 0 across spots in true or pred "
        f"(e.g. {short_repr(true.columns[zero][:5].tolist())}): their JS distance is undefined "
        "(NaN; a column of 0s is no distribution over spots), and .median() skips NaN. Count "
        "a column predicted 0 where true is not (or the reverse) as a failure with .fillna(1) "
        "(the largest distance), and leave out those absent from both.",
    )


def warn_uninformative(true, pred, scores: tuple[str, ...], unit: str) -> None:
    """:func:`warn_few_spots`, for PCC :func:`warn_constant_predictions` and
    :func:`warn_constant_truth`, and for the JS distance :func:`warn_zero_columns`, in one
    call. ``"rmse"`` in ``scores``: the z-scored RMSE, NaN where PCC is."""
    warn_few_spots(len(true), scores)
    if "pcc" in scores:
        warn_constant_predictions(true, pred, unit, scores)
        warn_constant_truth(true, unit, scores)
    if "jsd" in scores:
        warn_zero_columns(true, pred, unit, named_already="pcc" in scores)


def numeric_table(frame: pd.DataFrame, name: str, kept: str = "scores'") -> pd.DataFrame:
    """``frame`` with its object columns that hold only numbers as numbers (a table built row
    by row, or transposed from one with a text column, holds numbers as objects; they were
    refused as "not numbers"); a column of text is refused, naming it."""
    numbers = {"integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty"}
    converted = {
        column: pd.to_numeric(frame[column])  # not text such as '0.5': a column of labels?
        for column in frame.columns[[dtype.kind == "O" for dtype in frame.dtypes]]
        if pd.api.types.infer_dtype(frame[column], skipna=True) in numbers
        or _all_real(frame[column])  # "mixed": Decimal and int or float values
    }
    if converted:
        frame = frame.copy()
        for column, numbers in converted.items():
            frame[column] = numbers
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise TypeError(
            f"{name} holds columns that are not numbers ({text[:3]}): pass the {kept} "
            f"columns only, e.g. {name}.drop(columns={text[:3]})."
        )
    return frame


def _all_real(column: pd.Series) -> bool:
    """Whether every value of an object column is a real number (Decimal, int, float, bool,
    numpy's), missing values aside."""
    values = column.dropna()
    return len(values) > 0 and all(
        isinstance(v, numbers.Real | decimal.Decimal | np.bool_) for v in values
    )


def check_types(true: pd.DataFrame, pred: pd.DataFrame, values: str) -> None:
    """Refuse ``true``'s columns that ``pred`` lacks (saying so first when the two share
    none: differently named types); with ``values="proportions"``, warn naming ``pred``'s
    columns that ``true`` lacks, which the scores leave out (a type the truth does not hold,
    or a name written otherwise): they were dropped without a word where they held under
    0.1% of a spot. Other values (imputed genes) may hold more columns than the truth."""
    missing = [c for c in true.columns if c not in pred.columns]
    if missing:
        none = len(missing) == len(true.columns)
        close = did_you_mean(missing[0], [c for c in pred.columns if c not in true.columns])
        raise KeyError(
            ("true and pred share no cell type (their columns): " if none else "")
            + f"pred lacks the cell types {short_repr(missing, n=10)}; its columns are "
            f"{short_repr(list(pred.columns), n=20, unit='columns')}"
            + (type_hint(missing, pred.columns) or (f" ({missing[0]!r}: {close})" if close else ""))
            + (". Name both tables' columns alike, e.g. pred.rename(columns={...})" if none else "")
        )
    extra = [c for c in pred.columns if c not in true.columns]
    if not extra or values != "proportions":
        return
    mass = float(pred[extra].sum(axis=1).mean())
    warn_user(
        f"pred has cell types true lacks ({short_repr(extra, n=10)}), {mass:.1%} of each spot "
        "on average; they are left out of the scores"
        + (", so pred's rows no longer sum to 1" if mass > 1e-3 else "")
        + f", which are over the {len(true.columns)} types of true. Check the names if true "
        "should hold them.",
    )


def warn_constant_profiles(true: np.ndarray, pred: np.ndarray) -> None:
    """Warn where profiles are constant over the genes (up to rounding): their correlation
    is undefined and counts as 0, a found one as a missing archetype (one that collapsed?)."""
    for name, values in (("true_profiles", true), ("pred_profiles", pred)):
        rows = np.flatnonzero(flat(values, axis=1))
        if not rows.size:
            continue
        n = rows.size
        warn_user(
            f"{name} holds {n} profile{'s' if n > 1 else ''} constant over the genes (rows "
            f"{short_repr(rows.tolist())}): a correlation with a constant is undefined, and "
            "counts as 0 in the matching"
            + (
                " (as a missing archetype: one that collapsed?)."
                if name == "pred_profiles"
                else ", whatever is found: check true_profiles."
            ),
        )
