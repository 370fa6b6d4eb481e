"""The statistics under every detector: Mann-Kendall/Theil-Sen trend, noise scale, rank sum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from advisor.detectors._stats import noise_scale, rank_sum_test, trend_test


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(size=n + 50)
    out = np.empty_like(e)
    out[0] = e[0]
    for i in range(1, e.size):
        out[i] = phi * out[i - 1] + e[i]
    return out[50:]


def test_trend_of_a_clean_decreasing_line_has_its_slope_intercept_and_sign():
    x = np.arange(1.0, 21.0)
    r = trend_test(x, 2.0 - 0.5 * x)
    assert r.slope == pytest.approx(-0.5)
    assert r.intercept == pytest.approx(2.0)
    assert r.statistic < 0
    assert r.pvalue < 1e-4
    assert r.pvalue_decreasing < 1e-4
    assert r.pvalue_increasing > 0.99
    assert r.low_slope <= r.slope <= r.high_slope
    assert r.n == 20


def test_trend_of_a_clean_increasing_line_is_positive():
    x = np.arange(0.0, 30.0, 2.0)
    r = trend_test(x, 3.0 * x - 1.0)
    assert r.slope == pytest.approx(3.0)
    assert r.statistic > 0
    assert r.pvalue_increasing < 1e-3


def test_strong_trend_under_noise_is_significant():
    rng = np.random.default_rng(1)
    x = np.arange(40.0)
    r = trend_test(x, -0.05 * x + rng.normal(0, 0.1, x.size))
    assert r.pvalue < 0.001
    assert r.low_slope < -0.03 and r.high_slope < 0


def test_pure_noise_is_rarely_significant():
    """For white noise the test holds its level: about 5% rejections at alpha=0.05."""
    rng = np.random.default_rng(2)
    x = np.arange(30.0)
    pvalues = np.array([trend_test(x, rng.normal(size=x.size)).pvalue for _ in range(300)])
    assert np.mean(pvalues < 0.05) < 0.09
    assert np.median(pvalues) > 0.3


@pytest.mark.parametrize("seed", range(5))
def test_sen_slope_equals_scipy_theilslopes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    x = np.cumsum(rng.uniform(0.5, 3.0, n))
    y = rng.normal(size=n) + rng.normal() * x
    r = trend_test(x, y)
    assert r.slope == pytest.approx(stats.theilslopes(y, x).slope, rel=1e-12, abs=1e-12)


def test_trend_slope_interval_contains_the_true_slope_usually():
    rng = np.random.default_rng(3)
    x = np.arange(30.0)
    hits = 0
    for _ in range(200):
        r = trend_test(x, 0.1 * x + rng.normal(size=x.size), confidence=0.9)
        hits += r.low_slope <= 0.1 <= r.high_slope
    assert hits / 200 > 0.8


def test_slope_interval_of_a_short_window_holds_the_level_the_repeated_looks_need():
    """A window of 6 checks after a drop of the rate, AR(1) noise, the 99.9% interval that
    alpha spending asks for: the normal quantile made the least-squares floor far too narrow
    (1.4% of windows missed the true slope, 14 times the nominal 0.1%); Student's t with n - 2
    degrees of freedom, on the autocorrelation-inflated variance, holds the level."""
    rng = np.random.default_rng(11)
    x = np.arange(6.0)
    phi, n_windows, missed = 0.6, 4000, 0
    for _ in range(n_windows):
        noise = _ar1(x.size, phi, rng) * np.sqrt(1 - phi ** 2)
        r = trend_test(x, -0.01 * x + noise, confidence=0.999, autocorrelation=phi)
        missed += not r.low_slope <= -0.01 <= r.high_slope
    assert missed / n_windows <= 0.004


def test_autocorrelation_correction_inflates_variance_for_ar1_noise():
    rng = np.random.default_rng(4)
    x = np.arange(60.0)
    r = trend_test(x, _ar1(x.size, 0.8, rng))
    assert r.autocorrelation > 0.3
    assert r.variance_inflation > 1.5


def test_autocorrelation_correction_makes_flat_ar1_noise_less_often_significant():
    """Plain Mann-Kendall (Kendall's tau against time) rejects a flat AR(1) series far too often;
    the corrected test rejects it less often."""
    rng = np.random.default_rng(5)
    x = np.arange(50.0)
    corrected = plain = 0
    for _ in range(150):
        y = _ar1(x.size, 0.7, rng)
        corrected += trend_test(x, y).pvalue < 0.05
        plain += stats.kendalltau(x, y, method="asymptotic").pvalue < 0.05
    assert plain / 150 > 0.2  # the problem the correction addresses
    assert corrected < plain
    assert corrected / 150 < 0.15


def test_trend_with_fewer_than_three_points_is_not_significant():
    r = trend_test(np.array([1.0, 2.0]), np.array([5.0, 1.0]))
    assert r.pvalue == 1.0
    assert r.low_slope == -np.inf and r.high_slope == np.inf


def test_trend_of_a_constant_series_is_flat_and_not_significant():
    x = np.arange(10.0)
    r = trend_test(x, np.full(10, 0.25))
    assert r.slope == 0.0
    assert r.pvalue == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_rank_sum_test_agrees_with_scipy_mannwhitneyu_with_ties(seed):
    rng = np.random.default_rng(seed)
    later = rng.integers(0, 6, int(rng.integers(3, 10))).astype(float)
    earlier = rng.integers(0, 5, int(rng.integers(3, 10))).astype(float)
    u, p = rank_sum_test(later, earlier)
    ref = stats.mannwhitneyu(later, earlier, alternative="greater", method="asymptotic")
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_rank_sum_test_agrees_with_scipy_without_ties():
    rng = np.random.default_rng(20)
    later, earlier = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 1.0, 5)
    u, p = rank_sum_test(later, earlier)
    ref = stats.mannwhitneyu(later, earlier, alternative="greater", method="asymptotic")
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_rank_sum_test_is_one_sided():
    low, high = np.arange(5.0), np.arange(10.0, 15.0)
    assert rank_sum_test(high, low)[1] < 0.01
    assert rank_sum_test(low, high)[1] > 0.99


def test_noise_scale_estimates_the_noise_sd_on_a_trending_curve():
    rng = np.random.default_rng(6)
    x = np.arange(400.0)
    y = 1.0 / np.sqrt(x + 1) + rng.normal(0, 0.1, x.size)
    assert noise_scale(y) == pytest.approx(0.1, rel=0.15)


def test_noise_scale_ignores_a_single_jump():
    rng = np.random.default_rng(7)
    y = rng.normal(0, 0.01, 200)
    jumped = y.copy()
    jumped[100:] -= 5.0  # a learning-rate drop
    assert noise_scale(jumped) == pytest.approx(noise_scale(y), rel=0.1)


def test_noise_scale_of_a_smooth_line_is_zero():
    assert noise_scale(np.linspace(1.0, 0.0, 50)) == pytest.approx(0.0, abs=1e-12)


def test_noise_scale_scales_with_the_metric():
    rng = np.random.default_rng(8)
    y = rng.normal(size=50)
    assert noise_scale(7.0 * y - 3.0) == pytest.approx(7.0 * noise_scale(y))
