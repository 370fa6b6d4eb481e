"""Where the advisor's settings sit against the patience frontier (tune tasks only).

Issue 2's stopping target (a) asks the default advisor to save at least as many evaluations as
``EarlyStopping(patience=10)`` while its mean regret and share of harmful stops stay at or below
``patience=20``'s. This script replays the tune tasks once per advisor setting (each a
``benchmarks.stopping`` run with ``--advisor-kwargs``, anchors recomputed in the same run) and
prints, per scope, each setting's savings, regret and harmful share with the two anchors, so a
proposed change of defaults is judged on the whole trade-off rather than on one number. Tuning
happens here, on the tune split; the holdout numbers come from ``benchmarks.stopping``.

Usage (from the repository root)::

    python -m benchmarks.frontier                     # the settings below, 40 runs per task
    python -m benchmarks.frontier --settings '{"confirm": 1}' '{"confidence": 0.8}'

Writes ``benchmarks/results/frontier.json`` and ``frontier.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow ``python benchmarks/frontier.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import stopping  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: tuple[dict[str, Any], ...] = (
    {},
    {"min_improvement": 0.02},
    {"min_improvement": 0.04},
    {"confidence": 0.8},
    {"stall_window": 7},
    {"confirm": 1},
    {"min_progress_without_lr": 0.3},
    {"min_improvement": 0.04, "confirm": 1, "min_progress_without_lr": 0.3},
)
SCOPES = (("taskset", "learners"), ("taskset", "all"), ("algoperf/loss", "all"),
          ("algoperf/workload", "all"))


def run_setting(kwargs: dict[str, Any], runs_per_task: int, workdir: Path) -> list[dict]:
    """One ``benchmarks.stopping`` run on the tune split; its pooled summaries."""
    out = workdir / f"s{abs(hash(json.dumps(kwargs, sort_keys=True)))}"
    with contextlib.redirect_stdout(io.StringIO()):  # its tables: only the pooled rows matter
        stopping.main(["--split", "tune", "--max-runs-per-task", str(runs_per_task), "--fresh",
                       "--advisor-kwargs", json.dumps(kwargs), "--out", str(out),
                       "--runs-csv", str(out / "runs.csv.gz")])
    return json.loads((out / "stopping.json").read_text())["pooled"]


def rows_for(label: str, pooled: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for entry in pooled:
        if (entry["source"], entry["group"]) not in SCOPES or entry["split"] != "tune":
            continue
        r = entry["rules"]
        a, e10, e20 = r["advisor"], r["es_p10"], r["es_p20"]
        rows.append({
            "setting": label, "scope": f"{entry['source']} {entry['group']}",
            "saved": a["saved"], "regret": a["regret_mean"], "harmful": a["harmful"],
            "es10_saved": e10["saved"], "es20_regret": e20["regret_mean"],
            "es20_harmful": e20["harmful"],
            "target_a": bool(a["saved"] >= e10["saved"] and a["regret_mean"] <= e20["regret_mean"]
                             and a["harmful"] <= e20["harmful"]),
        })
    return rows


def table(rows: list[dict[str, Any]], md: bool) -> str:
    headers = ["scope", "setting", "saved%", "regret%", "harmful%", "es10 saved%",
               "es20 regret%", "es20 harmful%", "(a)"]
    body = [[r["scope"], r["setting"], f"{100 * r['saved']:.1f}", f"{100 * r['regret']:.2f}",
             f"{100 * r['harmful']:.1f}", f"{100 * r['es10_saved']:.1f}",
             f"{100 * r['es20_regret']:.2f}", f"{100 * r['es20_harmful']:.1f}",
             "PASS" if r["target_a"] else "miss"]
            for r in sorted(rows, key=lambda r: (r["scope"], r["setting"] != "default"))]
    return stopping.render(headers, body, md)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="*", default=None,
                   help="JSON objects of Advisor settings (default: the built-in list)")
    p.add_argument("--max-runs-per-task", type=int, default=40)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    settings = SETTINGS if args.settings is None else tuple(json.loads(s) for s in args.settings)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kwargs in settings:
            label = json.dumps(kwargs, sort_keys=True) if kwargs else "default"
            print(f"[frontier] {label}", file=sys.stderr, flush=True)
            rows += rows_for(label, run_setting(kwargs, args.max_runs_per_task, Path(tmp)))
    print(table(rows, md=False))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontier.json").write_text(json.dumps(
        {"split": "tune", "max_runs_per_task": args.max_runs_per_task, "git_commit":
         stopping._git_commit(), "rows": rows}, indent=1) + "\n")
    (args.out / "frontier.md").write_text(
        "# Advisor settings against the patience frontier (tune tasks)\n\n"
        f"{args.max_runs_per_task} runs per task (TaskSet: all learners), each setting replayed "
        "with the anchors in the same run. Target (a): saved >= es10 saved, regret <= es20 "
        "regret, harmful <= es20 harmful.\n\n" + table(rows, md=True) + "\n")
    print(f"\nwrote {args.out / 'frontier.json'} and {args.out / 'frontier.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
