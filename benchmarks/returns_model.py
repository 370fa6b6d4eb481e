"""Fit the diminishing-returns model (``advisor/detectors/returns_model.json``) on the tune tasks.

Every tune run's curve is replayed through :class:`advisor.Advisor` (the model itself off); at
each check the advisor's ``returns`` evidence carries the model's inputs
(:data:`advisor.detectors.returns.FEATURES`), and the label says whether stopping there would
have been harmless: the best value kept (restore-best) within 1% of the run's final best, the
stopping benchmark's definition of a harmful stop. A scikit-learn
``HistGradientBoostingClassifier`` is fitted on those rows and exported as plain arrays, which
the package evaluates with numpy (no scikit-learn at run time). Held-out tasks are never read:
``benchmarks/stopping.py`` reports the result on them.

Runs: every TaskSet tune learner plus 30 non-learners per tune task, every AlgoPerf tune run
with both its validation loss and its workload metric. Each check is a row.

Usage (from the repository root)::

    python -m benchmarks.returns_model            # refit and overwrite the shipped model
    python -m benchmarks.returns_model --out /tmp/model.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import datetime as dt
import json
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import numpy as np

from advisor import Advisor  # noqa: E402  (after the thread settings)
from advisor.detectors.returns import FEATURES, ReturnsModel  # noqa: E402
from benchmarks._curves import (  # noqa: E402
    Monitor,
    Run,
    load_source,
    monitors_for,
    sample_runs,
    task_split,  # noqa: E402
)
from benchmarks._rules import kept_best, relative_regret  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "advisor" / "detectors" / "returns_model.json"
RELATIVE_GAIN = 0.01
TASKSET_NONLEARNERS = 30


def tune_jobs() -> list[tuple[Run, Monitor]]:
    jobs = []
    for source, which, cap in (("taskset", "loss", TASKSET_NONLEARNERS),
                               ("algoperf", "both", None)):
        runs = load_source(source)
        split = task_split(source, {r.task for r in runs})
        kept, _ = sample_runs([r for r in runs if split[r.task] == "tune"], cap)
        jobs += [(r, m) for r in kept for m in monitors_for(r, which)]
    return jobs


def rows_for(job: tuple[Run, Monitor]) -> tuple[np.ndarray, np.ndarray]:
    """(features per check, harmless per check) for one run and monitor."""
    run, mon = job
    val = run.metrics[mon.metric]
    train = run.metrics.get(mon.train_metric, np.full(run.n_evals, np.nan))
    finite = val[np.isfinite(val)]
    if finite.size < 8:
        return np.empty((0, len(FEATURES))), np.empty(0, bool)
    final = float(finite.min() if mon.mode == "min" else finite.max())
    adv = Advisor(monitor=mon.metric, mode=mon.mode, train_metric=mon.train_metric,
                  max_steps=float(run.x[-1]), returns_confidence=None)
    xs, ys = [], []
    for i in range(run.n_evals):
        advice = adv.update(float(run.x[i]), {mon.metric: float(val[i]),
                                              mon.train_metric: float(train[i])})
        ev = advice.evidence_for("returns")
        if ev is None or advice.step != float(run.x[i]):
            continue
        f = ev.details["features"]
        xs.append([f[name] for name in FEATURES])
        ys.append(relative_regret(kept_best(val, i + 1, mon.mode), final, mon.mode)
                  <= RELATIVE_GAIN)
    return np.array(xs, float).reshape(-1, len(FEATURES)), np.array(ys, bool)


def export(clf: Any) -> dict[str, Any]:
    """The fitted classifier as arrays: per tree, node feature/threshold/children/value/leaf."""
    trees = []
    depth = 0
    for (predictor,) in clf._predictors:  # one predictor per iteration (binary)
        nodes = predictor.nodes
        depth = max(depth, int(nodes["depth"].max()))
        trees.append({"feature": nodes["feature_idx"].astype(int).tolist(),
                      "threshold": nodes["num_threshold"].astype(float).tolist(),
                      "left": nodes["left"].astype(int).tolist(),
                      "right": nodes["right"].astype(int).tolist(),
                      "value": nodes["value"].astype(float).tolist(),
                      "leaf": nodes["is_leaf"].astype(bool).tolist()})
    return {"features": list(FEATURES), "relative_gain": RELATIVE_GAIN,
            "baseline": float(np.ravel(clf._baseline_prediction)[0]), "max_depth": depth,
            "trees": trees}


def main(argv: list[str] | None = None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    jobs = tune_jobs()
    print(f"replaying {len(jobs)} tune curves", flush=True)
    with mp.get_context("fork").Pool(args.workers) as pool:
        parts = pool.map(rows_for, jobs, chunksize=8)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                         min_samples_leaf=200, random_state=0)
    clf.fit(x, y)
    spec = export(clf)
    spec.update(trained=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                rows=int(y.size), curves=len(jobs), harmless_share=float(y.mean()))
    sample = x[:: max(1, x.shape[0] // 2000)]
    ours = np.array([ReturnsModel(spec).predict(row) for row in sample])
    theirs = clf.predict_proba(sample)[:, 1]
    gap = float(np.max(np.abs(ours - theirs)))
    if gap > 1e-9:
        raise SystemExit(f"exported model disagrees with scikit-learn by {gap}")
    args.out.write_text(json.dumps(spec, separators=(",", ":")) + "\n")
    print(f"{y.size} checks of {len(jobs)} curves, {y.mean():.1%} harmless; "
          f"{len(spec['trees'])} trees, depth {spec['max_depth']}; numpy = scikit-learn to "
          f"{gap:.1e}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
