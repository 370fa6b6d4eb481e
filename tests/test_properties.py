"""Properties over generated curves: direction symmetry, scale invariance, robustness."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
from conftest import curves, feed, first_stop
from hypothesis import example, given, settings
from hypothesis import strategies as st

from advisor import Advice, Advisor, Verdict


def _stop_step(advices):
    stop = first_stop(advices)
    return None if stop is None else stop.step


@settings(max_examples=25, deadline=None)
@given(curves())
def test_mode_max_on_negated_metric_mirrors_mode_min(curve):
    y, max_steps = curve
    low = feed(Advisor("m", "min", max_steps=max_steps), y)
    high = feed(Advisor("m", "max", max_steps=max_steps), -y)
    assert [a.verdict for a in high] == [a.verdict for a in low]
    assert _stop_step(high) == _stop_step(low)
    for a, b in zip(low, high, strict=True):
        assert b.best_step == a.best_step
        assert b.best_value == -a.best_value
        assert b.suggested_stop_step == a.suggested_stop_step
        assert (a.forecast is None) == (b.forecast is None)
        if a.forecast is not None:
            assert b.forecast.value == -a.forecast.value
            assert (b.forecast.low, b.forecast.high) == (-a.forecast.high, -a.forecast.low)
            assert b.expected_gain == a.expected_gain


@settings(max_examples=30, deadline=None)
@given(curves(), st.floats(0.1, 100.0))
def test_verdicts_are_invariant_to_rescaling_the_metric(curve, a):
    """The tolerance is relative to the best value, so rescaling the metric (a loss in other
    units) changes nothing; shifting it does (1% of 0.3 is not 1% of 100.3)."""
    y, max_steps = curve
    plain = feed(Advisor(max_steps=max_steps), y)
    scaled = feed(Advisor(max_steps=max_steps), a * y)
    assert [x.verdict for x in scaled] == [x.verdict for x in plain]
    assert [x.suggested_stop_step for x in scaled] == [x.suggested_stop_step for x in plain]
    assert [x.best_step for x in scaled] == [x.best_step for x in plain]


@settings(max_examples=25, deadline=None)
@given(curves())
def test_best_is_the_best_finite_value_so_far_and_stops_match_verdicts(curve):
    y, max_steps = curve
    advices = feed(Advisor(max_steps=max_steps), y)
    for i, advice in enumerate(advices):
        seen = y[: i + 1]
        assert advice.step == i + 1
        assert advice.best_value == seen.min()
        assert advice.best_step == float(np.argmin(seen) + 1)
        assert advice.should_stop == advice.verdict.stops
        if advice.suggested_stop_step is not None:
            assert advice.suggested_stop_step <= advice.step


_any_float = st.floats(allow_nan=True, allow_infinity=True)
_awkward = st.one_of(_any_float, st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, math.nan]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_awkward, min_size=1, max_size=30), st.sampled_from(["min", "max"]),
       st.sampled_from([None, 10.0, 100.0]), st.booleans())
@example([0.0, 1.0, 2.5578718219638952e154, 0.0, 0.0], "min", 10.0, False)  # noise**2 overflowed
@example([5e-324, 0.0, -1.4565883770371662e128, 0.0, -0.0], "max", 100.0, False)  # inf in state
def test_update_never_raises_on_arbitrary_floats_and_advice_is_json_safe(values, mode,
                                                                        max_steps, with_train):
    advisor = Advisor("val_loss", mode, train_metric="train_loss" if with_train else None,
                      max_steps=max_steps, min_checks=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # none leaks, not even on 1e308
        for i, v in enumerate(values):
            metrics = {"val_loss": v, "lr": abs(v)}
            if with_train:
                metrics["train_loss"] = values[-1 - i]
            advice = advisor.update(i + 1, metrics)
            assert isinstance(advice, Advice)
            assert isinstance(advice.verdict, Verdict)
            data = advice.to_dict()
            assert json.loads(json.dumps(data, allow_nan=False)) == data
            assert advice.should_stop == advice.verdict.stops
            if not math.isfinite(v):
                assert advice.verdict is Verdict.DIVERGED
    state = advisor.state_dict()  # documented JSON-safe: strict JSON, and resumes exactly
    assert json.loads(json.dumps(state, allow_nan=False)) == state
    resumed = Advisor("val_loss", mode, train_metric="train_loss" if with_train else None,
                      max_steps=max_steps, min_checks=3)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert resumed.advice.to_dict() == advice.to_dict()


# ---------------------------------------------------------------------------- many streams
_AWKWARD = np.array([0.0, -0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324,
                     math.nan, math.inf, -math.inf, 1.0, 2.5578718219638952e154, 1e-300])
STREAMS = 10_000


def _fuzzed_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """One stream of ``n`` values: a curve (any scale from 1e-300 to 1e300, noise, trend),
    with awkward values (infinities, NaN, +-1e308, denormals, -0.0) sprinkled in, or all of it
    awkward."""
    kind = rng.integers(4)
    scale = 10.0 ** rng.integers(-300, 301)
    e = np.arange(1, n + 1)
    curve = scale * (rng.uniform(-1, 1) + rng.uniform(0, 2) * np.exp(-e / rng.uniform(0.5, 20))
                     + rng.normal(0, 10.0 ** rng.integers(-6, 1), n))
    if kind == 0:
        return curve
    if kind == 1:
        return rng.choice(_AWKWARD, n)
    mask = rng.random(n) < (0.1 if kind == 2 else 0.5)
    return np.where(mask, rng.choice(_AWKWARD, n), curve)


def _best(values: list[float], mode: str) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return None if not finite else (min(finite) if mode == "min" else max(finite))


def test_ten_thousand_fuzzed_streams_keep_every_invariant():
    """The core never raises, warns or breaks an invariant on 10,000 short streams of any
    floats (the issue's probe: 20,000 streams): the verdict and the stop agree, a non-finite
    value is a divergence, the best is the best finite value so far, the advice is strict JSON,
    and every 10th stream's state is strict JSON and resumes to the same advice."""
    rng = np.random.default_rng(20_240_614)
    updates = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning in the user's log fails too
        for index in range(STREAMS):
            n = int(rng.integers(1, 15))
            values = _fuzzed_values(rng, n)
            train = _fuzzed_values(rng, n) if rng.random() < 0.5 else None
            lr = _fuzzed_values(rng, n) if rng.random() < 0.3 else None
            mode = "min" if rng.random() < 0.5 else "max"
            max_steps = [None, float(n), 2.0 * n, 100.0][rng.integers(4)]
            settings = {"monitor": "val_loss", "mode": mode, "max_steps": max_steps,
                        "train_metric": None if train is None else "train_loss",
                        "min_checks": int(rng.integers(3, 7))}
            advisor = Advisor(**settings)
            for i in range(n):
                v = float(values[i])
                metrics = {"val_loss": v}
                if train is not None:
                    metrics["train_loss"] = train[i]  # numpy floats, as a user passes them
                if lr is not None:
                    metrics["lr"] = abs(float(lr[i]))
                advice = advisor.update(i + 1, metrics)
                updates += 1
                assert advice.step == i + 1
                assert advice.should_stop == advice.verdict.stops
                if not math.isfinite(v):
                    assert advice.verdict is Verdict.DIVERGED
                assert advice.best_value == _best([float(x) for x in values[:i + 1]], mode)
                json.dumps(advice.to_dict(), allow_nan=False)
            if index % 10 == 0:
                state = json.loads(json.dumps(advisor.state_dict(), allow_nan=False))
                resumed = Advisor(**settings)
                resumed.load_state_dict(state)
                assert resumed.advice.to_dict() == advice.to_dict()
    assert updates > 60_000
