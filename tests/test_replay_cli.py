"""Replaying finished runs from frames and files, and the ``advisor replay`` command."""

from __future__ import annotations

import gzip
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advisor import replay
from advisor.cli import main
from advisor.replay import long_to_wide

ADVISOR_SCRIPT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "advisor"
VERDICTS = {"improving", "undecided", "plateau", "overfitting", "diverged"}


def _long_frame(lengths=(60, 60), tasks=("mnist", "cifar")) -> pd.DataFrame:
    """Run 'sat' saturates (0.3 + exp(-e/4)); run 'slow' keeps improving (1/sqrt(e))."""
    rows = []
    for run_id, task, n in zip(("sat", "slow"), tasks, lengths, strict=True):
        for e in range(1, n + 1):
            val = 0.3 + np.exp(-e / 4) if run_id == "sat" else 1 / np.sqrt(e)
            rows.append({"run_id": run_id, "task": task, "epoch": e,
                         "metric": "val_loss", "value": val})
            rows.append({"run_id": run_id, "task": task, "epoch": e,
                         "metric": "train_loss", "value": 0.9 * val})
    return pd.DataFrame(rows)


def _lightning_metrics(val: np.ndarray, train: np.ndarray, batches: int = 3) -> pd.DataFrame:
    """Rows as Lightning's CSVLogger writes them: step rows, a validation row, an epoch row."""
    rows, step = [], 0
    for epoch, (v, t) in enumerate(zip(val, train, strict=True)):
        for _ in range(batches):
            step += 1
            rows.append({"epoch": epoch, "step": step, "train_loss_step": t + 0.01 * (step % 3)})
        rows.append({"epoch": epoch, "step": step, "val_loss": v})
        rows.append({"epoch": epoch, "step": step, "train_loss_epoch": t})
    return pd.DataFrame(rows, columns=["epoch", "step", "train_loss_step", "val_loss",
                                       "train_loss_epoch"])


# ---------------------------------------------------------------------------- replay()


def test_replay_long_frame_gives_one_row_per_run():
    out = replay(_long_frame(), monitor="val_loss", mode="min", train_metric="train_loss")
    assert len(out) == 2
    assert {"run_id", "task", "stop_epoch", "verdict", "reason", "best_epoch"} <= set(out.columns)
    assert sorted(zip(out["run_id"], out["task"], strict=True)) == [("sat", "mnist"),
                                                                   ("slow", "cifar")]
    assert set(out["verdict"]) <= VERDICTS


def test_replay_long_frame_without_task_gives_one_row_per_run():
    frame = _long_frame().drop(columns="task")
    out = replay(frame, monitor="val_loss", train_metric="train_loss")
    assert sorted(out["run_id"]) == ["sat", "slow"]


def test_replay_stops_a_saturating_run_early_and_not_an_improving_one():
    frame = _long_frame().drop(columns="task")
    out = replay(frame, monitor="val_loss", train_metric="train_loss").set_index("run_id")
    sat = out.loc["sat"]
    assert sat["verdict"] == "plateau"
    assert sat["stop_epoch"] < 60 and bool(sat["stopped"])
    assert sat["best_epoch"] <= sat["stop_epoch"]
    assert "val_loss" in sat["reason"]
    assert not bool(out.loc["slow", "stopped"]) or out.loc["slow", "stop_epoch"] > sat["stop_epoch"]


def test_replay_uses_each_runs_own_last_epoch():
    frame = _long_frame(lengths=(40, 60)).drop(columns="task")
    out = replay(frame, monitor="val_loss").set_index("run_id")
    assert out.loc["sat", "last_epoch"] == 40
    assert out.loc["slow", "last_epoch"] == 60


def test_replay_decisions_use_only_past_values():
    frame = _long_frame().drop(columns="task")
    before = replay(frame, monitor="val_loss").set_index("run_id")
    stop = before.loc["sat", "stop_epoch"]
    assert stop < 60
    spoiled = frame.copy()
    future = (spoiled["run_id"] == "sat") & (spoiled["epoch"] > stop)
    spoiled.loc[future, "value"] = 1e6  # a spike after the stop
    after = replay(spoiled, monitor="val_loss").set_index("run_id")
    assert after.loc["sat", "stop_epoch"] == stop
    assert after.loc["sat", "best_epoch"] == before.loc["sat", "best_epoch"]


