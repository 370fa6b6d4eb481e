"""False stops: how often the advisor stops power-law curves that are still improving.

Synthetic curves ``y = c + a * (x + x0) ** -alpha`` with Gaussian noise, drawn so that the
noise-free curve still improves by at least ``--min-late-gain`` (default 5%) of its total
improvement over the last quarter of the budget: every stop before the last check is a false
stop. Noise levels are those measured on the real TaskSet learning curves: the check-to-check
noise is 1-5% of the curve's total improvement (10th-90th percentile), so we draw it
log-uniformly from 0.5% to 5%. Budgets of 20 to 300 checks. The same curves go through
Lightning-style ``EarlyStopping`` (patience 10 and 20) as anchors.

Usage: ``python -m benchmarks.false_stops [--runs 2000] [--out benchmarks/results]``.
Prints a table and writes ``false_stops.json`` and ``false_stops.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from advisor import Advisor


def draw_curves(runs: int, min_late_gain: float, seed: int = 0):
    """Yield ``(x, y_noisy, y_clean, noise_share)`` for curves still improving at the end."""
    rng = np.random.default_rng(seed)
    made = 0
    while made < runs:
        n = int(rng.choice([20, 50, 100, 300]))
        alpha = float(np.exp(rng.uniform(np.log(0.05), np.log(1.5))))
        x0 = rng.uniform(0.0, 5.0)
        x = np.arange(1, n + 1, dtype=float)
        clean = (x + x0) ** -alpha
        total = clean[0] - clean[-1]
        late = clean[int(0.75 * n) - 1] - clean[-1]
        if late < min_late_gain * total:
            continue
        noise_share = float(np.exp(rng.uniform(np.log(0.005), np.log(0.05))))
        scale = rng.uniform(0.1, 10.0)
        offset = rng.uniform(-5.0, 5.0)
        y_clean = offset + scale * clean / total
        y = y_clean + rng.normal(0.0, noise_share * scale, n)
        made += 1
        yield x, y, y_clean, noise_share


def patience_stop(y: np.ndarray, patience: int) -> int:
    """Index (1-based) where Lightning's EarlyStopping(patience, min_delta=0) would stop."""
    best, wait = np.inf, 0
    for i, v in enumerate(y):
        if v < best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return i + 1
    return y.size


def advisor_stop(x: np.ndarray, y: np.ndarray) -> tuple[int, str]:
    advisor = Advisor("val_loss", "min", max_steps=float(x[-1]))
    for i in range(y.size):
        advice = advisor.update(x[i], {"val_loss": y[i]})
        if advice.should_stop:
            return i + 1, advice.verdict.value
    return y.size, "end"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--min-late-gain", type=float, default=0.05)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rules = {"advisor": [], "patience10": [], "patience20": []}
    lost = {k: [] for k in rules}
    by_n: dict[int, list[bool]] = {}
    start = time.perf_counter()
    for x, y, clean, _ in draw_curves(args.runs, args.min_late_gain):
        n = y.size
        total = clean[0] - clean[-1]
        stops = {"advisor": advisor_stop(x, y)[0], "patience10": patience_stop(y, 10),
                 "patience20": patience_stop(y, 20)}
        for rule, s in stops.items():
            rules[rule].append(s < n)
            lost[rule].append((clean[s - 1] - clean[-1]) / total)
        by_n.setdefault(n, []).append(stops["advisor"] < n)
    elapsed = time.perf_counter() - start
    rows = []
    for rule in rules:
        stopped = np.array(rules[rule])
        loss = np.array(lost[rule])
        rows.append({"rule": rule, "false_stop_share": float(stopped.mean()),
                     "costly_false_stop_share": float((loss > 0.01).mean()),
                     "mean_gain_lost": float(loss.mean()),
                     "ratio_to_patience10": float(stopped.mean() / max(np.mean(rules["patience10"]),
                                                                       1e-12))})
    result = {"runs": args.runs, "min_late_gain": args.min_late_gain, "rules": rows,
              "advisor_false_stop_share_by_budget": {str(k): float(np.mean(v))
                                                     for k, v in sorted(by_n.items())},
              "target": "advisor false_stop_share <= 0.05", "seconds": elapsed}
    header = f"{'rule':<12}{'false stops':>12}{'costly (>1%)':>14}{'gain lost':>11}{'/ p10':>8}"
    lines = [header] + [
        f"{r['rule']:<12}{r['false_stop_share']:>12.3f}{r['costly_false_stop_share']:>14.3f}"
        f"{r['mean_gain_lost']:>11.4f}{r['ratio_to_patience10']:>8.2f}" for r in rows]
    share = rows[0]["false_stop_share"]
    lines.append(f"target: advisor stops <= 5% of still-improving curves: "
                 f"{'PASS' if share <= 0.05 else 'MISS'} ({share:.1%})")
    lines.append("advisor false stops by budget (checks): " + ", ".join(
        f"{k}: {v:.1%}" for k, v in result["advisor_false_stop_share_by_budget"].items()))
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "false_stops.json").write_text(json.dumps(result, indent=2))
    (out / "false_stops.md").write_text(
        "# False stops on still-improving power-law curves\n\n```\n" + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
