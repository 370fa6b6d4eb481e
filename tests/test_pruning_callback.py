"""AdvisorPruningCallback in real Lightning fits inside Optuna studies with AdvisorPruner.

Each trial trains the tiny linear regression of ``lightning_models`` on data made here: with
``lr=0.05`` it learns and plateaus within about 20 epochs; with ``lr=1e-4`` it barely moves (a
hopeless trial). The DDP test runs a real 2-process CPU DDP fit (``strategy="ddp"``, gloo) in a
subprocess, like ``test_ddp.py``: this file is also that script (``python
tests/test_pruning_callback.py OUT JOURNAL STUDY TRIAL_ID``). ``ddp_spawn`` cannot be used: it
pickles the callback, and the callback's trial holds the study's storage, which need not pickle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import torch
from lightning_models import LinearRegression, loaders
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from processes import run_ddp_script

from advisor import AdvisorPruner, AdvisorPruningCallback, Verdict

MAX_EPOCHS = 40
GOOD_LR, HOPELESS_LR = 0.05, 1e-4

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*LeafSpec.*",
)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Checks(pl.Callback):
    """What Lightning logged at each validation check: the global step and val_loss."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)
            self.values.append(float(trainer.callback_metrics["val_loss"]))


def fit(callbacks: list, *, lr: float, max_epochs: int = MAX_EPOCHS, batch_size: int = 64,
        **trainer_kwargs) -> pl.Trainer:
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, **trainer_kwargs)
    train, val = loaders(batch_size)
    trainer.fit(LinearRegression(lr=lr), train, val)
    return trainer


def make_pruner() -> AdvisorPruner:
    return AdvisorPruner(max_steps=MAX_EPOCHS, n_startup_trials=1)


def objective_for(lr: float, checks: Checks | None = None, **callback_kwargs):
    """The objective a user writes: fit with the callback, return its best value."""
    def objective(trial: optuna.Trial) -> float:
        pruning = AdvisorPruningCallback(trial, monitor="val_loss", log_to_mlflow=False,
                                         **callback_kwargs)
        fit([pruning] + ([checks] if checks else []), lr=lr)
        pruning.check_pruned()
        return pruning.best_value
    return objective


def study_with_a_good_trial(**kwargs) -> optuna.Study:
    """A study whose first trial (lr=0.05) learned, plateaued and finished COMPLETE, and three
    more finished trials like it (the pruner compares a trial with what finished ones gained
    after the same epoch, so it needs a few)."""
    study = optuna.create_study(pruner=make_pruner(), **kwargs)
    study.optimize(objective_for(GOOD_LR), n_trials=1)
    add_finished_copies(study)
    return study


def add_finished_copies(study: optuna.Study) -> None:
    """Three COMPLETE trials whose curves are the first trial's, 5-15% higher."""
    first = study.trials[0]
    assert first.state is TrialState.COMPLETE
    for k in (1, 2, 3):
        values = {s: v * (1 + 0.05 * k) for s, v in first.intermediate_values.items()}
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE,
                                                  value=min(values.values()),
                                                  intermediate_values=values))


# ---------------------------------------------------------------------------- one process
def test_a_hopeless_trial_raises_trial_pruned_from_fit_and_is_pruned_with_its_reason():
    study = study_with_a_good_trial()
    trial = study.ask()
    pruning = AdvisorPruningCallback(trial, log_to_mlflow=False)
    checks = Checks()
    with pytest.raises(optuna.TrialPruned) as raised:
        fit([pruning, checks], lr=HOPELESS_LR)
    study.tell(trial, state=TrialState.PRUNED)
    frozen = study.trials[trial.number]
    assert frozen.state is TrialState.PRUNED
    # pruned early, at the check it was told to: every check reported, at epochs 1..k
    epochs = len(checks.values)
    assert 3 <= epochs < MAX_EPOCHS // 2
    assert frozen.intermediate_values == pytest.approx(
        dict(zip(range(1, epochs + 1), checks.values, strict=True)))
    attrs = frozen.user_attrs
    assert attrs["advisor.pruned"] is True
    assert attrs["advisor.verdict"] == Verdict.UNPROMISING.value
    assert attrs["advisor.reason"].startswith("Unpromising")
    # the trial's steps are epochs: the reason counts in epochs, as the tags do
    assert f"after epoch {epochs}" in attrs["advisor.reason"]
    assert " step" not in attrs["advisor.reason"]
    assert str(raised.value) == attrs["advisor.reason"] == pruning.prune_reason
    assert attrs["advisor.target"] == pytest.approx(study.best_value)
    assert pruning.pruned and pruning.stopped_step == epochs
    with pytest.raises(optuna.TrialPruned):  # check_pruned says it too (harmless with 1 process)
        pruning.check_pruned()


