"""Shared helpers: curve generators and a driver that feeds curves to an Advisor."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import strategies as st

from advisor import Advice, Advisor

FAMILIES = ("saturating", "power", "u_shape", "flat", "linear")


def make_curve(family: str, n: int, *, scale: float = 1.0, rate: float = 0.2,
               noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A loss-like curve of ``n`` checks (epochs 1..n) from a parametric family, plus noise.

    ``noise`` is the standard deviation of the Gaussian noise as a fraction of ``scale``.
    """
    e = np.arange(1, n + 1, dtype=float)
    if family == "saturating":
        y = 0.3 + scale * np.exp(-rate * e)
    elif family == "power":
        y = 0.2 + scale * e ** -(0.3 + 2 * rate)
    elif family == "u_shape":
        m = max(3.0, n / 2)
        y = 0.5 + scale * rate * ((e - m) / n) ** 2
    elif family == "flat":
        y = np.full(n, 0.5)
    elif family == "linear":
        y = 1.0 + scale - scale * rate * e / n
    else:
        raise ValueError(family)
    rng = np.random.default_rng(seed)
    return y + rng.normal(0.0, noise * scale, n)


@st.composite
def curves(draw, min_n: int = 8, max_n: int = 45):
    """Non-degenerate curves: a parametric family, a rate, a length, noise and a budget."""
    family = draw(st.sampled_from(FAMILIES))
    n = draw(st.integers(min_n, max_n))
    rate = draw(st.floats(0.05, 1.0))
    noise = draw(st.sampled_from([0.0, 0.001, 0.01, 0.05]))
    seed = draw(st.integers(0, 2**16))
    budget = draw(st.sampled_from([None, 1.0, 1.5, 3.0]))
    y = make_curve(family, n, rate=rate, noise=noise, seed=seed)
    max_steps = None if budget is None else float(math.ceil(budget * n))
    return y, max_steps


def feed(advisor: Advisor, values: Sequence[float], steps: Sequence[float] | None = None,
         extra: Mapping[str, Sequence[float]] | None = None,
         stop: bool = False) -> list[Advice]:
    """Feed ``values`` of the advisor's monitor (and ``extra`` metrics) check by check.

    Returns every advice; with ``stop``, stops after the first advice that says to stop.
    """
    steps = range(1, len(values) + 1) if steps is None else steps
    out = []
    for i, (step, value) in enumerate(zip(steps, values, strict=True)):
        metrics = {advisor.monitor: value}
        if extra:
            metrics.update({name: column[i] for name, column in extra.items()})
        advice = advisor.update(step, metrics)
        out.append(advice)
        if stop and advice.should_stop:
            break
    return out


def first_stop(advices: Sequence[Advice]) -> Advice | None:
    return next((a for a in advices if a.should_stop), None)


@pytest.fixture
def saturating_curve() -> np.ndarray:
    """0.3 + exp(-e/4) for epochs 1..60: saturates within about 30 epochs."""
    e = np.arange(1, 61, dtype=float)
    return 0.3 + np.exp(-e / 4)
