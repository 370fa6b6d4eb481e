"""Self-check of the anchor rules and oracles on constructed curves.

Run ``python -m benchmarks._selfcheck`` (or ``python -m benchmarks.stopping --selfcheck``).
"""

from __future__ import annotations

import math
import sys

import numpy as np

if __package__ in (None, ""):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._rules import (  # noqa: E402
    GeneralizationLoss,
    LightningEarlyStopping,
    OnlineRule,
    ProgressQuotient,
    TrialPlateau,
    UpStrips,
    kept_best,
    oracle_best_index,
    oracle_within_index,
    relative_regret,
)


def first_stop(rule: OnlineRule, values: list[float], train: list[float] | None = None) -> int:
    """1-based evaluation where ``rule`` stops, or len(values) if it never does."""
    train = train or [math.nan] * len(values)
    for i, (v, t) in enumerate(zip(values, train, strict=True)):
        if rule.update(float(i + 1), v, t):
            return i + 1
    return len(values)


def check() -> list[str]:
    """Return a list of failures (empty when every check passes)."""
    fails: list[str] = []

    def expect(what: str, got: object, want: object) -> None:
        if got != want:
            fails.append(f"{what}: got {got}, want {want}")

    es = lambda p, mode="min": LightningEarlyStopping("val_loss", mode, p)  # noqa: E731
    expect("ES(3) on [5,4,3,3,3,3]", first_stop(es(3), [5, 4, 3, 3, 3, 3]), 6)
    expect("ES(3) improving", first_stop(es(3), [5, 4, 3, 2, 1, 0.5]), 6)
    expect("ES(2) max mode", first_stop(es(2, "max"), [0.1, 0.5, 0.4, 0.5, 0.6]), 4)
    expect("ES(10) NaN stops (check_finite)", first_stop(es(10), [1.0, 0.9, math.nan, 0.5]), 3)
    expect("ES(10) inf stops", first_stop(es(10), [1.0, math.inf, 0.5]), 2)

    # GL5: best 1.0 at eval 2, 1.04 -> GL 4, 1.06 -> GL 6 > 5.
    expect("GL5", first_stop(GeneralizationLoss(5), [2.0, 1.0, 1.04, 1.06, 0.5]), 4)
    expect("GL5 max-mode via 1-acc", first_stop(GeneralizationLoss(5, 1.0), [0.5, 0.8, 0.795,
                                                                               0.75, 0.9]), 4)
    # UP2 with k=5: strip ends at evals 5, 10, 15; errors 1.0, 1.1, 1.2 -> stop at 15.
    up = [0.5] * 4 + [1.0] + [0.5] * 4 + [1.1] + [0.5] * 4 + [1.2] + [0.1] * 5
    expect("UP2", first_stop(UpStrips(2), up), 15)
    expect("UP3 does not stop", first_stop(UpStrips(3), up), len(up))
    # PQ: training flat at 1.0 (P = 0) -> stops at the first strip end where GL > 0.
    val = [1.0, 0.9, 0.8, 0.8, 0.85] + [0.9] * 5
    expect("PQ3 with no training progress", first_stop(ProgressQuotient(3), val, [1.0] * 10), 5)
    # P_5 = 1000 * (sum/(5*min) - 1) = 1000 * (5.5/4.5 - 1) = 222.2; GL(5) = 6.25; GL/P = 0.028.
    tr = [1.3, 1.2, 1.1, 1.0, 0.9, 1.3, 1.2, 1.1, 1.0, 0.9]
    val = [1.0, 0.9, 0.8, 0.8, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8]
    expect("PQ0.02", first_stop(ProgressQuotient(0.02), val, tr), 5)
    expect("PQ0.05 does not stop", first_stop(ProgressQuotient(0.05), val, tr), 10)

    # Ray TrialPlateauStopper: std of [1, 1.001, 1.002, 1.003] is about 0.0011 < 0.01 -> stop at 4.
    expect("plateau flat", first_stop(TrialPlateau(), [1.0, 1.001, 1.002, 1.003, 1.0]), 4)
    expect("plateau moving", first_stop(TrialPlateau(), [1.0, 0.9, 0.8, 0.7, 0.6]), 5)
    expect("plateau NaN never stops", first_stop(TrialPlateau(), [1.0, math.nan] * 4), 8)

    v = np.array([1.0, 0.5, 0.31, 0.301, 0.2985, 0.4])
    expect("oracle_best", oracle_best_index(v, "min"), 5)
    expect("oracle@1%", oracle_within_index(v, "min", 0.01), 4)
    expect("oracle@1% max", oracle_within_index(np.array([0.1, 0.5, 0.796, 0.8]), "max", 0.01), 3)
    expect("oracle with NaN", oracle_best_index(np.array([1.0, np.nan, 0.5, np.nan]), "min"), 3)
    best = float(np.nanmin(v))
    expect("regret of oracle_best", relative_regret(kept_best(v, 5, "min"), best, "min"), 0.0)
    r = relative_regret(kept_best(v, 3, "min"), best, "min")
    expect("regret at eval 3", round(r, 6), round((0.31 - 0.2985) / 0.2985, 6))
    expect("regret max mode", relative_regret(0.375, 0.5, "max"), 0.25)
    expect("regret with nothing kept", relative_regret(math.nan, 0.5, "min"), math.inf)
    return fails


def main() -> int:
    fails = check()
    for f in fails:
        print(f"FAIL {f}")
    print("selfcheck: " + ("all passed" if not fails else f"{len(fails)} failed"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