def test_a_hopeless_trial_in_study_optimize_ends_pruned():
    study = study_with_a_good_trial()
    study.optimize(objective_for(HOPELESS_LR), n_trials=1)
    frozen = study.trials[-1]
    assert frozen.state is TrialState.PRUNED
    assert frozen.user_attrs["advisor.reason"]
    assert frozen.last_step < MAX_EPOCHS // 2


def test_a_converged_trial_stops_early_and_completes_with_its_best_value():
    study = optuna.create_study(pruner=make_pruner())
    checks = Checks()
    values: list[float] = []

    def objective(trial):
        pruning = AdvisorPruningCallback(trial, log_to_mlflow=False)
        trainer = fit([pruning, checks], lr=GOOD_LR)
        pruning.check_pruned()
        values.append(pruning.best_value)
        assert trainer.current_epoch == len(checks.values) < MAX_EPOCHS
        assert pruning.stop_reason is not None and not pruning.pruned
        return pruning.best_value

    study.optimize(objective, n_trials=1)
    frozen = study.trials[0]
    assert frozen.state is TrialState.COMPLETE
    assert frozen.last_step == len(checks.values) < MAX_EPOCHS
    assert frozen.value == values[0] == pytest.approx(min(checks.values))
    assert frozen.value == pytest.approx(min(frozen.intermediate_values.values()))
    attrs = frozen.user_attrs
    assert attrs["advisor.finished_early"] is True
    assert attrs["advisor.verdict"] in (Verdict.PLATEAU.value, Verdict.OVERFITTING.value)
    assert attrs["advisor.reason"] and attrs["advisor.best_value"] == pytest.approx(frozen.value)
    assert "advisor.pruned" not in attrs


def test_with_validation_twice_an_epoch_steps_are_global_steps_and_never_collide():
    study = optuna.create_study(pruner=AdvisorPruner(n_startup_trials=1))  # max_steps="auto"
    trial = study.ask()
    pruning = AdvisorPruningCallback(trial, log_to_mlflow=False)
    checks = Checks()
    fit([pruning, checks], lr=GOOD_LR, max_epochs=5, batch_size=32, val_check_interval=0.5)
    study.tell(trial, pruning.best_value)
    frozen = study.trials[0]
    # 6 batches an epoch: checks after batches 3 and 6 of each epoch, at global steps 3, 6, ...
    assert len(checks.steps) >= 4
    assert checks.steps == [3 * k for k in range(1, len(checks.steps) + 1)]
    assert pruning.unit == "step"
    assert sorted(frozen.intermediate_values) == checks.steps  # one value per check, none lost
    assert [frozen.intermediate_values[s] for s in checks.steps] == pytest.approx(checks.values)
    assert [row["step"] for row in pruning.history] == checks.steps


