"""Deconvolution accuracy, as the spatial-integration benchmark of Li et al. (Nat. Methods 2022).

Proportions are spots x cell types. Per-type metrics compare one type's column of true and
predicted proportions across spots: Pearson correlation (PCC) and structural similarity (SSIM,
on columns scaled to [0, 1] by their maximum) as Li et al. define them; root mean squared
error (RMSE) on the proportions as given, in proportion units (Li et al. z-score each column
first, as :func:`imputation_scores` does for its ``rmse``); and the Jensen-Shannon distance
(base 2, in [0, 1]; the square root of the divergence) between the columns normalised to
distributions over spots (JSD). Li et al. report the divergence in natural log:
``jsd ** 2 * np.log(2)``.
Presence AUPR asks how well the predicted proportion ranks the (spot, type) pairs where the
type is truly present. For archetypes, profiles are matched one-to-one (Hungarian) by their
Pearson correlation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import average_precision_score

from .._checks import check_bool, float_array, short_repr
from .._docs import doc_params, doc_proportions
from .._warn import warn_user
from ._missing import (
    check_types,
    flat,
    numeric_table,
    refuse_not_finite,
    type_hint,
    warn_constant_profiles,
    warn_uninformative,
    without_missing_spots,
)
from ._profiles import refuse_transposed

_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


def _as_frame(values, name: str, columns=None, index=None, like: str = "true") -> pd.DataFrame:
    if isinstance(values, pd.DataFrame):
        if not values.columns.is_unique:  # values[c] would be a table: "not numbers" misleads
            repeated = values.columns[values.columns.duplicated()].unique()[:3].tolist()
            raise ValueError(
                f"{name} repeats column names (e.g. {repeated}); columns are matched by name: "
                "make them unique (adata.var_names_make_unique()) or drop the repeats."
            )
        return numeric_table(values, name).astype(float)
    if isinstance(values, AnnData) or sparse.issparse(values):
        raise TypeError(
            f"{name} must be a DataFrame or a dense array, got {type(values).__name__}: pass "
            "e.g. adata[:, genes].to_df() (named columns) or matrix.toarray()."
        )
    array = float_array(
        values, name, "spots x cell types or spots x genes: an array, a list of rows or a DataFrame"
    )
    if array.ndim != 2:
        one = " (one column: pass a table, series.to_frame() or array[:, None])"
        one = one if array.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D (spots x cell types, or spots x genes); got shape "
            f"{array.shape}{one}"
        )
    if columns is not None and array.shape != (len(index), len(columns)):
        raise ValueError(
            f"{name} has shape {array.shape} but {like} has {(len(index), len(columns))}: an "
            f"array {name} must hold {like}'s spots and columns in {like}'s order."
        )
    return pd.DataFrame(array, index=index, columns=columns)


def _aligned(true, pred, values: str = "proportions") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables as DataFrames with the same spots and columns (pred reordered to true);
    ``values`` names what they hold in the error for NaN or infinite entries."""
    given_index = isinstance(true, pd.DataFrame) and isinstance(pred, pd.DataFrame)
    if isinstance(pred, pd.DataFrame) and not isinstance(true, pd.DataFrame):
        # An array true is read in pred's layout (its spots and columns).
        true = _as_frame(true, "true", columns=pred.columns, index=pred.index, like="pred")
    true = _as_frame(true, "true")
    if true.shape[0] == 0 or true.shape[1] == 0:
        raise ValueError(f"true is empty (shape {true.shape}): there is nothing to score.")
    pred = _as_frame(pred, "pred", columns=true.columns, index=true.index)
    if true.shape[0] != pred.shape[0]:
        hint = ""
        if given_index and true.index.isin(pred.index).all():
            hint = ": pred holds all of true's spots, score them with pred.loc[true.index]"
        raise ValueError(
            f"true has {true.shape[0]} spots but pred has {pred.shape[0]}; expected the same "
            f"spots{hint}"
        )
    check_types(true, pred, values)  # true's types in pred; pred's others warned
    totals = pred.sum(axis=1)  # with any extra types: their share is warned about
    pred = pred[true.columns]
    if pred.index.equals(true.index) and given_index and true.index.has_duplicates:
        repeated = true.index[true.index.duplicated()].unique()[:3].tolist()
        warn_user(
            f"true and pred repeat spot names (e.g. {repeated}); their rows are matched by "
            "position, not by name: check that both list the spots in the same order.",
        )
    elif not pred.index.equals(true.index):
        for name, frame in (("true", true), ("pred", pred)):
            if frame.index.has_duplicates:
                repeated = frame.index[frame.index.duplicated()].unique()[:3].tolist()
                raise ValueError(
                    f"{name} repeats spot names (e.g. {repeated}) and the two tables list their "
                    "spots in a different order, so rows cannot be matched by name: make the "
                    "names unique (adata.obs_names_make_unique()) or pass both tables with the "
                    "same spots in the same order."
                )
        if set(pred.index) != set(true.index):
            shared = true.index.intersection(pred.index).size
            hint = type_hint(true.index.difference(pred.index).tolist(), pred.index, "index")
            hint += ". Otherwise" if hint else ":"
            raise ValueError(
                f"true and pred index different spots ({shared} of {len(true)} names shared; "
                f"e.g. {short_repr(true.index[:2].tolist())} and "
                f"{short_repr(pred.index[:2].tolist())}){hint} pass the same spots, e.g. "
                "pred.loc[true.index], or pred.set_axis(true.index) where pred lists true's "
                "spots in its order under other names."
            )
        pred, totals = pred.loc[true.index], totals.loc[true.index]
    true, pred, totals = without_missing_spots(true, pred, totals)
    for name, frame in (("true", true), ("pred", pred)):
        refuse_not_finite(name, frame, values)
    if values == "proportions":
        _warn_if_not_proportions(true, pred, totals)
    return true, pred


