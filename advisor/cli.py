"""The ``advisor`` command line: argument parsing and exit codes only.

Exit codes: 0 success, 1 an error in the input (named in a one-line message), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _replay(args: argparse.Namespace) -> int:
    from .io import CurveFileError, read_curves
    from .replay import replay

    frame = read_curves(args.curves)
    kwargs = json.loads(args.advisor_kwargs) if args.advisor_kwargs else {}
    try:
        decisions = replay(frame, monitor=args.monitor, mode=args.mode,
                           train_metric=args.train_metric, step_column=args.step_column,
                           **kwargs)
    except ValueError as exc:
        raise CurveFileError(f"{args.curves}: {exc}") from exc
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".partial")
        decisions.to_csv(tmp, index=False)
        tmp.replace(out)  # no half-written file if interrupted
        stopped = int(decisions["stopped"].sum())
        print(f"{len(decisions)} run(s) replayed, {stopped} stopped early; decisions in {out}")
    else:
        decisions.to_csv(sys.stdout, index=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advisor", description=(
        "Tells you when a training run is done: plateau, overfitting and divergence, with "
        "the statistics behind each verdict."))
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("replay", help="replay the advisor over runs in a CSV file",
                            description="Replay the advisor over every run of a curves CSV "
                                        "(long: run_id, epoch|step, metric, value[, task]; or "
                                        "wide, as Lightning's CSVLogger writes) and write one "
                                        "row of decisions per run.")
    p.add_argument("curves", help="CSV file, plain or .gz")
    p.add_argument("--monitor", default="val_loss", help="metric to judge (default: val_loss)")
    p.add_argument("--mode", choices=("min", "max"), default="min",
                   help="min if lower is better, max if higher is better (default: min)")
    p.add_argument("--train-metric", default=None, help="training metric, for overfitting evidence")
    p.add_argument("--step-column", default=None,
                   help="column of the x-axis (default: epoch, else step)")
    p.add_argument("--advisor-kwargs", default=None,
                   help="JSON object of further Advisor settings, e.g. '{\"min_checks\": 8}'")
    p.add_argument("--out", default=None, help="write decisions to this CSV (default: stdout)")
    p.set_defaults(func=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("advisor: interrupted; nothing written.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        print(f"advisor: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
