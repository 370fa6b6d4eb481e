"""Cost of ``AdvisorPruner.prune`` next to ``MedianPruner.prune`` on a study of 1,000 trials.

The study holds 1,000 COMPLETE trials of 100 reported steps each (noisy power-law loss curves
``floor + a * (step + 1) ** -b``, floors, amplitudes and exponents drawn per trial), once in
memory and once on sqlite (a temporary file; Optuna's ``RDBStorage`` with its cache). A running
trial reports a curve step by step (steps 0-99); after each report we time
``pruner.prune(study, frozen_trial)`` with the frozen trial ``trial.should_prune()`` passes. The
running curve (amplitude 0.5, exponent 1, floor 0.05 below the best trial's value) is the best
one at every step, so no pruner stops it and every step is timed. Each pruner is one instance
for the whole measurement, as one study uses one pruner, warmed up by one untimed trial; per
repetition each gets its own new running trial, in turn (interleaved, rotating), so drifts in
machine load hit them alike:

- ``MedianPruner()`` (Optuna's defaults);
- ``AdvisorPruner()`` (``max_steps="auto"``, the default) and ``AdvisorPruner(max_steps=99)``,
  used as an objective uses them: ``prune`` after every report, so the per-trial advisor is fed
  one value per call;
- *cold*: a new ``AdvisorPruner`` instance (as in a new worker process) times one call on a trial
  that has already reported up to the step: it reads the 1,000 finished trials' curves and
  rebuilds the trial's advisor from every reported value;
- the call that prunes: a losing trial (its curve ends at the median floor) is fed to a warm
  ``AdvisorPruner()`` until ``prune`` returns True; that call also writes the trial's user
  attributes to the storage.

Reported: median and mean ms per call at steps 10, 50 and 90 and over all 100 steps, and the
ratio of medians to ``MedianPruner`` on the same storage and step. Target: the advisor's in-use
``prune`` at most 2x ``MedianPruner``'s at every step shown. Timing is reported, never asserted;
run it on a quiet machine.

Usage: ``python -m benchmarks.pruner_cost [--reps 40] [--sqlite-reps 15] [--out ...]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner
from optuna.trial import TrialState

from advisor import AdvisorPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_TRIALS, N_STEPS = 1000, 100
STEPS = (10, 50, 90)
TARGET = 2.0


def loss_curve(rng: np.random.Generator, floor: float, a: float | None = None,
               b: float | None = None) -> np.ndarray:
    """A noisy power-law validation loss ``floor + a * t ** -b`` over ``N_STEPS`` steps."""
    t = np.arange(1, N_STEPS + 1, dtype=float)
    a = rng.uniform(0.5, 2.0) if a is None else a
    b = rng.uniform(0.3, 1.0) if b is None else b
    return floor + a * t**-b + rng.normal(0.0, 0.005 + 0.01 * floor, N_STEPS)


def build_study(storage: Any, seed: int = 0) -> optuna.Study:
    """A minimise study with ``N_TRIALS`` COMPLETE trials of ``N_STEPS`` reported steps."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(storage=storage, pruner=NopPruner())
    trials = []
    for _ in range(N_TRIALS):
        curve = loss_curve(rng, rng.uniform(0.3, 1.0))
        trials.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=float(curve.min()),
            intermediate_values={s: float(v) for s, v in enumerate(curve)}))
    study.add_trials(trials)
    return study


def timed_run(study: optuna.Study, pruner: BasePruner, curve: np.ndarray) -> list[float]:
    """Report ``curve`` in a new trial and time ``prune`` after every report (ms per step)."""
    trial = study.ask()
    out = []
    try:
        for step, value in enumerate(curve):
            trial.report(float(value), step)
            frozen = trial._get_latest_trial()  # what trial.should_prune() passes
            t0 = time.perf_counter_ns()
            pruned = pruner.prune(study, frozen)
            out.append((time.perf_counter_ns() - t0) / 1e6)
            if pruned:
                raise RuntimeError(f"{type(pruner).__name__} pruned the leading trial at {step}")
    finally:
        study.tell(trial, state=TrialState.FAIL)
    return out


def timed_cold(study: optuna.Study, make: Callable[[], BasePruner], curve: np.ndarray
               ) -> list[float]:
    """Time one call of a new pruner instance at each of ``STEPS``."""
    trial = study.ask()
    out = []
    try:
        for step, value in enumerate(curve):
            trial.report(float(value), step)
            if step in STEPS:
                pruner, frozen = make(), trial._get_latest_trial()
                t0 = time.perf_counter_ns()
                pruner.prune(study, frozen)
                out.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        study.tell(trial, state=TrialState.FAIL)
    return out


def timed_pruning_call(study: optuna.Study, pruner: BasePruner, curve: np.ndarray
                       ) -> tuple[int, float]:
    """Feed a losing trial to ``pruner``; the step and ms of the call that prunes it."""
    trial = study.ask()
    try:
        for step, value in enumerate(curve):
            trial.report(float(value), step)
            frozen = trial._get_latest_trial()
            t0 = time.perf_counter_ns()
            if pruner.prune(study, frozen):
                return step, (time.perf_counter_ns() - t0) / 1e6
        return -1, float("nan")
    finally:
        study.tell(trial, state=TrialState.FAIL)


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(v)), "mean_ms": float(np.mean(v))}