# ---------------------------------------------------------------------------- MLflow
def test_a_pruned_trials_mlflow_run_is_killed_and_tagged_with_the_reason(mlflow_server,
                                                                        tmp_path):
    from mlflow import MlflowClient

    from advisor.cli import main

    client = MlflowClient(mlflow_server.url)
    experiment = f"pruning-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(pruner=make_pruner())

    def objective(trial):
        pruning = AdvisorPruningCallback(trial, tracking_uri=mlflow_server.url,
                                         experiment_name=experiment,
                                         run_name=f"trial-{trial.number}")
        fit([pruning], lr=GOOD_LR if trial.number == 0 else HOPELESS_LR)
        return pruning.best_value

    study.optimize(objective, n_trials=1)
    add_finished_copies(study)
    study.optimize(objective, n_trials=1)
    good, hopeless = study.trials[0], study.trials[-1]
    assert (good.state, hopeless.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id])}
    assert sorted(runs) == ["trial-0", f"trial-{hopeless.number}"]

    killed = runs[f"trial-{hopeless.number}"]
    assert killed.info.status == "KILLED"
    tags = killed.data.tags
    assert tags["advisor.pruned"] == "true"
    assert tags["advisor.verdict"] == Verdict.UNPROMISING.value
    assert tags["advisor.reason"] == hopeless.user_attrs["advisor.reason"]
    steps = sorted(m.step for m in client.get_metric_history(killed.info.run_id,
                                                             "advisor/best_value"))
    assert steps == sorted(hopeless.intermediate_values)  # every check, up to the pruned one
    # the description tells the pruning too, with the whole reason; the run has its report
    reason = hopeless.user_attrs["advisor.reason"]
    note = tags["mlflow.note.content"]
    assert note.splitlines()[0] == (f"**training-advisor: UNPROMISING (pruned at epoch "
                                    f"{hopeless.last_step} of {MAX_EPOCHS})**")
    assert "IMPROVING" not in note and "keep training" not in note
    assert reason.replace("_", "\\_") in note
    listed = {a.path for a in client.list_artifacts(killed.info.run_id)}
    assert {"advice.json", "advice_history.csv", "advice_report.html", "advice_plot.png"} <= listed
    page = Path(client.download_artifacts(killed.info.run_id, "advice_report.html",
                                          str(tmp_path))).read_text()
    assert 'class="badge verdict-unpromising"' in page and "pruned at epoch" in page
    # and so does `advisor report` on the experiment, which replays the curves
    out = tmp_path / "report"
    assert main(["report", "--experiment", experiment, "--tracking-uri", mlflow_server.url,
                 "--out", str(out), "--quiet"]) == 0
    page = (out / "runs" / f"{killed.info.run_id}.html").read_text()
    assert 'class="badge verdict-unpromising"' in page and "pruned at epoch" in page
    assert "keep training" not in page

    finished = runs["trial-0"]
    assert finished.info.status == "FINISHED"
    assert "advisor.pruned" not in finished.data.tags
    assert finished.data.tags["advisor.verdict"] == good.user_attrs["advisor.verdict"]
    assert finished.data.tags["advisor.reason"] == good.user_attrs["advisor.reason"]


# ---------------------------------------------------------------------------- DDP


def _ddp_rank(out: Path, journal: str, study_name: str, trial_id: int) -> None:
    """One rank of the DDP fit (Lightning runs this script again for rank 1)."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    study = optuna.load_study(study_name=study_name, pruner=make_pruner(),
                              storage=JournalStorage(JournalFileBackend(journal)))
    trial = optuna.trial.Trial(study, trial_id)  # the running trial the test asked for
    pruning = AdvisorPruningCallback(trial, log_to_mlflow=False)
    checks = Checks()
    trainer = fit([pruning, checks], lr=HOPELESS_LR, accelerator="cpu", devices=2,
                  strategy="ddp", use_distributed_sampler=False)
    record = {"rank": trainer.global_rank, "world_size": trainer.world_size,
              "epochs": trainer.current_epoch, "stopped_step": pruning.stopped_step,
              "checks": len(checks.values), "pruned": pruning.pruned,
              "prune_reason": pruning.prune_reason, "raised": None}
    try:
        pruning.check_pruned()
    except optuna.TrialPruned as exc:
        record["raised"] = str(exc)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
    trainer.strategy.barrier()
    for child in getattr(trainer.strategy.launcher, "procs", []):  # rank 0 waits for rank 1
        child.wait(timeout=60)


def test_ddp_ranks_stop_together_and_check_pruned_raises_after_fit(tmp_path):
    journal = str(tmp_path / "journal.log")
    study = study_with_a_good_trial(storage=JournalStorage(JournalFileBackend(journal)),
                                    study_name="ddp")
    trial = study.ask()
    run_ddp_script([__file__, str(tmp_path), journal, study.study_name, str(trial._trial_id)],
                   tmp_path, timeout=180)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)

    # fit returned on both ranks (no exception with several processes), at the same check,
    # long before the budget; check_pruned raised the reason on both
    frozen = study.trials[trial.number]
    reason = frozen.user_attrs["advisor.reason"]
    assert frozen.user_attrs["advisor.verdict"] == Verdict.UNPROMISING.value
    for r in (r0, r1):
        assert r["pruned"] and r["prune_reason"] == reason and r["raised"] == reason
        assert r["stopped_step"] == r["checks"] == r["epochs"] < MAX_EPOCHS // 2
    assert r0["stopped_step"] == r1["stopped_step"]
    # rank 0 alone reported, once per check
    assert sorted(frozen.intermediate_values) == list(range(1, r0["checks"] + 1))

    # the launching process's callback never trained (as in a ddp_spawn parent): check_pruned
    # reads the decision rank 0 wrote to the study's storage
    parent = AdvisorPruningCallback(trial, log_to_mlflow=False)
    with pytest.raises(optuna.TrialPruned, match="Unpromising"):
        parent.check_pruned()
    assert parent.prune_reason == reason
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[trial.number].state is TrialState.PRUNED



# ---------------------------------------------------------------------------- the example
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "optuna_sweep.py"


def run_example(cwd: Path, *args: str, timeout: float = 240) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, str(EXAMPLE), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
        pytest.fail(f"the example did not finish in {timeout:g} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-6000:]
    return output


def check_mlflow_runs(tracking_uri: str, study: optuna.Study, study_name: str) -> None:
    """One parent run for the study, one nested run per trial, with the trial's outcome."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("training-advisor-optuna")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == study_name and parent.info.status == "FINISHED"
    # the study's run has a description: what the sweep did, and its table of trials
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"**Optuna sweep {study_name}**: ")
    assert "epochs trained of" in note and "trial  state" in note
    children = {r.info.run_id: r for r in runs if r is not parent}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(children)
    for t in trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        tags = run.data.tags
        assert run.info.run_name == f"trial-{t.number}"
        assert tags["advisor.reason"] and tags["advisor.verdict"]
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == sorted(t.intermediate_values), t.number
        if t.state is TrialState.PRUNED:
            assert run.info.status == "KILLED" and tags["advisor.pruned"] == "true"
            assert tags["advisor.reason"] == t.user_attrs["advisor.reason"]
        else:
            assert t.state is TrialState.COMPLETE and run.info.status == "FINISHED"
            assert "advisor.pruned" not in tags
            early = bool(t.user_attrs.get("advisor.finished_early"))
            assert tags["advisor.finished_early"] == str(early).lower()
            if early:
                assert tags["advisor.reason"] == t.user_attrs["advisor.reason"]


