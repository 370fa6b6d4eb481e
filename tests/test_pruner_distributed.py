"""AdvisorPruner in a 4-process sweep on shared storage: real PostgreSQL and JournalStorage.

Four worker processes (this file run as a script: ``python tests/test_pruner_distributed.py
STORAGE STUDY N OUT WORKER``) load the same study with their own ``AdvisorPruner`` and run ``N``
trials each of an objective that replays a constructed learning curve chosen by the trial's
number: converging early (a plateau: finished early as COMPLETE through ``advise_trial``), still
improving, hopeless (a floor four times the others') and diverging (NaN mid-run). The workers wait
for each other before optimizing, so their trials really interleave. The test then reads the
study back: no lost or duplicated trials, every report stored, every pruned trial with its reason,
every early-finished trial marked, and a fresh pruner in this process reproduces the decisions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

WORKERS = 4
TRIALS_PER_WORKER = 5
LAST_STEP = 29  # steps 0..29: the pruner's budget
STARTUP = 3  # n_startup_trials
KINDS = ("converging", "hopeless", "improving", "diverging")
NAN_STEP = 8  # a diverging trial reports NaN from here on


def curve(kind: str, number: int) -> list[float]:
    """The learning curve the trial with this number replays (a pure function of both)."""
    rng = np.random.default_rng(number)
    e = np.arange(LAST_STEP + 1, dtype=float)
    noise = 0.00001 * rng.standard_normal(e.size)  # well below the sweep's 0.1% tolerance
    if kind == "converging":
        values = 0.2 + 0.8 * np.exp(-e / 1.5) + noise
    elif kind == "hopeless":
        values = 0.8 + 0.4 * np.exp(-e / 5.0) + noise
    elif kind == "improving":
        values = 0.18 + 0.9 * np.exp(-e / 14.0) + noise
    elif kind == "diverging":
        values = 0.15 + 0.8 * np.exp(-e / 4.0) + noise  # on course to win
        values[NAN_STEP:] = math.nan
    else:
        raise ValueError(kind)
    return [float(v) for v in values]


def kind_of(number: int) -> str:
    return KINDS[number % len(KINDS)]


def make_pruner():
    from advisor import AdvisorPruner

    return AdvisorPruner(max_steps=LAST_STEP, n_startup_trials=STARTUP)


def open_storage(spec: str):
    """An Optuna storage from a spec: an RDB URL, or ``journal:PATH`` for a journal file."""
    if spec.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(spec[len("journal:"):]))
    return spec


# ---------------------------------------------------------------------------- the worker script
def _worker(storage: str, study_name: str, n_trials: int, out: Path, worker: int) -> None:
    import optuna

    from advisor import advise_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage),
                              pruner=make_pruner())
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        values = curve(kind_of(trial.number), trial.number)
        for step, value in enumerate(values):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
            advice = advise_trial(trial)
            if advice.should_stop:
                return advice.best_value
        return min(values)

    # start together: every worker has loaded the study before any trial runs
    (out / f"ready{worker}").touch()
    deadline = time.monotonic() + 120
    while len(list(out.glob("ready*"))) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers did not start")
        time.sleep(0.01)
    study.optimize(objective, n_trials=n_trials)
    (out / f"worker{worker}.json").write_text(json.dumps({"pid": os.getpid(), "trials": ran}))


# ---------------------------------------------------------------------------- the test
def sweep(storage: str, tmp_path: Path) -> tuple[object, list[dict]]:
    """Create a study, run the 4 workers on it, return the study (read back) and their records."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_name = f"distributed-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=study_name, storage=open_storage(storage),
                        direction="minimize")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    procs = [subprocess.Popen([sys.executable, __file__, storage, study_name,
                               str(TRIALS_PER_WORKER), str(tmp_path), str(w)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for w in range(WORKERS)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=180)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for w, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"worker {w} exited with {proc.returncode}:\n{output[-4000:]}"
    records = [json.loads((tmp_path / f"worker{w}.json").read_text()) for w in range(WORKERS)]
    # read back in this process, with a pruner of its own
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage),
                              pruner=make_pruner())
    return study, records