#: Ratio of the two tables' mean row sums above which they look like different scales.
_ROW_SUM_RATIO = 1.5


def _warn_if_not_proportions(true, pred, pred_totals) -> None:
    """Say so when one table's rows sum to many times the other's, by a factor that differs
    from spot to spot (cell counts or abundances against proportions): every per-type score
    then compares other numbers (a perfect prediction scored against ``obsm['cell_counts']``
    had a PCC of 0.92). One factor for all spots changes the RMSE only, as documented."""
    true_totals = true.sum(axis=1).to_numpy()
    sums = float(true_totals.mean()), float(pred_totals.mean())
    if min(sums) <= 0 or min(true.min().min(), pred.min().min()) < 0:
        return  # negative values are warned about on their own
    both = (true_totals > 0) & (pred_totals.to_numpy() > 0)
    ratio = true_totals[both] / pred_totals.to_numpy()[both]
    varies = ratio.size > 1 and np.std(ratio) > 0.05 * np.mean(ratio)
    if varies and max(sums) / min(sums) > _ROW_SUM_RATIO:
        warn_user(
            f"true's rows sum to {sums[0]:.3g} on average and pred's to {sums[1]:.3g}: they "
            "look like different scales (cell counts or abundances against proportions?). "
            "The scores compare proportions: divide each row by its sum, e.g. "
            "table.div(table.sum(axis=1), axis=0).",
        )


#: The Parameters and the start of the Returns section of the per-type scores.
_doc_per_type = doc_proportions + "\n\nReturns\n-------\npandas.Series"


def _per_type(true, pred, fn, few: tuple[str, ...] = ()) -> pd.Series:
    """``fn`` of each column, warning (for the scores ``few``) where so few spots set it."""
    true, pred = _aligned(true, pred)
    warn_uninformative(true, pred, few, "cell types")
    return _scores(true, pred, fn)


def _scores(true: pd.DataFrame, pred: pd.DataFrame, fn) -> pd.Series:
    """``fn`` of each column of two aligned tables."""
    values = [fn(true[c].to_numpy(), pred[c].to_numpy()) for c in true.columns]
    return pd.Series(values, index=true.columns, dtype=float)


def _constant(v: np.ndarray) -> bool:
    # Equal values up to rounding (flat): their std can come out at 1e-16 rather than 0.
    return v.size == 0 or bool(flat(v))