def test_example_sweep_on_the_embedded_defaults(tmp_path):
    output = finish(run_example(tmp_path, "--trials", "5", "--max-epochs", "8"))
    study = optuna.load_study(study_name="digits-mlp", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = study.trials
    assert len(trials) == 5
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state is TrialState.PRUNED for t in trials), output[-3000:]
    assert all(t.last_step <= 8 for t in trials)
    # the summary table: a row per trial with its state, epochs and verdict
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("trial  state"))
    for t, row in zip(trials, lines[header + 1: header + 6], strict=True):
        cells = row.split()
        assert cells[0] == str(t.number) and cells[1] == t.state.name, row
        assert str(t.last_step) in cells[2:4]
        if t.state is TrialState.PRUNED:
            assert t.user_attrs["advisor.verdict"] in row
    assert f"5 trials: {sum(t.state is TrialState.PRUNED for t in trials)} pruned" in output
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in output
    check_mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", study, "digits-mlp")


def test_example_two_processes_share_a_study_on_postgresql(postgres, mlflow_server, tmp_path):
    # two workers, as the docstring says: the same command, one PostgreSQL study, one MLflow
    # server; each adds its --trials trials to the study. A database of their own: both start
    # on one without Optuna's tables, and race to create them
    from mlflow import MlflowClient

    name = f"digits-{uuid.uuid4().hex[:8]}"
    storage = postgres.create_database(name)
    procs = []
    for worker in ("a", "b"):
        (tmp_path / worker).mkdir()
        procs.append(run_example(tmp_path / worker, "--trials", "2", "--max-epochs", "5",
                                 "--storage", storage, "--study-name", name,
                                 "--tracking-uri", mlflow_server.url))
    outputs = [finish(p) for p in procs]
    assert all("Best trial" in out for out in outputs)
    assert all(f"--backend-store-uri {mlflow_server.url}" in out for out in outputs)
    study = optuna.load_study(study_name=name, storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}

    # each worker's parent run (named after the study) holds the two trials it ran
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("training-advisor-optuna")
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id for r in runs if r.info.run_name == name}
    everywhere = [(r.info.experiment_id, r.info.run_name, r.info.status) for r in
                  client.search_runs([e.experiment_id for e in client.search_experiments()],
                                     filter_string=f"attributes.run_name = '{name}'")]
    assert len(parents) == 2, (everywhere, [out[-1500:] for out in outputs])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents]
    assert sorted(r.info.run_id for r in children) == sorted(
        t.user_attrs["mlflow_run_id"] for t in study.trials)
    for parent in parents:
        assert sum(r.data.tags["mlflow.parentRunId"] == parent for r in children) == 2
    by_id = {r.info.run_id: r for r in children}
    for t in study.trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == ("KILLED" if t.state is TrialState.PRUNED else "FINISHED")

if __name__ == "__main__":
    _ddp_rank(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
