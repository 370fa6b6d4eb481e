"""How far a rule on the curve could get: a stopping model fitted with hindsight on the test tasks.

The stopping targets ask the advisor to save what ``EarlyStopping(patience=10)`` saves at no more
regret than patience 20 (a), and 70% of what the hindsight oracle@1% saves (b). This asks
whether the curves carry that much information. At every check of every holdout run it measures
what a stopping rule could know then (:data:`FEATURES`: progress through the budget, checks
since the best, recent gain, noise and the slope's projection, relative to the best value and to
the improvement so far, Mann-Kendall trends of validation and training, the advisor's verdict
and its forecast's expected gain), labels the check harmless if stopping there keeps a result
within 1% of the run's final best (restore-best), and fits a gradient-boosted classifier **on
the holdout runs themselves**. The rule "stop at the second check in a row whose chance of being
harmless is at least t" then flatters itself: it has seen the answers. Its savings at patience
20's harm are an optimistic ceiling for rules built on these measurements.

Usage: ``python -m benchmarks.stopping_bound [--out benchmarks/results] [--workers N]``; prints a
table and writes ``stopping_bound.json`` and ``stopping_bound.md`` (about 4 minutes on 2 cores).
Needs scikit-learn (the ``dev`` extra).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from advisor import Advisor  # noqa: E402
from advisor.detectors._stats import median, noise_scale, trend_test  # noqa: E402
from benchmarks._curves import load_source, monitors_for, task_split  # noqa: E402
from benchmarks._rules import (  # noqa: E402
    LightningEarlyStopping,
    _best_so_far,
    oracle_within_index,
    relative_regret,
)

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("progress", "since_best_share", "checks_since_best", "recent_gain_span",
            "recent_gain_rel", "noise_span", "noise_rel", "trend_z", "train_trend_z",
            "slope_gain_rel", "slope_gain_span", "slope_gain_high_rel", "gap_noise",
            "forecast_gain_rel", "forecast_gain_high_rel", "advisor_verdict")
VERDICTS = ("improving", "undecided", "plateau", "overfitting", "diverged")
CONFIDENCES = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95)


def checks_of(job) -> dict | None:
    """One run: its scope, the features at each check from the 8th on (and their indices), the
    regret of stopping at every check, and where the anchors stop (0-based)."""
    run, mon = job
    val = run.metrics[mon.metric]
    train = run.metrics.get(mon.train_metric, np.full(run.n_evals, np.nan))
    if np.isfinite(val).sum() < 8:
        return None
    sign = 1.0 if mon.mode == "min" else -1.0
    final = float(np.nanmin(val) if mon.mode == "min" else np.nanmax(val))
    adv = Advisor(monitor=mon.metric, mode=mon.mode, train_metric=mon.train_metric,
                  max_steps=float(run.x[-1]))
    rows, index = [], []
    for i in range(run.n_evals):
        a = adv.update(float(run.x[i]), {mon.metric: float(val[i]),
                                         mon.train_metric: float(train[i])})
        ok = np.isfinite(val[: i + 1])
        if i < 7 or ok.sum() < 8:
            continue
        x, y, t = run.x[: i + 1][ok], sign * val[: i + 1][ok], sign * train[: i + 1][ok]
        b = int(np.argmin(y))
        best, scale = float(y[b]), max(abs(float(y[b])), 1e-12)
        span = max(median(y[: max(3, y.size // 4)]) - best, 1e-12)
        noise = noise_scale(y[-48:])
        recent = float(y[: -max(3, y.size // 4)].min()) - best
        w = slice(max(0, y.size - max(6, int(0.35 * y.size))), None)
        tr = trend_test(x[w], y[w])
        tz = trend_test(x[w], t[w]).statistic if np.isfinite(t[w]).all() else 0.0
        left = float(run.x[-1] - x[-1])
        gain_iv = a.expected_gain_interval
        rows.append([x[-1] / run.x[-1], (y.size - 1 - b) / y.size, y.size - 1 - b,
                     recent / span, recent / scale, noise / span, noise / scale, tr.statistic,
                     tz, max(0.0, -tr.slope) * left / scale, max(0.0, -tr.slope) * left / span,
                     max(0.0, -tr.low_slope) * left / scale,
                     (median(y[-3:]) - best) / max(noise, 1e-12),
                     (a.expected_gain or 0.0) / scale,
                     (gain_iv[1] if gain_iv else 0.0) / scale,
                     VERDICTS.index(a.verdict.value) if a.verdict.value in VERDICTS else 1])
        index.append(i)
    if run.source == "taskset":
        scope = "TaskSet " + ("learners" if run.learner else "non-learners")
    else:
        scope = f"AlgoPerf {mon.kind}"
    stops = {}
    for patience in (10, 20):
        es = LightningEarlyStopping(mon.metric, mon.mode, patience)
        stops[f"patience {patience}"] = next(
            (i for i in range(run.n_evals) if es.update(i, float(val[i]), np.nan)), run.n_evals - 1)
    stops["oracle@1%"] = oracle_within_index(val, mon.mode) - 1
    return {"scope": scope, "features": np.array(rows, float).reshape(-1, len(FEATURES)),
            "index": np.array(index, int), "n": run.n_evals, "stops": stops,
            "regret": np.array([relative_regret(kept, final, mon.mode)  # restore-best
                                for kept in _best_so_far(val, mon.mode)])}


def holdout_jobs() -> list:
    jobs = []
    for source, which in (("taskset", "loss"), ("algoperf", "both")):
        runs = load_source(source)
        split = task_split(source, {r.task for r in runs})
        kept = [r for r in runs if split[r.task] == "holdout"]
        if source == "taskset":  # the learners only: dead runs are easy to stop
            kept = [r for r in kept if r.learner]
        jobs += [(r, m) for r in kept for m in monitors_for(r, which)]
    return jobs


def first_stop(index: np.ndarray, chance: np.ndarray, confidence: float, n: int) -> int:
    """The check (0-based) of the second check in a row at or above ``confidence``."""
    hits = chance >= confidence
    both = np.flatnonzero(hits[1:] & hits[:-1] & (np.diff(index) == 1))
    return int(index[both[0] + 1]) if both.size else n - 1


def outcome(runs: list[dict], stops: list[int]) -> dict[str, float]:
    """Mean saved share, mean regret and harmful share (regret above 1%) of stopping there."""
    saved = np.array([(r["n"] - 1 - s) / r["n"] for r, s in zip(runs, stops, strict=True)])
    regret = np.array([r["regret"][s] for r, s in zip(runs, stops, strict=True)])
    return {"saved": float(saved.mean()), "regret": float(regret.mean()),
            "harmful": float(np.mean(regret > 0.01))}


def _cell(o: dict[str, float]) -> str:
    return f"{100 * o['saved']:.1f} / {100 * o['regret']:.2f} / {100 * o['harmful']:.1f}"


def main(argv: list[str] | None = None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    with mp.get_context("fork").Pool(args.workers) as pool:
        runs = [r for r in pool.map(checks_of, holdout_jobs(), chunksize=8)
                if r is not None and r["index"].size]
    report, lines = {}, [
        "| scope | runs | patience 10 | patience 20 | oracle@1% | in-sample model by confidence "
        "| most it saves within patience 20's regret and harm | of oracle@1% |",
        "|---|---|---|---|---|---|---|---|"]
    for scope in sorted({r["scope"] for r in runs}):
        mine = [r for r in runs if r["scope"] == scope]
        x = np.concatenate([r["features"] for r in mine])
        harmless = np.concatenate([r["regret"][r["index"]] for r in mine]) <= 0.01
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                             min_samples_leaf=200, random_state=0)
        chance = np.split(clf.fit(x, harmless).predict_proba(x)[:, 1],
                          np.cumsum([r["index"].size for r in mine])[:-1])
        anchors = {name: outcome(mine, [r["stops"][name] for r in mine])
                   for name in ("patience 10", "patience 20", "oracle@1%")}
        model = {str(c): outcome(mine, [first_stop(r["index"], p, c, r["n"])
                                        for r, p in zip(mine, chance, strict=True)])
                 for c in CONFIDENCES}
        es20 = anchors["patience 20"]
        within = [o["saved"] for o in model.values()
                  if o["regret"] <= es20["regret"] and o["harmful"] <= es20["harmful"]]
        best = max(within, default=0.0)
        report[scope] = {"runs": len(mine), "anchors": anchors, "model": model,
                         "best_within_patience20": best,
                         "of_oracle": best / anchors["oracle@1%"]["saved"]}
        lines.append(f"| {scope} | {len(mine)} | {_cell(anchors['patience 10'])} | "
                     f"{_cell(es20)} | {100 * anchors['oracle@1%']['saved']:.1f} saved | "
                     + "; ".join(f"{c}: {_cell(o)}" for c, o in model.items())
                     + f" | {100 * best:.1f} | {best / anchors['oracle@1%']['saved']:.2f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stopping_bound.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "stopping_bound.md").write_text(
        "# Stopping: a rule fitted with hindsight on the holdout runs\n\n"
        + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        + "\n\nCells: saved % / mean regret % / harmful %, on the same runs.\n\n"
        + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
