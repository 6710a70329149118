"""deltavae.metrics against the implementations the field reports: sklearn (ARI, NMI),
scipy (Pearson, Jensen-Shannon, z-scores), scGen's linregress R² and Li et al.'s SSIM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon
from scipy.stats import linregress, pearsonr, zscore
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from deltavae import metrics


def _li_ssim(t: np.ndarray, p: np.ndarray) -> float:
    """Li et al. (2022)'s SSIM: columns scaled by their maximum, luminance x contrast x
    structure with C3 = C2 / 2."""
    t, p = t / t.max(), p / p.max()
    mt, mp, st, sp = t.mean(), p.mean(), t.std(), p.std()
    cov = np.mean((t - mt) * (p - mp))
    c1, c2 = 0.01**2, 0.03**2
    luminance = (2 * mt * mp + c1) / (mt**2 + mp**2 + c1)
    contrast = (2 * st * sp + c2) / (st**2 + sp**2 + c2)
    return luminance * contrast * (cov + c2 / 2) / (st * sp + c2 / 2)


@pytest.mark.parametrize("seed", range(5))
def test_clustering_scores_equal_sklearn_and_the_hungarian_matching(seed):
    rng = np.random.default_rng(seed)
    true, pred = rng.integers(0, 4, 150), rng.integers(0, 6, 150)
    as_text = np.array([f"type {t}" for t in true])
    table = contingency_matrix(true, pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    scores = metrics.cluster_scores(as_text, pred)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(true, pred), abs=1e-12)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(table[rows, cols].sum() / 150, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_deconvolution_scores_equal_scipy_and_li_et_al(seed):
    rng = np.random.default_rng(seed)
    true, pred = rng.dirichlet([0.5] * 4, 60), rng.dirichlet([0.5] * 4, 60)
    scores = metrics.deconvolution_scores(true, pred)
    for j in range(4):
        t, p = true[:, j], pred[:, j]
        assert scores["pcc"][j] == pytest.approx(pearsonr(t, p)[0], abs=1e-12)
        assert scores["ssim"][j] == pytest.approx(_li_ssim(t, p), abs=1e-12)
        assert scores["rmse"][j] == pytest.approx(np.sqrt(np.mean((t - p) ** 2)), abs=1e-12)
        assert scores["jsd"][j] == pytest.approx(jensenshannon(t, p, base=2), abs=1e-12)


@pytest.mark.parametrize("scale", [1e200, 1e-300])
def test_scale_free_scores_hold_at_extreme_scales(scale):
    # Pearson, z-scored RMSE and R² do not depend on the scale; at 1e200 np.corrcoef
    # overflowed to NaN (and a std of inf made every z-score 0: RMSE 0, a perfect score),
    # at 1e-300 it underflowed to NaN, where scipy's pearsonr gives the number.
    rng = np.random.default_rng(0)
    true, pred = rng.gamma(2.0, size=(40, 3)), rng.gamma(2.0, size=(40, 3))
    expected = metrics.imputation_scores(true, pred)
    scored = metrics.imputation_scores(true * scale, pred * scale)
    for j in range(3):
        assert scored["pcc"][j] == pytest.approx(pearsonr(true[:, j], pred[:, j])[0], abs=1e-12)
        z = np.sqrt(np.mean((zscore(true[:, j]) - zscore(pred[:, j])) ** 2))
        assert scored["rmse"][j] == pytest.approx(z, abs=1e-12)
    np.testing.assert_allclose(scored[["pcc", "rmse"]], expected[["pcc", "rmse"]], atol=1e-12)
    reference = linregress(pred.mean(0), true.mean(0)).rvalue ** 2
    assert metrics.mean_expression_r2(pred * scale, true * scale) == pytest.approx(reference)
    profiles = metrics.matched_profile_correlation(true.T * scale, pred.T * scale)
    np.testing.assert_allclose(
        profiles["correlation"],
        metrics.matched_profile_correlation(true.T, pred.T)["correlation"],
        atol=1e-12,
    )


@pytest.mark.parametrize("seed", range(3))
def test_mean_expression_r2_is_scgens_linregress_r_squared(seed):
    rng = np.random.default_rng(seed)
    pred, obs, ctrl = (rng.gamma(1.0, size=(n, 50)) for n in (20, 30, 25))
    r2 = linregress(pred.mean(0), obs.mean(0)).rvalue ** 2
    assert metrics.mean_expression_r2(pred, obs) == pytest.approx(r2, abs=1e-12)
    delta = linregress(pred.mean(0) - ctrl.mean(0), obs.mean(0) - ctrl.mean(0)).rvalue ** 2
    assert metrics.mean_expression_r2(pred, obs, control=ctrl) == pytest.approx(delta, abs=1e-12)


def test_a_share_constant_up_to_rounding_is_a_constant_prediction():
    # A type given the same share of every spot, rows divided by their sums: 1e-17 apart.
    # Its PCC was the correlation of that rounding noise (-0.66, 0.69, 0.28 here, with no
    # warning), where scipy's pearsonr warns that the input is nearly constant.
    rng = np.random.default_rng(3)
    size = rng.uniform(0.1, 10.0, 8)
    weights = np.c_[1 * size, 2 * size, 7 * size]
    pred = weights / weights.sum(1, keepdims=True)
    assert np.ptp(pred, axis=0).max() > 0  # not exactly constant
    true = rng.dirichlet([1.0] * 3, 8)
    with pytest.warns(UserWarning, match="pred is constant across spots in 3 of the 3"):
        scores = metrics.deconvolution_scores(true, pred)
    assert scores["pcc"].isna().all()
    with pytest.warns(UserWarning, match="pred is constant across spots in 3 of the 3"):
        imputed = metrics.imputation_scores(true, pred)
    assert imputed[["pcc", "rmse"]].isna().all().all()


def test_the_js_distance_holds_where_a_columns_sum_overflows():
    # Columns of 1e307 values sum to inf: each divided by that sum was 0, and the distance of
    # two such columns came out 0.0, a perfect score, where scipy's of the same columns
    # scaled down is 0.41.
    rng = np.random.default_rng(0)
    true, pred = rng.gamma(2.0, size=(40, 3)), rng.gamma(2.0, size=(40, 3))
    with np.errstate(over="ignore"):
        scored = metrics.jsd(true * 1e307, pred * 1e307)
    for j in range(3):
        assert scored[j] == pytest.approx(jensenshannon(true[:, j], pred[:, j], base=2))
    assert scored.min() > 0.1
