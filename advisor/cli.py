"""The ``advisor`` command line: argument parsing and exit codes only.

Exit codes: 0 success, 1 an error in the input, an unknown experiment or run, or a tracking
server that cannot be reached (named in a one-line message), 2 bad usage, 130 interrupted
(nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _replay(args: argparse.Namespace) -> int:
    from .io import CurveFileError, read_curves
    from .replay import replay

    kwargs = _advisor_kwargs(args)
    frame = read_curves(args.curves, numeric=(args.monitor, args.train_metric))
    try:
        decisions = replay(frame, monitor=args.monitor, mode=args.mode,
                           train_metric=args.train_metric, step_column=args.step_column,
                           **kwargs)
    except ValueError as exc:
        raise CurveFileError(f"{args.curves}: {exc}") from exc
    if args.out and args.out != "-":
        _write_csv(decisions, Path(args.out))
        stopped = int(decisions["stopped"].sum())
        print(f"{len(decisions)} run(s) replayed, {stopped} stopped early; decisions in "
              f"{args.out}")
    else:
        decisions.to_csv(sys.stdout, index=False)
    return 0


def _write_csv(frame: Any, out: Path) -> None:
    """Write ``frame`` to ``out``: a regular file (or a new one) atomically, through a temporary
    file renamed into place, so an interrupt leaves no half-written file; through a symbolic
    link, its target (the link stays); anything else (a device, a named pipe) is written
    through, never replaced by a file."""
    target = Path(os.path.realpath(out))
    try:
        if target.is_dir():
            raise ValueError(f"--out {out} is a directory; give a file name (or - for the "
                             f"standard output).")
        if target.exists() and not target.is_file():
            with open(target, "w", encoding="utf-8", newline="") as f:
                frame.to_csv(f, index=False)
            return
        tmp = target.with_name(target.name + ".partial")
        try:
            frame.to_csv(tmp, index=False)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OSError(f"cannot write the decisions to {out}: "
                      f"{exc.strerror or exc}.") from exc


def _advisor_kwargs(args: argparse.Namespace) -> dict:
    """``--advisor-kwargs``: a JSON object of Advisor settings the command does not set."""
    if not args.advisor_kwargs:
        return {}
    try:
        kwargs = json.loads(args.advisor_kwargs)
    except ValueError as exc:
        raise ValueError(f"--advisor-kwargs must be a JSON object, but it is not JSON "
                         f"({exc}).") from exc
    if not isinstance(kwargs, dict):
        raise ValueError(f"--advisor-kwargs must be a JSON object, but got {args.advisor_kwargs}.")
    taken = sorted(set(kwargs) & {"monitor", "mode", "train_metric", "max_steps",
                                  "step_column"})
    if taken:
        raise ValueError(f"--advisor-kwargs cannot set {', '.join(taken)}: the command's own "
                         "options set them (the budget is each run's own).")
    return kwargs


def _settings(args: argparse.Namespace) -> dict:
    return dict(_advisor_kwargs(args), monitor=args.monitor, mode=args.mode,
                train_metric=args.train_metric)


def _analyze(args: argparse.Namespace) -> int:
    from .report import advice_json, analyze_mlflow_run, format_advice
    from .tracking import connect, get_run, mlflow_errors

    client = connect(args.tracking_uri)
    run = get_run(client, args.run_id)
    with mlflow_errors(f"cannot read the experiment of run {args.run_id}"):
        experiment = client.get_experiment(run.info.experiment_id).name
    analysis = analyze_mlflow_run(client, run, experiment=experiment, **_settings(args))
    if analysis.advice is None:
        raise ValueError(analysis.skipped)
    print(advice_json(analysis) if args.json else format_advice(analysis))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import build_report, check_out, default_out, staged_folder
    from .tracking import (
        connect,
        experiment_runs,
        find_experiment,
        log_report_run,
        write_advice_tags,
    )

    out = Path(args.out) if args.out else default_out(args.experiment)
    check_out(out)  # before any work
    settings = _settings(args)
    client = connect(args.tracking_uri)
    experiment = find_experiment(client, args.experiment)
    runs = experiment_runs(client, experiment.experiment_id)
    if not runs:
        raise ValueError(f"experiment {args.experiment!r} has no runs.")

    def progress(items):
        if args.quiet:
            return items
        from tqdm import tqdm

        return tqdm(items, total=len(runs), desc="analysing runs", unit="run", file=sys.stderr,
                    mininterval=0.2)

    report_run = None
    with staged_folder(out) as folder:
        report = build_report(client, experiment, runs, folder, progress,
                              tracking_uri=client.tracking_uri, **settings)
        if args.log:
            report_run = log_report_run(client, experiment.experiment_id, folder,
                                        f"**training-advisor report**: {report.summary_line()} "
                                        "Open `index.html` in the artifacts.")
        if args.write_tags:
            for analysis in report.analysed:
                write_advice_tags(client, analysis)
    print(f"{report.summary_line()}\ndashboard: {out / 'index.html'}")
    for skipped in report.skipped:
        print(f"skipped {skipped.run_name}: {skipped.skipped}", file=sys.stderr)
    if report_run is not None:
        print(f"logged as run {report_run} of experiment {experiment.experiment_id}")
    if args.write_tags:
        print(f"advisor.* tags written to {len(report.analysed)} run(s)")
    return 0


def _flush(args: argparse.Namespace) -> int:
    from .callbacks._mlflow import flush_unwritten

    files = []
    for name in args.paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{name}: no such file or folder.")
    if not files:
        print(f"nothing to write: no kept advice in {', '.join(args.paths)}")
        return 0
    for path in files:
        done = flush_unwritten(path)
        ended = f"; run ended as {done.status}" if done.status else ""
        print(f"{path}: wrote {done.metrics} metric value(s), {done.tags} tag(s) and "
              f"{len(done.artifacts)} artifact(s) to run {done.run_id} at "
              f"{done.tracking_uri}{ended}")
    return 0


def _advice_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitor", default="val_loss", help="metric to judge (default: val_loss)")
    p.add_argument("--mode", choices=("min", "max"), default="min",
                   help="min if lower is better, max if higher is better (default: min)")
    p.add_argument("--train-metric", default=None, help="training metric, for overfitting evidence")
    p.add_argument("--advisor-kwargs", default=None,
                   help="JSON object of further Advisor settings, e.g. '{\"min_checks\": 8}'")


def _tracking_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db)")


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
    _advice_options(p)
    p.add_argument("--step-column", default=None,
                   help="column of the x-axis (default: epoch, else step)")
    p.add_argument("--out", default=None,
                   help="write decisions to this CSV (default, or -: standard output)")
    p.set_defaults(func=_replay)

    p = commands.add_parser("analyze", help="print the advice for one MLflow run",
                            description="Replay the advisor over one MLflow run (logged with or "
                                        "without the callback) and print its advice: verdict, "
                                        "reason, evidence, forecast.")
    p.add_argument("run_id", help="the MLflow run id")
    _tracking_option(p)
    _advice_options(p)
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    p.set_defaults(func=_analyze)

    p = commands.add_parser("report", help="dashboard of every run of an MLflow experiment",
                            description="Replay the advisor over every run of an MLflow "
                                        "experiment and write a dashboard: a sortable table of "
                                        "verdicts and a grid of curves (index.html), one report "
                                        "per run (runs/<run_id>.html) and summary.csv.")
    p.add_argument("--experiment", required=True, help="the experiment's name")
    _tracking_option(p)
    p.add_argument("--out", default=None,
                   help="folder to write (default: advisor-report-<experiment>); replaced if it "
                        "holds an earlier report")
    _advice_options(p)
    p.add_argument("--log", action="store_true",
                   help="also log the dashboard as artifacts of a new run 'advisor-report' in "
                        "the experiment")
    p.add_argument("--write-tags", action="store_true",
                   help="write the advice as advisor.* tags (and the description) of each "
                        "analysed run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_report)

    p = commands.add_parser("flush", help="write advice kept on disk during an outage",
                            description="Write what the callback could not write to MLflow "
                                        "before its run ended (kept in advisor_unwritten/ under "
                                        "the trainer's root folder) and end the run it created; "
                                        "each file is deleted once written.")
    p.add_argument("paths", nargs="+", help="kept files, or folders of them")
    p.set_defaults(func=_flush)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return args.func(args)
        from .tracking import bounded_requests

        with bounded_requests():  # no MLflow request waits long on a server that hangs
            return args.func(args)
    except KeyboardInterrupt:
        print("advisor: interrupted; nothing written.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line
        print(f"advisor: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
