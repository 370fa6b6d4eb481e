"""How far any pruner could get: selection with hindsight of every configuration at one step.

The pruning target asks for at most half the epochs of the best anchor at no more regret. This
asks whether the curves carry that much information. A *cut selector* sees, at a fraction ``f``
of the budget, the best-so-far value of **every** configuration of the sweep at once (no online
pruner does: trials run one after another and each is judged against those before it), keeps the
``m`` best, and trains only those to the end; a *two-cut* selector does that twice
(``f1, m1`` then ``f2, m2`` among the survivors), like successive halving with perfect
scheduling. Epochs and regret are those of ``benchmarks/pruning.py`` (same sweeps: the same
holdout tasks, orders and sweep sizes), and the cut points are chosen with hindsight on those
same sweeps, which flatters the selector further. If the best selector within half the anchor's
epochs still has more regret than the anchor, no pruner that decides from the curves can meet
the target there.

Anchors (the best anchor's epochs and regret) are read from ``benchmarks/results/pruning.json``,
the latest full run of the pruning benchmark on the same sweeps.

Usage: ``python -m benchmarks.pruning_bound [--out benchmarks/results] [--anchors FILE]``;
prints a table and writes ``pruning_bound.json`` and ``pruning_bound.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from itertools import product
from pathlib import Path

import numpy as np

from benchmarks._curves import load_source, task_split
from benchmarks._sweeps import Population, populations
from benchmarks.pruning import sweep_order

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"taskset": 50, "algoperf": 15}  # as benchmarks/pruning.py
ORDERS = 20
FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6)


def _best_by(curves: list[np.ndarray], k: int) -> np.ndarray:
    """Each configuration's best value (lower is better) over its first ``k`` evaluations."""
    return np.array([np.nanmin(c[:k]) if np.isfinite(c[:k]).any() else np.inf for c in curves])


def selectors(n: int) -> list[tuple[float, int, float, int]]:
    """(f1, m1, f2, m2): cut at f1 keeping m1, then at f2 keeping m2 (f2 = 1: one cut)."""
    one = [(f, m, 1.0, m) for f in FRACTIONS for m in range(1, min(n, 16))]
    two = [(f1, m1, f2, m2) for f1, f2 in product(FRACTIONS, FRACTIONS) if f2 > f1
           for m1 in range(3, min(n, 13), 2) for m2 in range(1, min(m1, 6))]
    return one + two


def sweep_outcomes(pop: Population, order: int, grid: list) -> np.ndarray:
    """(epochs share, regret) of every selector in ``grid`` on one sweep of ``pop``."""
    sign = 1.0 if pop.mode == "min" else -1.0
    curves = [sign * pop.curves[i] for i in sweep_order(pop, order, SIZES[pop.source], 0)]
    lens = np.array([len(c) for c in curves])
    final = _best_by(curves, max(lens))
    cache: dict[int, np.ndarray] = {}
    out = np.empty((len(grid), 2))
    for g, (f1, m1, f2, m2) in enumerate(grid):
        k1 = max(1, math.ceil(f1 * pop.budget))
        k2 = max(k1, math.ceil(f2 * pop.budget))
        at1 = cache.setdefault(k1, _best_by(curves, k1))
        keep1 = np.argsort(at1, kind="stable")[:m1]
        at2 = cache.setdefault(k2, _best_by(curves, k2))
        keep2 = keep1[np.argsort(at2[keep1], kind="stable")[:m2]]
        used = (np.minimum(lens, k1).sum()
                + (np.minimum(lens[keep1], k2) - np.minimum(lens[keep1], k1)).sum()
                + (lens[keep2] - np.minimum(lens[keep2], k2)).sum())
        out[g] = used / lens.sum(), pop.regret(sign * float(final[keep2].min()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--anchors", type=Path, default=ROOT / "benchmarks" / "results" /
                    "pruning.json", help="the pruning benchmark's results to read anchors from")
    args = ap.parse_args(argv)
    anchors_file = args.anchors
    latest = json.loads(anchors_file.read_text())
    rows = []
    for source, which in (("taskset", "loss"), ("algoperf", "both")):
        runs = load_source(source)
        split = task_split(source, {r.task for r in runs})
        pops = populations([r for r in runs if split[r.task] == "holdout"], which)
        for label in sorted({p.label for p in pops}):
            members = [p for p in pops if p.label == label]
            grid = selectors(SIZES[source])
            res = np.mean([sweep_outcomes(p, o, grid) for p in members for o in range(ORDERS)],
                          axis=0)
            target = latest["targets"]["holdout"][label][0]
            pooled = latest["pooled"]["holdout"][label]
            anchor = pooled[target["best_anchor"]]
            within = np.flatnonzero(res[:, 0] <= 0.5 * anchor["epochs"])
            best = within[np.argmin(res[within, 1])]
            rows.append({"scope": label, "anchor": target["best_anchor"],
                         "anchor_epochs": anchor["epochs"],
                         "anchor_regret": anchor["regret_mean"],
                         "epochs_limit": 0.5 * anchor["epochs"], "selector": grid[best],
                         "selector_epochs": float(res[best, 0]),
                         "selector_regret": float(res[best, 1]),
                         "advisor_epochs": pooled["Advisor"]["epochs"],
                         "advisor_regret": pooled["Advisor"]["regret_mean"],
                         "feasible": bool(res[best, 1] <= anchor["regret_mean"])})
    head = ("| scope | best anchor (epochs / regret) | half its epochs | best hindsight selector "
            "| its epochs / regret | its regret - the anchor's | AdvisorPruner |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        f1, m1, f2, m2 = r["selector"]
        sel = (f"keep {m1} at {f1:.0%}" if f2 >= 1 else
               f"keep {m1} at {f1:.0%}, then {m2} at {f2:.0%}")
        lines.append(f"| {r['scope']} | {r['anchor']} ({r['anchor_epochs']:.2f} / "
                     f"{r['anchor_regret']:.4f}) | {r['epochs_limit']:.2f} | {sel} | "
                     f"{r['selector_epochs']:.2f} / {r['selector_regret']:.4f} | "
                     f"{r['selector_regret'] - r['anchor_regret']:+.4f} | "
                     f"{r['advisor_epochs']:.2f} / {r['advisor_regret']:.3f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pruning_bound.json").write_text(json.dumps(
        {"anchors_from": str(anchors_file), "anchors_commit": latest.get("git_commit"),
         "orders": ORDERS, "sweep_sizes": SIZES, "rows": rows}, indent=1) + "\n")
    (args.out / "pruning_bound.md").write_text(
        "# Pruning: what hindsight selection of configurations could reach (holdout)\n\n"
        + (__doc__ or "").split("\n\n")[1].replace("\n", " ") + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