def test_replay_of_a_wide_frame_with_several_rows_per_epoch_works():
    e = np.arange(60)
    frame = _lightning_metrics(0.3 + np.exp(-(e + 1) / 4), 0.2 + np.exp(-(e + 1) / 5))
    out = replay(frame, monitor="val_loss", train_metric="train_loss_epoch")
    assert len(out) == 1
    row = out.iloc[0]
    assert row["verdict"] == "plateau"
    assert row["stop_epoch"] < 59 and row["stop_epoch"] in set(e)
    assert row["best_epoch"] in set(e)


def test_replay_of_a_lightning_frame_equals_replay_of_its_merged_rows():
    """CSVLogger writes validation and epoch-level train metrics on separate rows of the same
    epoch; the replay merges them (last value wins), so the train metric is seen."""
    rng = np.random.default_rng(0)
    x = np.arange(60.0)
    val = 0.5 + 0.003 * (x - 15) ** 2 + rng.normal(0, 0.005, x.size)
    train = 1 / np.sqrt(x + 1)
    frame = _lightning_metrics(val, train)
    merged = frame.groupby("epoch", as_index=False).last()
    kwargs = {"monitor": "val_loss", "train_metric": "train_loss_epoch"}
    got, expected = replay(frame, **kwargs), replay(merged, **kwargs)
    assert expected.iloc[0]["verdict"] == "overfitting"
    assert "train_loss_epoch" in expected.iloc[0]["reason"]
    pd.testing.assert_frame_equal(got, expected)


def test_replay_of_an_accuracy_in_mode_max_mirrors_the_loss_in_mode_min():
    e = np.arange(1, 61)
    loss = pd.DataFrame({"step": 100 * e, "val_loss": 0.3 + np.exp(-e / 4)})
    acc = pd.DataFrame({"step": 100 * e, "val_acc": 1.0 - loss["val_loss"]})
    # the same tolerance in the metric's units for both (1% of 0.3 is not 1% of 0.7)
    same = {"min_improvement": 0.0, "min_delta": 0.003}
    low = replay(loss, monitor="val_loss", mode="min", **same).iloc[0]
    high = replay(acc, monitor="val_acc", mode="max", **same).iloc[0]
    assert high["verdict"] == low["verdict"] == "plateau"
    assert high["stop_epoch"] == low["stop_epoch"] < 6000
    assert high["best_epoch"] == low["best_epoch"]
    assert high["best_value"] == pytest.approx(1.0 - low["best_value"])


def test_replay_with_unknown_monitor_names_the_metrics_present():
    with pytest.raises(ValueError, match="val_acc.*train_loss, val_loss"):
        replay(_long_frame(), monitor="val_acc")


# ---------------------------------------------------------------------------- command line


@pytest.fixture
def long_csv(tmp_path) -> Path:
    """Two runs in long format (no task column: the task case is tested on replay itself)."""
    path = tmp_path / "curves.csv"
    _long_frame().drop(columns="task").to_csv(path, index=False)
    return path


def _args(path, out):
    return ["replay", str(path), "--monitor", "val_loss", "--mode", "min",
            "--train-metric", "train_loss", "--out", str(out)]