def measure(study: optuna.Study, reps: int, seed: int = 1) -> dict[str, Any]:
    """Time every pruner on ``study``; rows of {step: {median_ms, mean_ms, ratio}}."""
    rng = np.random.default_rng(seed)
    best = min(t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))
    in_use: dict[str, BasePruner] = {
        "MedianPruner": MedianPruner(),
        "AdvisorPruner (auto)": AdvisorPruner(),
        "AdvisorPruner (max_steps=99)": AdvisorPruner(max_steps=N_STEPS - 1),
    }
    cold: dict[str, Callable[[], BasePruner]] = {
        "AdvisorPruner (auto), cold": AdvisorPruner,
        "AdvisorPruner (max_steps=99), cold": lambda: AdvisorPruner(max_steps=N_STEPS - 1)}
    pruning = AdvisorPruner()
    times: dict[str, list[list[float]]] = {k: [] for k in [*in_use, *cold]}
    prune_calls: list[tuple[int, float]] = []
    for rep in range(-1, reps):  # rep -1 warms every pruner up, untimed
        leader = loss_curve(rng, best - 0.05, a=0.5, b=1.0)  # the new best at every step
        names = list(in_use)
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t = timed_run(study, in_use[name], leader)
            if rep >= 0:
                times[name].append(t)
        for name, make in cold.items():
            t = timed_cold(study, make, leader)
            if rep >= 0:
                times[name].append(t)
        call = timed_pruning_call(study, pruning, loss_curve(rng, 0.65))
        if rep >= 0:
            prune_calls.append(call)
        gc.collect()
    rows: dict[str, Any] = {}
    for name, runs in times.items():
        a = np.asarray(runs)  # reps x steps (cold: reps x len(STEPS))
        rows[name] = {str(s): _stats(a[:, i if "cold" in name else s])
                      for i, s in enumerate(STEPS)}
        if "cold" not in name:
            rows[name]["all"] = _stats(a.ravel())
    base = rows["MedianPruner"]
    for r in rows.values():
        for k, v in r.items():
            v["ratio"] = v["median_ms"] / base[k]["median_ms"]
    steps = np.array([s for s, _ in prune_calls])
    ms = np.array([m for _, m in prune_calls])
    ok = steps >= 0
    if ok.any():
        rows["AdvisorPruner (auto), the call that prunes"] = {"pruned": {
            **_stats(ms[ok]), "ratio": float(np.median(ms[ok])) / base["all"]["median_ms"],
            "median_step": float(np.median(steps[ok])), "pruned_share": float(ok.mean())}}
    return rows


def table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    cols = [*map(str, STEPS), "all"]
    head = f"{'storage':8} {'pruner':42}" + "".join(f"{'step ' + c:>22}" for c in cols)
    lines = [head, "-" * len(head)]
    verdicts = []
    for storage, rows in results.items():
        for name, r in rows.items():
            if "pruned" in r:
                p = r["pruned"]
                lines.append(f"{storage:8} {name:42} at step {p['median_step']} (median), "
                             f"{p['median_ms']:.2f} / {p['mean_ms']:.2f} ms "
                             f"(x{p.get('ratio', float('nan')):.1f} Median's all-step median), "
                             f"pruned in {100 * p['pruned_share']:.0f}% of reps")
                continue
            cells = "".join(f"{v['median_ms']:>8.3f}/{v['mean_ms']:>7.3f} x{v['ratio']:<4.1f}"
                            if (v := r.get(c)) else f"{'-':>22}" for c in cols)
            lines.append(f"{storage:8} {name:42}{cells}")
            if name.startswith("AdvisorPruner") and "cold" not in name:
                worst = max(r[c]["ratio"] for c in cols)
                verdicts.append(f"{'PASS' if worst <= TARGET else 'MISS'} {storage} {name}: "
                                f"worst ratio of medians {worst:.2f} (target <= {TARGET:g})")
    return lines, verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40, help="repetitions in memory")
    parser.add_argument("--sqlite-reps", type=int, default=15,
                        help="repetitions on sqlite (0: skip sqlite)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    t0 = time.time()
    print("[pruner_cost] in memory ...", file=sys.stderr)
    results["memory"] = measure(build_study(None), args.reps)
    if args.sqlite_reps > 0:
        with tempfile.TemporaryDirectory() as tmp:
            print("[pruner_cost] building the sqlite study ...", file=sys.stderr)
            study = build_study(f"sqlite:///{tmp}/cost.db")
            print("[pruner_cost] on sqlite ...", file=sys.stderr)
            results["sqlite"] = measure(study, args.sqlite_reps)
    lines, verdicts = table(results)
    text = "\n".join([*lines, "", *verdicts])
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"trials": N_TRIALS, "steps": N_STEPS, "reps": {"memory": args.reps,
            "sqlite": args.sqlite_reps}, "optuna": optuna.__version__,
            "wall_s": round(time.time() - t0, 1), "target_ratio": TARGET}
    (out / "pruner_cost.json").write_text(json.dumps(
        {**meta, "results": results, "verdicts": verdicts}, indent=1) + "\n")
    (out / "pruner_cost.md").write_text(
        "# Pruner cost: `prune()` on a study of 1,000 finished trials x 100 steps\n\n"
        f"{meta}. Cells: median / mean ms per call (x ratio of medians to MedianPruner at the "
        "same step and storage). See `benchmarks/pruner_cost.py` for the method.\n\n```\n"
        + text + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