def _unit(v: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``v`` divided by its largest absolute value (along ``axis``; rows of 0s kept): the
    scale-free scores then neither overflow (1e200, NaN) nor underflow (1e-300) in float64."""
    top = np.abs(v).max(axis=axis, keepdims=axis is not None)
    return v / np.where(top > 0, top, 1.0)


def _pcc(t: np.ndarray, p: np.ndarray) -> float:
    if _constant(t) or _constant(p):
        return float("nan")
    return float(np.corrcoef(_unit(t), _unit(p))[0, 1])


def _ssim(t: np.ndarray, p: np.ndarray) -> float:
    t = t / t.max() if t.max() > 0 else t
    p = p / p.max() if p.max() > 0 else p
    mu_t, mu_p = t.mean(), p.mean()
    cov = np.mean((t - mu_t) * (p - mu_p))
    numerator = (2 * mu_t * mu_p + _SSIM_C1) * (2 * cov + _SSIM_C2)
    denominator = (mu_t**2 + mu_p**2 + _SSIM_C1) * (t.var() + p.var() + _SSIM_C2)
    return float(numerator / denominator)


def _rmse(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((t - p) ** 2)))


def _warn_negative(
    true: pd.DataFrame,
    pred: pd.DataFrame,
    values: str = "proportions",
    jsd: bool = True,
    ssim: bool = True,
) -> None:
    """Warn, saying how many, when either table holds negative entries: :func:`_jsd`, which
    compares distributions, counts them as 0, and :func:`_ssim`, which scales each column by
    its maximum, is meant for values of 0 and above (a negated prediction scored 0.75)."""
    found = []
    for name, frame in (("true", true), ("pred", pred)):
        array = frame.to_numpy()
        n = int((array < 0).sum())
        if n:
            found.append(f"{name} holds {n} negative {values} (min {array.min():.3g})")
    if found:
        parts = []
        if jsd:
            parts.append(
                "they count as 0 in the JS distance, which compares distributions over spots"
            )
        if ssim:
            parts.append(
                "SSIM, which scales each column by its maximum, is meant for values of 0 and "
                "above (its scores of such columns mean little)"
            )
        warn_user(
            "; ".join(found) + ": " + "; ".join(parts) + ".",
        )


def _jsd(t: np.ndarray, p: np.ndarray) -> float:
    # Callers warn of negative values (_warn_negative); each column divided by its largest
    # value first: a sum of 1e307 values overflowed, every share was 0 and the distance 0.
    t, p = _unit(np.clip(t, 0, None)), _unit(np.clip(p, 0, None))
    if t.sum() == 0 or p.sum() == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        distance = jensenshannon(t / t.sum(), p / p.sum(), base=2)
    # Two valid distributions make NaN only from a divergence rounded just below 0 (scipy
    # takes its square root): equal distributions, distance 0.
    return 0.0 if np.isnan(distance) else float(distance)


def _aupr(t: np.ndarray, p: np.ndarray) -> float:
    present = t > 0
    if present.all() or not present.any():
        return float("nan")
    return float(average_precision_score(present, p))


@doc_params(parameters=_doc_per_type)
def per_type_pcc(true, pred) -> pd.Series:
    """Pearson correlation across spots between true and predicted proportions of each type.

    {parameters}
        One value per type; NaN where either column is constant (up to rounding), warned
        about naming those types.

    Examples
    --------
    >>> from deltavae.metrics import per_type_pcc
    >>> true = [[1, 0], [0.5, 0.5], [0, 1]]
    >>> per_type_pcc(true, [[0.9, 0.1], [0.6, 0.4], [0.1, 0.9]]).round(2).tolist()
    [0.99, 0.99]
    """
    return _per_type(true, pred, _pcc, few=("pcc",))


@doc_params(parameters=_doc_per_type)
def ssim(true, pred) -> pd.Series:
    """Structural similarity of each type's proportions across spots (global, one window).

    Each column is scaled to [0, 1] by its maximum, then
    ``(2 mu_t mu_p + C1)(2 cov + C2) / ((mu_t^2 + mu_p^2 + C1)(var_t + var_p + C2))`` with
    ``C1 = 0.01^2`` and ``C2 = 0.03^2``.

    {parameters}
        One value per type, at most 1 (identical columns). Negative values are warned about:
        the scaling assumes values of 0 and above.

    Examples
    --------
    >>> from deltavae.metrics import ssim
    >>> ssim([[1, 0], [0, 1]], [[1, 0], [0, 1]]).tolist()
    [1.0, 1.0]
    """
    return _warned_scores(true, pred, _ssim, jsd=False, ssim=True, few=("ssim",))


@doc_params(parameters=_doc_per_type)
def rmse(true, pred) -> pd.Series:
    """Root mean squared error of each type's proportions across spots.

    On the proportions as given, in proportion units. Li et al. (2022) z-score each column
    first, which :func:`imputation_scores` does for its ``rmse``.

    {parameters}
        One value per type.

    Examples
    --------
    >>> from deltavae.metrics import rmse
    >>> rmse([[1.0, 0.0]], [[0.5, 0.5]]).tolist()
    [0.5, 0.5]
    """
    return _per_type(true, pred, _rmse)


@doc_params(parameters=_doc_per_type)
def jsd(true, pred) -> pd.Series:
    """Jensen-Shannon distance (base 2) between each type's true and predicted spatial spread.

    Each column is normalised to a distribution over spots, so the metric asks whether the
    type is placed in the right spots, whatever its overall level. The distance is the square
    root of the divergence (:func:`scipy.spatial.distance.jensenshannon` with ``base=2``); Li
    et al. (2022) report the divergence in natural log, ``jsd(true, pred) ** 2 * np.log(2)``.

    {parameters}
        One value per type in [0, 1]; NaN where a column sums to 0. Negative values (an
        unconstrained prediction) are set to 0 first, with a warning.

    Examples
    --------
    >>> from deltavae.metrics import jsd
    >>> jsd([[1.0, 0.5], [0.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]]).round(3).tolist()
    [0.0, 0.558]
    """
    return _warned_scores(true, pred, _jsd, jsd=True, ssim=False, few=("jsd",))


def _warned_scores(true, pred, fn, jsd: bool, ssim: bool, few: tuple[str, ...]) -> pd.Series:
    """Per-type ``fn`` after aligning once and warning once about negative values (for the JS
    distance, SSIM or both)."""
    true, pred = _aligned(true, pred)
    _warn_negative(true, pred, jsd=jsd, ssim=ssim)
    warn_uninformative(true, pred, few, "cell types")
    return _scores(true, pred, fn)


@doc_params(parameters=doc_proportions)
def presence_aupr(true, pred, per_type: bool = False) -> float | pd.Series:
    """Area under the precision-recall curve for detecting which types are present per spot.

    A (spot, type) pair is positive when the true proportion is above 0; the predicted
    proportion is its score (:func:`sklearn.metrics.average_precision_score`).

    {parameters}
    per_type
        Return one AUPR per type (across spots) instead of one over all pairs.

    Returns
    -------
    float or pandas.Series
        Average precision; NaN where a type is present everywhere or nowhere.

    Examples
    --------
    >>> from deltavae.metrics import presence_aupr
    >>> presence_aupr([[1.0, 0.0], [0.5, 0.5]], [[0.9, 0.1], [0.4, 0.6]])
    1.0
    """
    check_bool("per_type", per_type)  # "False" returned one AUPR per type
    if per_type:
        return _per_type(true, pred, _aupr)
    true, pred = _aligned(true, pred)
    return _aupr(true.to_numpy().ravel(), pred.to_numpy().ravel())


@doc_params(parameters=doc_proportions)
def deconvolution_scores(true, pred) -> pd.DataFrame:
    """All per-type deconvolution metrics in one table.

    {parameters}

    Returns
    -------
    pandas.DataFrame
        Index: types. Columns ``pcc``, ``ssim``, ``rmse``, ``jsd``, ``aupr`` (presence, per
        type), as :func:`per_type_pcc`, :func:`ssim` (max-scaled columns), :func:`rmse` (in
        proportion units, not z-scored), :func:`jsd` (base 2 distance) and
        :func:`presence_aupr` define them. Take ``.median()`` for the benchmark's summary.
        NaN marks an undefined score:
        ``pcc`` where either column is constant, ``jsd`` where either sums to 0, ``aupr``
        where the type is present in every spot or in none. ``.median()`` skips NaN, so a
        type truly present but predicted constant (e.g. never) drops out of the PCC summary
        instead of lowering it: count it as a failure (PCC 0, an unrelated prediction).

    Examples
    --------
    >>> import numpy as np
    >>> from deltavae.metrics import deconvolution_scores
    >>> p = np.random.default_rng(0).dirichlet([0.5, 0.5, 0.5], size=50)
    >>> float(deconvolution_scores(p, p)["rmse"].max())
    0.0
    """
    true, pred = _aligned(true, pred)  # aligned, and warned, once
    _warn_negative(true, pred, jsd=True, ssim=True)
    warn_uninformative(true, pred, ("pcc", "ssim", "jsd"), "cell types")
    scores = {"pcc": _pcc, "ssim": _ssim, "rmse": _rmse, "jsd": _jsd, "aupr": _aupr}
    return pd.DataFrame({name: _scores(true, pred, fn) for name, fn in scores.items()})


def matched_profile_correlation(true_profiles, pred_profiles) -> pd.DataFrame:
    """Match found archetype profiles one-to-one to true ones by Pearson correlation.

    The matching maximises the total correlation (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`). With fewer found than true profiles, the
    unmatched true profiles get correlation 0, so the mean penalises missing archetypes; so
    do profiles constant over the genes, which correlate with none (warned about).

    Parameters
    ----------
    true_profiles, pred_profiles
        Profiles as rows: archetypes x genes (arrays with the same genes in the same order,
        or DataFrames with genes as columns, matched by name), at least 3 genes. More
        archetypes than genes (a small gene panel) are scored where that reading is the only
        one: the two tables hold other numbers of archetypes, or are DataFrames with the
        genes as columns; two arrays of one shape with more rows than columns could be
        genes x archetypes, and are refused as such.

    Returns
    -------
    pandas.DataFrame
        One row per true profile: ``matched`` (row index of the found profile, -1 if none)
        and ``correlation``. Its ``correlation.mean()`` is the summary score.

    Examples
    --------
    >>> import numpy as np
    >>> from deltavae.metrics import matched_profile_correlation
    >>> true = np.array([[1.0, 0, 0, 2], [0, 3, 1, 0]])
    >>> matched_profile_correlation(true, true[::-1])["matched"].tolist()
    [1, 0]
    """
    refuse_transposed(true_profiles, pred_profiles)  # genes x archetypes, as the model's
    if isinstance(true_profiles, pd.DataFrame) and isinstance(pred_profiles, pd.DataFrame):
        genes = true_profiles.columns
        for name, frame in (("true_profiles", true_profiles), ("pred_profiles", pred_profiles)):
            if not frame.columns.is_unique:
                repeated = frame.columns[frame.columns.duplicated()].unique()[:3].tolist()
                raise ValueError(f"{name} repeats genes (e.g. {repeated}); make them unique.")
        if set(genes) != set(pred_profiles.columns):
            raise ValueError(
                "true_profiles and pred_profiles must have the same genes (their columns); "
                f"{len(genes.symmetric_difference(pred_profiles.columns))} differ"
                + type_hint(genes.difference(pred_profiles.columns).tolist(), pred_profiles.columns)
                + "."
            )
        pred_profiles = pred_profiles[genes]
    for name, values in (("true_profiles", true_profiles), ("pred_profiles", pred_profiles)):
        if sparse.issparse(values):
            raise TypeError(f"{name} must be dense: pass {name}.toarray().")
    true = float_array(
        true_profiles, "true_profiles", "archetypes x genes, an array or a DataFrame"
    )
    pred = float_array(
        pred_profiles, "pred_profiles", "archetypes x genes, an array or a DataFrame"
    )
    if true.ndim != 2 or pred.ndim != 2 or true.shape[1] != pred.shape[1]:
        raise ValueError(
            f"profiles must be 2-D with the same genes; got shapes {true.shape} and {pred.shape}"
        )
    if true.shape[1] < 3:
        raise ValueError(
            f"profiles need at least 3 genes to correlate (2 points always correlate +-1); got "
            f"{true.shape[1]}."
        )
    for name, values in (("true_profiles", true), ("pred_profiles", pred)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    warn_constant_profiles(true, pred)
    n_true = true.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(_unit(true, axis=1), _unit(pred, axis=1))[:n_true, n_true:]
    corr = np.nan_to_num(corr, nan=0.0)  # a constant profile correlates with nothing
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matched = np.full(n_true, -1)
    correlation = np.zeros(n_true)
    matched[rows] = cols
    correlation[rows] = corr[rows, cols]
    return pd.DataFrame({"matched": matched, "correlation": correlation})