def test_cli_replay_writes_one_row_per_run(long_csv, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(_args(long_csv, out)) == 0
    decisions = pd.read_csv(out)
    assert len(decisions) == 2
    assert set(decisions["run_id"]) == {"sat", "slow"}
    assert set(decisions["verdict"]) <= VERDICTS
    assert not (tmp_path / "out.csv.partial").exists()
    assert capsys.readouterr().err == ""


def test_cli_replay_reads_gzip_files(tmp_path):
    path = tmp_path / "curves.csv.gz"
    with gzip.open(path, "wt") as f:
        _long_frame().drop(columns="task").to_csv(f, index=False)
    out = tmp_path / "out.csv"
    assert main(_args(path, out)) == 0
    decisions = pd.read_csv(out).set_index("run_id")
    assert sorted(decisions.index) == ["sat", "slow"]
    assert decisions.loc["sat", "verdict"] == "plateau"


def test_cli_replay_reads_a_lightning_metrics_file(tmp_path):
    e = np.arange(60)
    path, out = tmp_path / "metrics.csv", tmp_path / "out.csv"
    _lightning_metrics(0.3 + np.exp(-(e + 1) / 4), 0.2 + np.exp(-(e + 1) / 5)).to_csv(
        path, index=False)
    argv = ["replay", str(path), "--train-metric", "train_loss_epoch", "--out", str(out)]
    assert main(argv) == 0
    decisions = pd.read_csv(out)
    assert len(decisions) == 1
    assert decisions.loc[0, "verdict"] == "plateau"


def test_cli_replay_to_stdout(long_csv, capsys):
    assert main(["replay", str(long_csv), "--monitor", "val_loss"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 2  # header and one row per run
    assert "stop_epoch" in lines[0]


def test_installed_console_script_replays_a_file(long_csv, tmp_path):
    out = tmp_path / "out.csv"
    result = subprocess.run([str(ADVISOR_SCRIPT), *_args(long_csv, out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(out)) == 2


def _check_error(capsys, argv, out, *needles):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not out.with_name(out.name + ".partial").exists()


def test_cli_missing_file_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "nope.csv", tmp_path / "out.csv"
    _check_error(capsys, _args(path, out), out, "nope.csv")


def test_cli_file_without_epoch_or_step_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "noepoch.csv", tmp_path / "out.csv"
    _long_frame().drop(columns="epoch").to_csv(path, index=False)
    _check_error(capsys, _args(path, out), out, "noepoch.csv", "epoch")


def test_cli_non_numeric_value_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "badvalue.csv", tmp_path / "out.csv"
    frame = _long_frame().astype({"value": object})
    frame.loc[5, "value"] = "abc"
    frame.to_csv(path, index=False)
    _check_error(capsys, _args(path, out), out, "badvalue.csv", "'value'", "abc")


def test_cli_non_numeric_epoch_in_a_long_file_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "badepoch.csv", tmp_path / "out.csv"
    frame = _long_frame().astype({"epoch": object})
    frame.loc[7, "epoch"] = "x"
    frame.to_csv(path, index=False)
    _check_error(capsys, _args(path, out), out, "badepoch.csv", "'epoch'")


def test_cli_non_numeric_epoch_in_a_wide_file_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "badwide.csv", tmp_path / "out.csv"
    frame = pd.DataFrame({"epoch": ["1", "2", "three"], "val_loss": [1.0, 0.9, 0.8]})
    frame.to_csv(path, index=False)
    _check_error(capsys, ["replay", str(path), "--out", str(out)], out, "badwide.csv", "'epoch'")


def test_cli_long_file_without_run_id_is_an_input_error(tmp_path, capsys):
    path, out = tmp_path / "norun.csv", tmp_path / "out.csv"
    _long_frame().drop(columns="run_id").to_csv(path, index=False)
    _check_error(capsys, _args(path, out), out, "norun.csv", "run_id")


def test_cli_unknown_monitor_is_an_input_error(long_csv, tmp_path, capsys):
    out = tmp_path / "out.csv"
    argv = ["replay", str(long_csv), "--monitor", "val_acc", "--out", str(out)]
    _check_error(capsys, argv, out, "curves.csv", "val_acc")


def test_cli_passes_advisor_settings_and_reports_bad_ones(long_csv, tmp_path, capsys):
    out = tmp_path / "out.csv"
    strict = ["--advisor-kwargs", '{"min_checks": 59}']
    assert main([*_args(long_csv, out), *strict]) == 0
    assert not pd.read_csv(out)["stopped"].any()  # no verdict before 59 checks
    out.unlink()
    _check_error(capsys, [*_args(long_csv, out), "--advisor-kwargs", '{"min_checks": 1}'], out,
                 "min_checks")
    _check_error(capsys, [*_args(long_csv, out), "--advisor-kwargs", "{not json"], out)


def test_cli_bad_usage_exits_with_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["replay"])
    assert info.value.code == 2


# ---------------------------------------------------------------------------- --out targets
def test_cli_out_dash_writes_to_stdout(long_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["replay", str(long_csv), "--out", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run_id,") and len(lines) == 1 + 2
    assert not (tmp_path / "-").exists()


def test_cli_out_through_a_symlink_writes_its_target_and_keeps_the_link(long_csv, tmp_path):
    target, link = tmp_path / "decisions.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    assert main(["replay", str(long_csv), "--out", str(link)]) == 0
    assert link.is_symlink() and link.resolve() == target
    assert len(pd.read_csv(target)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.csv", "decisions.csv",
                                                           "link.csv"]


def test_cli_out_to_a_device_writes_through_it(long_csv, tmp_path, capsys):
    """A device is written to, never replaced by a file (as root, --out /dev/full replaced the
    device node); the link keeps the test away from the real device nodes."""
    null, full = tmp_path / "null", tmp_path / "full"
    null.symlink_to("/dev/null")
    full.symlink_to("/dev/full")
    assert main(["replay", str(long_csv), "--out", str(null)]) == 0
    assert null.is_symlink() and Path("/dev/null").is_char_device()
    capsys.readouterr()
    assert main(["replay", str(long_csv), "--out", str(full)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(full) in err and "No space left" in err, err
    assert full.is_symlink() and Path("/dev/full").is_char_device()
    assert not list(tmp_path.glob("*.partial*")) and not list(Path("/dev").glob("*.partial*"))


def test_cli_out_to_a_named_pipe_writes_through_it(long_csv, tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["replay", str(long_csv), "--out", str(fifo)]) == 0
    reader.join(timeout=30)
    assert fifo.is_fifo()
    assert received and received[0].decode().startswith("run_id,")
    assert len(received[0].decode().strip().splitlines()) == 1 + 2


def test_cli_out_to_a_directory_is_an_input_error(long_csv, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["replay", str(long_csv), "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder) in err and "directory" in err, err
    assert folder.is_dir() and not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.csv", "folder"]


# ---------------------------------------------------------------------------- run ids as text
def test_cli_reads_run_ids_as_text_and_replays_every_run(tmp_path):
    """Ids that pandas would read as missing (NA, null, None, nan, n/a) or as numbers (007)
    are run ids like any other: 15 runs in, 15 rows out, ids unchanged."""
    ids = ["NA", "null", "None", "nan", "n/a", "NaN", "NULL", "#N/A", "007", "7", "1e3", "-",
           "true", "<NA>", "ok"]
    e = np.arange(1, 31)
    frame = pd.concat([pd.DataFrame({"run_id": run_id, "epoch": e, "metric": "val_loss",
                                     "value": 0.3 + np.exp(-e / (4 + i))})
                       for i, run_id in enumerate(ids)])
    path, out = tmp_path / "ids.csv", tmp_path / "out.csv"
    frame.to_csv(path, index=False)
    assert main(["replay", str(path), "--out", str(out)]) == 0
    decisions = pd.read_csv(out, dtype={"run_id": str}, keep_default_na=False)
    assert sorted(decisions["run_id"]) == sorted(ids)


def test_cli_empty_run_id_is_an_input_error_naming_the_line(tmp_path, capsys):
    path, out = tmp_path / "empty-id.csv", tmp_path / "out.csv"
    frame = _long_frame().drop(columns="task")
    frame.loc[6, "run_id"] = ""
    frame.to_csv(path, index=False)
    _check_error(capsys, _args(path, out), out, "empty-id.csv", "'run_id'", "line 8")


def test_replay_of_a_frame_with_missing_run_ids_is_an_error():
    frame = _long_frame().drop(columns="task")
    frame.loc[3, "run_id"] = None
    with pytest.raises(ValueError, match="run_id.*missing in 1 row"):
        replay(frame, monitor="val_loss")


# ---------------------------------------------------------------------------- messages
def test_cli_truncated_gzip_file_is_an_input_error(tmp_path, capsys):
    whole, path, out = tmp_path / "whole.csv.gz", tmp_path / "cut.csv.gz", tmp_path / "out.csv"
    with gzip.open(whole, "wt") as f:
        _long_frame().drop(columns="task").to_csv(f, index=False)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _check_error(capsys, _args(path, out), out, "cut.csv.gz", "not a readable CSV file")


@pytest.mark.parametrize(("column", "argv"), [("val_loss", []),
                                               ("train_loss", ["--train-metric", "train_loss"])])
def test_cli_unparseable_cell_of_a_judged_metric_names_file_line_and_value(tmp_path, capsys,
                                                                           column, argv):
    """It said "'val_loss' is not among the logged metrics: none" (or replayed without the
    training metric, silently)."""
    path, out = tmp_path / "wide.csv", tmp_path / "out.csv"
    e = np.arange(1, 31)
    frame = pd.DataFrame({"epoch": e, "val_loss": 1 / e, "train_loss": 0.9 / e}).astype(object)
    frame.loc[4, column] = "0.2.1"
    frame.to_csv(path, index=False)
    _check_error(capsys, ["replay", str(path), *argv, "--out", str(out)], out, "wide.csv",
                 f"column {column!r} must hold numbers, but line 6 has '0.2.1'")


def test_cli_step_beyond_the_float_range_names_file_and_line(tmp_path, capsys):
    """An epoch of 1e400 (read as inf) was blamed on max_steps."""
    path, out = tmp_path / "wide.csv", tmp_path / "out.csv"
    e = [str(x) for x in range(1, 31)]
    e[6] = "1e400"
    pd.DataFrame({"epoch": e, "val_loss": np.linspace(1, 0.5, 30)}).to_csv(path, index=False)
    _check_error(capsys, ["replay", str(path), "--out", str(out)], out, "wide.csv",
                 "column 'epoch' must hold finite numbers, but line 8 has inf")


def test_cli_directory_and_bad_advisor_kwargs_are_named(long_csv, tmp_path, capsys):
    out = tmp_path / "out.csv"
    _check_error(capsys, ["replay", str(tmp_path), "--out", str(out)], out,
                 f"{tmp_path}: is a directory, not a curves file")
    _check_error(capsys, [*_args(long_csv, out), "--advisor-kwargs", "[1]"], out,
                 "--advisor-kwargs must be a JSON object, but got [1]")
    _check_error(capsys, [*_args(long_csv, out), "--advisor-kwargs", '{"max_steps": 5}'], out,
                 "--advisor-kwargs cannot set max_steps")


def test_replay_of_a_frame_with_text_in_the_monitored_metric_names_the_row():
    frame = _long_frame().drop(columns="task")
    wide = long_to_wide(frame).astype({"val_loss": object})
    wide.loc[3, "val_loss"] = "oops"
    with pytest.raises(ValueError, match="column 'val_loss' must hold numbers, but row 3 has "
                                         "'oops'"):
        replay(wide, monitor="val_loss")


def test_a_nan_logged_as_the_monitor_is_a_divergence_not_a_gap():
    # the long format (and MLflow) keep a NaN the run logged; a wide frame would read it as
    # "not logged at this step" and go on judging the last finite value
    rows = [("a", e, "val_loss", 1.0 / e if e <= 10 else math.nan) for e in range(1, 31)]
    rows += [("a", e, "train_loss", 0.9 / e) for e in range(1, 31)]
    row = replay(pd.DataFrame(rows, columns=["run_id", "epoch", "metric", "value"]),
                 monitor="val_loss", train_metric="train_loss").iloc[0]
    assert row["verdict"] == "diverged" and row["stopped"]
    assert (row["stop_epoch"], row["best_epoch"], row["last_epoch"]) == (11.0, 10.0, 30.0)
    # a metric that was simply not logged at some epochs is still a gap, not a divergence
    gaps = [r for r in rows if not (r[2] == "val_loss" and r[1] > 10)]
    row = replay(pd.DataFrame(gaps, columns=["run_id", "epoch", "metric", "value"]),
                 monitor="val_loss").iloc[0]
    assert row["verdict"] != "diverged"


def test_a_step_column_that_is_the_monitor_is_refused_by_name():
    frame = pd.DataFrame({"epoch": range(1, 11), "val_loss": [1.0 / e for e in range(1, 11)]})
    with pytest.raises(ValueError, match="step column 'val_loss' cannot also be the monitored"):
        replay(frame, monitor="val_loss", step_column="val_loss")
    row = replay(frame, monitor="val_loss", step_column="epoch").iloc[0]
    assert row["last_epoch"] == 10.0
