"""Each detector on constructed curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advisor.detectors import (
    PlateauState,
    detect_divergence,
    detect_overfitting,
    detect_plateau,
    fit_learning_curve,
    read_schedule,
)
from advisor.detectors._stats import noise_scale

# ---------------------------------------------------------------------------- plateau


def test_flat_noisy_curve_is_a_plateau():
    rng = np.random.default_rng(0)
    x = np.arange(1.0, 31.0)
    y = 1.0 + rng.normal(0, 0.01, x.size)
    r = detect_plateau(x, y, tolerance=0.01, horizon=10)
    assert r.state is PlateauState.PLATEAU
    assert r.projected_gain_high <= r.tolerance
    assert (r.window_start, r.window_end) == (1.0, 30.0)


def test_steep_clean_decreasing_line_with_long_horizon_is_improving():
    x = np.arange(1.0, 21.0)
    r = detect_plateau(x, 10.0 - x, tolerance=1.0, horizon=100)
    assert r.state is PlateauState.IMPROVING
    assert r.projected_gain == pytest.approx(100.0)
    assert r.trend.slope == pytest.approx(-1.0)


def test_larger_tolerance_turns_a_slow_improvement_into_a_plateau():
    rng = np.random.default_rng(1)
    x = np.arange(1.0, 31.0)
    y = 1.0 - 0.002 * x + rng.normal(0, 0.005, x.size)
    small = detect_plateau(x, y, tolerance=0.005, horizon=50)
    large = detect_plateau(x, y, tolerance=0.5, horizon=50)
    assert small.state is PlateauState.IMPROVING
    assert large.state is PlateauState.PLATEAU
    assert small.trend == large.trend  # same data, same statistics


def test_longer_horizon_makes_a_flat_noisy_curve_worth_continuing():
    """The optimistic slope times a long budget can still be worth the tolerance."""
    rng = np.random.default_rng(0)
    x = np.arange(1.0, 31.0)
    y = 1.0 + rng.normal(0, 0.01, x.size)
    short = detect_plateau(x, y, tolerance=0.01, horizon=10)
    long = detect_plateau(x, y, tolerance=0.01, horizon=1000)
    assert short.state is PlateauState.PLATEAU
    assert long.state is not PlateauState.PLATEAU
    assert long.projected_gain_high > short.projected_gain_high


def test_asking_for_more_confidence_never_turns_a_window_into_a_plateau():
    """The stop must get harder as the confidence rises (alpha spending raises it at every
    look). The projection of a falling window used to switch from the linear one to the
    deceleration model when a wider interval reached zero, so a 99.9% interval called plateaus
    that the 90% one did not (52 of 3,000 random windows)."""
    rng = np.random.default_rng(0)
    for _ in range(600):
        n = int(rng.integers(6, 30))
        x = np.arange(float(n))
        y = 1.0 - rng.uniform(0, 0.004) * x + rng.normal(0, rng.uniform(0.001, 0.01), n)
        kw = dict(tolerance=0.01, horizon=float(rng.uniform(2, 20)),
                  steps_left=float(rng.uniform(20, 60)))
        loose = detect_plateau(x, y, confidence=0.9, **kw)
        strict = detect_plateau(x, y, confidence=0.999, **kw)
        assert strict.projected_gain_high >= loose.projected_gain_high
        if strict.state is PlateauState.PLATEAU:
            assert loose.state is PlateauState.PLATEAU


def test_window_means_use_every_check_of_a_thinned_window():
    from advisor.detectors.plateau import adaptive_window, block_autocorrelation, window_means

    x = np.arange(1.0, 1001.0)
    y = np.random.default_rng(0).normal(size=x.size)
    idx = adaptive_window(x.size, 0.35, 6, 48)
    xb, yb, blocked = window_means(x, y, idx)
    assert blocked and xb.size == idx.size == 48
    span = int(idx[-1] - idx[0] + 1)  # 350 checks in 48 consecutive blocks of 7 or 8
    assert np.all(np.diff(xb) > 0) and x[idx[0]] < xb[0] and xb[-1] < x[idx[-1]]
    # each point is the mean of its block: unit noise averaged over ~7 checks, not one check
    assert np.var(yb) == pytest.approx(48 / span, rel=0.5)
    line_x, line_y, _ = window_means(x, 2.0 * x + 1.0, idx)
    assert np.allclose(line_y, 2.0 * line_x + 1.0)  # a line's block means lie on the line
    # a window that kept every check is passed as it is
    short = adaptive_window(100, 0.35, 6, 48)
    xs, ys, blocked = window_means(x, y, short)
    assert not blocked and np.array_equal(ys, y[short])
    # averaging AR(1) noise in blocks of 8 leaves a lag-1 autocorrelation of ~0.15 (phi 0.6)
    rng = np.random.default_rng(1)
    e = rng.normal(size=200_000)
    for i in range(1, e.size):
        e[i] = 0.6 * e[i - 1] + e[i]
    means = e.reshape(-1, 8).mean(axis=1)
    assert np.corrcoef(means[:-1], means[1:])[0, 1] == pytest.approx(
        block_autocorrelation(0.6, 8), abs=0.01)


def test_rising_curve_is_not_improving():
    x = np.arange(1.0, 21.0)
    r = detect_plateau(x, 0.5 + 0.01 * x, tolerance=0.01, horizon=100)
    assert r.state is PlateauState.PLATEAU
    assert r.projected_gain == 0.0


# ---------------------------------------------------------------------------- overfitting


def _u_shape(n=40, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, n + 1)
    return x, 0.5 + 0.002 * (x - 20) ** 2 + rng.normal(0, noise, x.size)


def test_u_shaped_validation_with_decreasing_train_is_overfitting_near_the_minimum():
    x, val = _u_shape()
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val), train_values=1 / np.sqrt(x))
    assert r.overfitting
    assert abs(x[r.best_index] - 20) <= 3
    assert r.gap > r.tolerance
    assert r.pvalue < 0.05
    assert r.train_improving is True


def test_monotone_decreasing_validation_is_not_overfitting():
    rng = np.random.default_rng(2)
    x = np.arange(1.0, 41.0)
    val = 1 / np.sqrt(x) + rng.normal(0, 0.005, x.size)
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val), train_values=1 / x)
    assert not r.overfitting


def test_validation_rising_with_training_rising_is_instability_not_overfitting():
    x, val = _u_shape(seed=3)
    train = val - 0.1  # training gets worse together with validation
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val), train_values=train)
    assert not r.overfitting
    assert r.train_trend is not None and r.train_trend.pvalue_increasing < 0.05


def test_overfitting_is_detected_from_validation_alone():
    x, val = _u_shape(seed=4)
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val))
    assert r.overfitting
    assert abs(x[r.best_index] - 20) <= 3
    assert r.train_trend is None and r.train_improving is None
    assert math.isnan(r.progress_quotient)


def test_a_rise_smaller_than_the_tolerance_is_not_overfitting():
    x, val = _u_shape(noise=0.0)
    r = detect_overfitting(x, val, tolerance=10.0, train_values=1 / x)
    assert not r.overfitting


def test_prechelt_gl_and_pq_follow_their_definitions():
    x, val = _u_shape(noise=0.0)  # best exactly 0.5 at x=20, latest 0.5 + 0.002 * 400 = 1.3
    train = 1 / np.sqrt(x)
    r = detect_overfitting(x, val, tolerance=0.01, train_values=train)
    assert r.overfitting
    assert r.generalization_loss == pytest.approx(100 * (1.3 / 0.5 - 1))
    strip = train[-5:]
    progress = 1000 * (strip.mean() / strip.min() - 1)
    assert r.progress_quotient == pytest.approx(r.generalization_loss / progress)


def _flat_after_best(seed=5, n=40, best=20):
    """Validation that falls to x=20, then drifts up far less than its noise can show."""
    rng = np.random.default_rng(seed)
    x = np.arange(1.0, n + 1)
    val = 0.5 + np.where(x < best, 0.02 * (best - x), 0.0003 * (x - best))
    val = val + rng.normal(0, 0.004, x.size)
    return x, val


def test_validation_that_merely_stalls_while_training_improves_is_not_overfitting():
    """A noisy stall after the best (the onset rule of old stopped these, like patience on a
    smoothed curve, and cost runs whose validation improved again) is the plateau test's to
    judge, on dropout-like noise and on AR(1) noise alike."""
    x, val = _flat_after_best()
    tol = 2 * noise_scale(val)
    r = detect_overfitting(x, val, tolerance=tol, train_values=1 / np.sqrt(x), stall_points=10)
    assert not r.overfitting and not r.onset
    assert r.train_improving is True
    false = 0
    for seed in range(200):  # flat validation, AR(1) noise phi = 0.6, training improving
        e = np.random.default_rng(seed).normal(0, 1, 60)
        for i in range(1, 60):
            e[i] = 0.6 * e[i - 1] + 0.8 * e[i]
        xs = np.arange(1.0, 61.0)
        flat = 0.5 + 0.01 * e
        out = detect_overfitting(xs, flat, tolerance=0.005, train_values=1 / np.sqrt(xs),
                                 stall_points=10)
        false += out.overfitting
    # alpha = 0.01 at one look and the effect must matter; the AR(1) correction is rough on a
    # segment of ~40 checks: 2.5% of these flat runs are read as rising
    assert false / 200 <= 0.03


def test_rising_validation_while_training_falls_is_overfitting_with_its_effect():
    x, val = _u_shape()
    r = detect_overfitting(x, val, tolerance=0.01, train_values=1 / np.sqrt(x), stall_points=10)
    assert r.overfitting
    assert r.rise.pvalue_increasing < 0.01 and r.rise.low_slope > 0
    assert r.rise_size > r.tolerance and r.gap > r.tolerance
    # the same rise smaller than the tolerance is not overfitting (no effect that matters)
    small = detect_overfitting(x, val, tolerance=1.0, train_values=1 / np.sqrt(x),
                               stall_points=10)
    assert not small.overfitting
    # nor when training rises too: the run is unstable
    unstable = detect_overfitting(x, val, tolerance=0.01, train_values=val - 0.1,
                                  stall_points=10)
    assert not unstable.overfitting


def test_flat_validation_with_flat_training_is_not_the_onset_of_overfitting():
    # both curves stalled (a plateau, perhaps at a high learning rate): not overfitting
    x, val = _flat_after_best(seed=6)
    train = np.where(x < 20, 0.4 + 0.02 * (20 - x), 0.4)
    train = train + np.random.default_rng(7).normal(0, 0.004, x.size)
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val), train_values=train,
                           stall_points=10)
    assert not r.overfitting and not r.onset


def test_validation_still_falling_while_training_improves_is_not_the_onset():
    rng = np.random.default_rng(8)
    x = np.arange(1.0, 41.0)
    val = 0.5 + 0.3 * x ** -0.5 + rng.normal(0, 0.004, x.size)
    r = detect_overfitting(x, val, tolerance=2 * noise_scale(val), train_values=1 / x,
                           stall_points=10)
    assert not r.overfitting


def test_too_few_checks_after_the_best_is_not_overfitting():
    x = np.arange(1.0, 11.0)
    val = np.r_[np.linspace(1.0, 0.5, 8), 0.9, 1.2]
    assert not detect_overfitting(x, val, tolerance=0.01).overfitting


# ---------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_latest_value_is_divergence(bad):
    r = detect_divergence(np.array([1.0, 0.8, 0.7, bad]), scale=0.3, best=0.7)
    assert r.diverged
    assert r.kind == "non-finite"
    assert r.checks == 1


def test_consecutive_non_finite_values_are_counted():
    r = detect_divergence(np.array([0.7, math.nan, math.inf, math.nan]), scale=0.3, best=0.7)
    assert r.diverged and r.kind == "non-finite" and r.checks == 3


def test_jump_to_huge_values_for_two_checks_is_a_blow_up():
    r = detect_divergence(np.array([0.8, 0.6, 1e6, 1e6]), scale=0.4, best=0.6)
    assert r.diverged
    assert r.kind == "blow-up"
    assert r.checks == 2
    assert r.threshold == pytest.approx(0.6 + 3 * 0.4)


def test_single_spike_then_back_to_normal_is_not_divergence():
    r = detect_divergence(np.array([0.8, 0.6, 1e6, 0.6]), scale=0.4, best=0.6)
    assert not r.diverged
    assert r.kind == ""


def test_single_spike_at_the_latest_check_is_not_yet_divergence():
    r = detect_divergence(np.array([0.8, 0.7, 0.6, 1e6]), scale=0.4, best=0.6)
    assert not r.diverged


def test_values_within_the_blow_up_threshold_are_not_divergence():
    r = detect_divergence(np.array([0.8, 0.6, 1.5, 1.6]), scale=0.4, best=0.6)
    assert not r.diverged


# ---------------------------------------------------------------------------- forecast


def _power_law(x, c=0.2, a=1.5, alpha=0.7):
    return c + a * x ** -alpha


def test_forecast_of_an_exact_power_law_is_close_to_the_truth_and_inside_its_interval():
    x = np.arange(1.0, 31.0)
    y = _power_law(x)
    fit = fit_learning_curve(x, y)
    assert fit is not None
    r = fit.predict(60.0, level=0.9)
    truth = _power_law(60.0)
    assert abs(r.value - truth) < 0.02 * (y.max() - y.min())
    assert r.low <= truth <= r.high
    assert r.low <= r.value <= r.high
    assert r.step == 60.0


def test_forecast_interval_widens_for_a_farther_step():
    x = np.arange(1.0, 31.0)
    rng = np.random.default_rng(0)
    y = _power_law(x) + rng.normal(0, 0.005, x.size)
    fit = fit_learning_curve(x, y, noise=0.005)
    near, far = fit.predict(40.0), fit.predict(200.0)
    assert far.high - far.low > near.high - near.low


def test_forecast_interval_widens_with_its_level():
    x = np.arange(1.0, 31.0)
    fit = fit_learning_curve(x, _power_law(x), noise=0.01)
    narrow, wide = fit.predict(60.0, level=0.5), fit.predict(60.0, level=0.95)
    assert wide.high - wide.low > narrow.high - narrow.low
    assert wide.value == pytest.approx(narrow.value)


def test_forecast_is_invariant_to_affine_rescaling_of_the_metric():
    """Exactly, while the forecast keeps the curve's sign (then it is the linear fit's); and
    always for a positive factor (the log-space fit shifts by its log)."""
    x = np.arange(1.0, 31.0)
    rng = np.random.default_rng(1)
    y = _power_law(x) + 1.0 + rng.normal(0, 0.01, x.size)
    p = fit_learning_curve(x, y, noise=0.01).predict(80.0)
    q = fit_learning_curve(x, 3 * y + 7, noise=0.03).predict(80.0)
    assert p.low > 0 and q.low > 0
    assert q.value == pytest.approx(3 * p.value + 7, rel=1e-9)
    assert q.low == pytest.approx(3 * p.low + 7, rel=1e-9)
    assert q.high == pytest.approx(3 * p.high + 7, rel=1e-9)
    y = y - 1.0  # its linear forecast at 80 would reach below zero: the log-space one
    p = fit_learning_curve(x, y, noise=0.01).predict(80.0)
    q = fit_learning_curve(x, 3 * y, noise=0.03).predict(80.0)
    assert p.models[0].startswith("log-") and p.low > 0
    for a, b in ((q.value, p.value), (q.low, p.low), (q.high, p.high)):
        assert a == pytest.approx(3 * b, rel=1e-9)


def test_forecast_needs_five_points():
    x = np.arange(1.0, 5.0)
    assert fit_learning_curve(x, _power_law(x)) is None


# ---------------------------------------------------------------------------- schedule


def test_no_learning_rate_means_an_unknown_schedule():
    s = read_schedule(None)
    assert not s.known
    assert not s.decay_pending and not s.warming_up
    assert "unknown" in s.describe()


def test_constant_learning_rate_is_constant_with_no_decay_pending():
    s = read_schedule(np.full(20, 0.1))
    assert s.constant and not s.known  # a rate that has not changed yet says nothing ahead
    assert read_schedule(np.full(20, 0.1), planned=True).known  # a plan's constant rate does
    assert not s.decay_pending and not s.warming_up
    assert s.phase_start == 0 and s.drops == 0


def test_step_drop_starts_a_new_phase_after_the_drop():
    lr = np.r_[np.full(10, 0.1), np.full(10, 0.01)]
    s = read_schedule(lr)
    assert s.phase_start == 10
    assert s.drops == 1
    assert s.current == pytest.approx(0.01) and s.peak == pytest.approx(0.1)


def test_two_step_drops_start_the_phase_after_the_last():
    lr = np.r_[np.full(10, 0.1), np.full(8, 0.01), np.full(5, 0.001)]
    s = read_schedule(lr)
    assert s.phase_start == 18 and s.drops == 2


def test_smooth_cosine_decay_at_half_way_has_a_decay_pending():
    t = np.arange(50)
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 100))  # half of a 100-step cosine
    s = read_schedule(lr)
    assert s.decay_pending
    assert s.drops == 0 and s.phase_start == 0
    assert not s.constant and not s.warming_up


def test_cosine_decay_near_its_end_has_no_decay_pending():
    t = np.arange(98)
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 100))
    s = read_schedule(lr)
    assert s.current < 0.1 * s.peak
    assert not s.decay_pending


def test_slow_exponential_decay_past_the_first_quarter_has_no_decay_pending():
    # ExponentialLR(gamma=0.998) over a 200-check budget: 0.67x its peak at the end; a plateau
    # under it is not going to be broken by the decay
    t = np.arange(1.0, 101.0)
    lr = 0.1 * 0.998 ** t
    assert read_schedule(lr).decay_pending  # without a budget: any active decay may matter
    s = read_schedule(lr, steps=t, max_steps=200)
    assert not s.decay_pending
    early = read_schedule(lr[:30], steps=t[:30], max_steps=200)
    assert early.decay_pending  # in the first quarter of the budget: assumed ahead


def test_cosine_and_linear_decays_past_the_first_quarter_have_a_decay_pending():
    t = np.arange(1.0, 41.0)
    cosine = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 100))
    assert read_schedule(cosine, steps=t, max_steps=100).decay_pending
    linear = 0.1 * (1 - t / 100)
    assert read_schedule(linear, steps=t, max_steps=100).decay_pending
    fast = 0.1 * 0.97 ** t  # 0.97 ** 60 = 0.16 more to come
    assert read_schedule(fast, steps=t, max_steps=100).decay_pending


def test_step_schedule_after_a_drop_keeps_its_next_drop_pending():
    # MultiStepLR: flat at half the peak after one drop; the flat pace says nothing of the next
    t = np.arange(1.0, 61.0)
    lr = np.where(t < 30, 0.1, 0.05)
    s = read_schedule(lr, steps=t, max_steps=100)
    assert s.drops == 1 and s.decay_pending


def test_increasing_learning_rate_is_warming_up():
    s = read_schedule(np.linspace(0.001, 0.1, 10))
    assert s.warming_up
    assert "warming up" in s.describe()


def test_missing_learning_rate_checks_are_skipped():
    lr = np.r_[np.full(5, 0.1), np.nan, np.full(5, 0.01)]
    s = read_schedule(lr)
    assert s.phase_start == 6  # index of the first check logged after the drop


def test_metric_resolution_reads_the_quantum_of_a_quantized_metric_only():
    from advisor.detectors import metric_resolution

    acc = np.array([20, 24, 27, 29, 30, 30, 31, 31]) / 36.0
    assert metric_resolution(acc) == pytest.approx(1 / 36)
    loss = 1.0 / np.sqrt(np.arange(1.0, 30.0))  # a float loss never repeats exactly
    assert metric_resolution(loss) == 0.0
    assert metric_resolution(np.full(10, 0.5)) == 0.0  # one level: no quantum seen


def test_a_continuous_loss_that_stops_changing_is_not_read_as_quantized():
    from advisor.detectors import metric_resolution

    # a dead network repeats its last loss exactly; its earlier values are on no lattice
    loss = np.r_[1.0, 0.6173, 0.4519, 0.3388, np.full(20, 0.2845)]
    assert metric_resolution(loss) == 0.0
    # float32 accuracies on 359 samples whose smallest gap seen is one sample: gaps of up to
    # 73 samples still line up on 1/359 (float32 rounding of the smallest gap is not enough
    # to push them off), and a smallest gap of three samples still gives the one-sample quantum
    counts = np.array([40, 73, 125, 198, 199, 217, 235, 246, 251, 261, 261, 262, 262])
    acc = (counts / 359).astype(np.float32).astype(float)
    assert metric_resolution(acc) == pytest.approx(1 / 359, rel=1e-5)
    coarse = np.array([0.5, 0.76, 0.86, 0.89, 0.92, 0.92, 0.92])
    assert metric_resolution(coarse) == pytest.approx(0.01)
    thirds = np.array([22, 98, 129, 139, 142, 145, 145]) / 300
    assert metric_resolution(thirds) == pytest.approx(1 / 300)


def test_the_gain_reported_is_projected_as_far_as_its_optimistic_end():
    x = np.arange(1.0, 16.0)
    y = 0.3 + np.exp(-x / 6)  # still falling significantly at the budget's end
    for left in (2.0, 0.0):
        r = detect_plateau(x[-6:], y[-6:], tolerance=0.004, horizon=6.0, steps_left=left)
        assert r.state is PlateauState.IMPROVING  # judged over the horizon: still improving
        assert r.projected_gain <= r.projected_gain_high
    assert r.projected_gain == r.projected_gain_high == 0.0  # nothing left to gain


def test_a_tied_window_of_a_quantized_metric_is_not_flat_by_its_interval_alone():
    x = np.arange(1.0, 9.0)
    y = np.full(8, -32 / 36)
    tied = detect_plateau(x, y, tolerance=0.009, horizon=40)
    assert tied.state is PlateauState.PLATEAU  # a continuous metric this flat is flat
    quantized = detect_plateau(x, y, tolerance=0.009, horizon=40, resolution=1 / 36)
    assert quantized.state is not PlateauState.PLATEAU
    # one sample (1/36) is more than the tolerance: what the ties may hide is a chance of one
    # more sample (a quantum per 7 steps, over 40 steps: certain), not a gain to weigh
    assert quantized.jump_chance == 1.0 and quantized.projected_gain_high == 0.0
    fine = detect_plateau(x, y, tolerance=0.009, horizon=40, resolution=0.005)
    assert fine.state is not PlateauState.PLATEAU and fine.jump_chance == 0.0
    assert fine.projected_gain_high == pytest.approx(0.005 / 7 * 40)


def test_a_quantum_larger_than_the_tolerance_stops_only_when_one_more_is_unlikely():
    """Accuracy on 50 validation samples (a quantum of 0.02 against a 1% tolerance of 0.0042)
    sat on one level for 135 checks: the drift its ties may hide, projected over the 16 checks
    left, is 0.0024, below the tolerance (until session 15 that was a plateau), but the checks
    gain a whole sample or nothing, and the chance of one more by the budget's end is about
    16/135: not a plateau at a 99.99% level. A metric as flat with a finer quantum is one; and
    with half a hundredth of a check left, so is this one."""
    q, tol = 0.02, 0.0042
    x = np.arange(250.0, 385.0)
    y = np.full(x.size, -0.42)
    kw = {"tolerance": tol, "confidence": 0.9999}
    waiting = detect_plateau(x, y, horizon=16, resolution=q, steps_left=16, **kw)
    assert waiting.state is not PlateauState.PLATEAU
    assert waiting.jump_chance == pytest.approx(16 / 134)
    assert waiting.projected_gain_high < 1e-12  # the ties show no slope; the chance is the risk
    fine = detect_plateau(x, y, horizon=16, resolution=0.002, steps_left=16, **kw)
    assert fine.state is PlateauState.PLATEAU and fine.jump_chance == 0.0
    near_end = detect_plateau(x, y, horizon=0.005, resolution=q, steps_left=0.005, **kw)
    assert near_end.state is PlateauState.PLATEAU and near_end.jump_chance < 5e-5


def test_noise_that_dithers_a_quantized_metric_hides_no_slope():
    from advisor.detectors import hidden_change
    from advisor.detectors._stats import trend_test

    # accuracy on 36 samples drifting up one sample over 40 checks, with noise of half a sample
    # before the rounding: most pairwise slopes are tied at 0, yet the slope interval must still
    # cover the drift (Theil-Sen's alone covered it in about half the seeds)
    q, x = 1 / 36, np.arange(1.0, 41.0)
    level = 0.8 + q * x / x.size
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(300):
        t = trend_test(x, np.round((level + rng.normal(0, q / 2, x.size)) / q) * q, 0.9, 0.0)
        covered.append(t.low_slope <= q / x.size <= t.high_slope)
    assert np.mean(covered) >= 0.85
    # so such a window is judged on its slope interval alone, while a window of tied checks
    # still adds the quantum it may hide
    y = np.round((0.8 + rng.normal(0, q / 2, x.size)) / q) * q
    dithered = detect_plateau(x, -y, tolerance=0.009, horizon=40, resolution=q)
    plain = detect_plateau(x, -y, tolerance=0.009, horizon=40)
    assert dithered.hidden < 0.01 * q
    assert dithered.projected_gain_high == pytest.approx(plain.projected_gain_high, rel=1e-3)
    tied = detect_plateau(x, np.full(x.size, -0.8), tolerance=0.009, horizon=40, resolution=q)
    assert tied.hidden == pytest.approx(q) == hidden_change(q, 0.0)


def test_conformal_interval_is_the_forecast_moved_by_the_calibrated_score_quantiles():
    from advisor.detectors.forecast import (
        CONFORMAL_QUANTILES,
        conformal_interval,
        conformal_score,
    )

    value, scale = 0.30, 0.05
    for ahead in ("none", "decay", "restart"):
        share, q_low, q_high = (column[4] for column in CONFORMAL_QUANTILES[ahead])
        low, high = conformal_interval(value, scale, share, ahead)
        assert 0 < low < value < high  # a positive loss keeps a positive interval
        # the bounds are exactly the truths that score at the quantiles
        assert conformal_score(low, value, scale) == pytest.approx(q_low)
        assert conformal_score(high, value, scale) == pytest.approx(q_high)
    # between calibrated shares the quantiles are interpolated, beyond them held
    a = conformal_interval(value, scale, 0.45, "decay")
    b, c = conformal_interval(value, scale, 0.4, "decay"), conformal_interval(value, scale, 0.5,
                                                                              "decay")
    assert min(b[0], c[0]) <= a[0] <= max(b[0], c[0])
    assert conformal_interval(value, scale, 0.99, "none") == conformal_interval(value, scale,
                                                                               0.9, "none")
    # an accuracy in the loss-like orientation (negative values) keeps its sign too
    low, high = conformal_interval(-0.8, 0.05, 0.5, "none")
    assert low < -0.8 < high < 0
    assert conformal_interval(0.3, 0.0, 0.5) is None  # no scale, no interval
    assert math.isnan(conformal_score(0.3, 0.3, 0.0))


def test_the_combined_forecast_trusts_the_models_change_less_as_the_budget_runs_out():
    from advisor.detectors.forecast import combined_forecast

    # a loss at 0.5 now, forecast by the curve models at 0.3 at the end of the budget
    assert combined_forecast(0.3, level=0.5, progress=0.0) == pytest.approx(0.4)  # half-way
    assert combined_forecast(0.3, level=0.5, progress=0.6) == pytest.approx(0.46)
    assert combined_forecast(0.3, level=0.5, progress=1.0) == pytest.approx(0.5)  # the level
    assert combined_forecast(0.3, level=0.5, progress=1.7) == pytest.approx(0.5)  # past the end
    # an accuracy (negated, loss-like) moves the same way
    assert combined_forecast(-0.9, level=-0.8, progress=0.5) == pytest.approx(-0.825)
    # kept within the interval it is read with (calibrated around the models' value)
    assert combined_forecast(0.3, level=0.5, progress=0.2, interval=(0.25, 0.35)) == 0.35
    assert combined_forecast(0.3, level=0.5, progress=0.2, interval=(0.2, 0.45)) \
        == pytest.approx(0.42)


def test_a_plan_says_what_it_still_holds():
    from advisor import LrPlan

    step = LrPlan.from_mapping({1: 0.1, 50: 0.01})
    assert step.ahead(10, 100) == "decay" and step.ahead(60, 100) == "none"
    assert step.ahead(10, 40) == "none"  # the drop lies beyond the budget
    restarts = LrPlan.from_mapping({1: 0.1, 20: 0.001, 21: 0.1, 40: 0.001})
    assert restarts.ahead(5, 50) == "restart" and restarts.ahead(25, 50) == "decay"
    cosine_to_zero = LrPlan.from_mapping({float(e): 0.05 * (1 + np.cos(np.pi * e / 50))
                                          for e in range(1, 51)})
    assert cosine_to_zero.ahead(10, 50) == "decay"