def check_sweep(study, records: list[dict]) -> None:
    from optuna.trial import TrialState

    from advisor import Verdict

    total = WORKERS * TRIALS_PER_WORKER
    trials = study.get_trials(deepcopy=False)

    # no lost or duplicated trials: in the storage, and as the workers saw them
    assert len(trials) == total
    assert sorted(t.number for t in trials) == list(range(total))
    assert len({t._trial_id for t in trials}) == total
    ran = [n for record in records for n in record["trials"]]
    assert sorted(ran) == list(range(total)), "a trial number was run twice or never"
    assert all(len(r["trials"]) == TRIALS_PER_WORKER for r in records)
    assert len({r["pid"] for r in records}) == WORKERS
    # the workers really ran at the same time: trials of different workers overlapped in time
    trials_by_number = {t.number: t for t in trials}
    spans = [[(trials_by_number[n].datetime_start, trials_by_number[n].datetime_complete)
              for n in r["trials"]] for r in records]
    assert any(s1 < e2 and s2 < e1 for i, a in enumerate(spans) for b in spans[i + 1:]
               for s1, e1 in a for s2, e2 in b), "the workers' trials never overlapped"

    states = {t.number: t.state for t in trials}
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    for t in trials:
        # every report reached the storage, once, at its step
        expected = curve(kind_of(t.number), t.number)[: t.last_step + 1]
        reported = [t.intermediate_values[s] for s in range(t.last_step + 1)]
        assert sorted(t.intermediate_values) == list(range(t.last_step + 1)), t.number
        assert np.allclose(reported, expected, equal_nan=True), t.number

    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    early = [t for t in complete if t.user_attrs.get("advisor.finished_early")]
    assert pruned and early, {t.number: t.state.name for t in trials}
    for t in pruned:
        attrs = t.user_attrs
        assert attrs.get("advisor.pruned") is True, (t.number, attrs)
        assert attrs["advisor.verdict"] in (Verdict.DIVERGED.value, Verdict.UNPROMISING.value)
        assert attrs["advisor.reason"], t.number
        assert "advisor.finished_early" not in attrs
    for t in complete:
        if t in early:
            assert t.user_attrs["advisor.verdict"] in (Verdict.PLATEAU.value,
                                                       Verdict.OVERFITTING.value)
            assert t.user_attrs["advisor.reason"]
            assert t.last_step < LAST_STEP
            assert t.value == pytest.approx(min(t.intermediate_values.values()))
        else:
            assert "advisor.verdict" not in t.user_attrs, t.number
            assert t.last_step == LAST_STEP

    # by kind: every diverging trial is pruned, at its first NaN unless on promise before; no
    # converging trial diverges; a hopeless trial that started after STARTUP competitive trials
    # had completed (so its forecast has a target far below it) is pruned
    for t in trials:
        kind = kind_of(t.number)
        if kind == "diverging":
            assert t.state is TrialState.PRUNED and t.last_step <= NAN_STEP, t.number
            if t.last_step == NAN_STEP:
                assert t.user_attrs["advisor.verdict"] == Verdict.DIVERGED.value
        elif kind == "converging":
            assert t.user_attrs.get("advisor.verdict") != Verdict.DIVERGED.value, t.number
        elif kind == "hopeless":
            before = [c for c in complete if c.datetime_complete < t.datetime_start
                      and c.value is not None and c.value < 0.5]
            if len(before) >= STARTUP:
                assert t.state is TrialState.PRUNED, (t.number, t.user_attrs)
                assert t.user_attrs["advisor.verdict"] == Verdict.UNPROMISING.value
    verdicts = {t.user_attrs["advisor.verdict"] for t in pruned}
    assert verdicts == {Verdict.DIVERGED.value, Verdict.UNPROMISING.value}, verdicts

    # a fresh pruner in this process, which never saw the trials, gives the same advice from the
    # stored values: the same divergence and its reason, the same forecast for a trial pruned
    # on promise, the same stop and reason for a trial finished early
    fresh = study.pruner
    for t in pruned:
        advice = fresh.advise(study, t)
        if t.user_attrs["advisor.verdict"] == Verdict.DIVERGED.value:
            assert advice.verdict is Verdict.DIVERGED
            assert advice.reason == t.user_attrs["advisor.reason"], t.number
        else:
            assert advice.forecast is not None, t.number
            assert advice.forecast.value == pytest.approx(t.user_attrs["advisor.predicted_final"])
    for t in early:
        advice = fresh.advise(study, t)
        assert advice.should_stop and advice.reason == t.user_attrs["advisor.reason"], t.number


def test_four_process_sweep_on_postgresql(postgres, tmp_path):
    study, records = sweep(postgres.url, tmp_path)
    check_sweep(study, records)


def test_four_process_sweep_on_a_journal_file(tmp_path):
    study, records = sweep(f"journal:{tmp_path / 'journal.log'}", tmp_path)
    check_sweep(study, records)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
