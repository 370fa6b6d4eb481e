"""Optuna sweep: the quickstart's digits MLP, pruned and finished early by the advisor.

Each trial trains ``DigitsMLP`` (``examples/quickstart.py``) with a learning rate and a width that
Optuna's TPE sampler picks, with :class:`advisor.AdvisorPruningCallback` on the Lightning Trainer
and :class:`advisor.AdvisorPruner` on the study: a trial that diverged or cannot beat the best
finished trial is pruned, a trial that has converged stops early and completes with its best
``val_loss``. Every trial is one MLflow run nested under a parent run for the study, with the
trial's metrics, the advisor's metrics and tags (``advisor.verdict``, ``advisor.reason``, and
``advisor.pruned=true`` on pruned trials, whose runs end KILLED).

Runs on the embedded defaults (``sqlite:///optuna.db`` for Optuna, ``sqlite:///mlflow.db`` for
MLflow) in about two minutes on two CPU cores; pass ``--storage
postgresql://USER@HOST/DB`` to share the study between several processes or machines (run the
same command in each: every process adds ``--trials`` trials to the same study).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import mlflow
import optuna
import pytorch_lightning as pl
import torch
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import DigitsMLP, loaders  # noqa: E402

from advisor import AdvisorPruner, AdvisorPruningCallback  # noqa: E402

EXPERIMENT = "training-advisor-optuna"


def make_objective(args: argparse.Namespace):
    train, val = loaders()

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        hidden = trial.suggest_int("hidden", 16, 256, log=True)
        # one MLflow run per trial, nested under the study's run: the callback writes to it
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params({"lr": lr, "hidden": hidden})
            mlflow.set_tag("optuna.trial_number", str(trial.number))
            pruning = AdvisorPruningCallback(trial, monitor="val_loss", train_metric="train_loss")
            trainer = pl.Trainer(max_epochs=args.max_epochs, logger=False, callbacks=[pruning],
                                 enable_progress_bar=False, enable_model_summary=False,
                                 enable_checkpointing=False, num_sanity_val_steps=0)
            pl.seed_everything(trial.number, verbose=False)
            try:
                trainer.fit(DigitsMLP(hidden=hidden, lr=lr), train, val)
                pruning.check_pruned()  # raises only when the fit ran on several processes
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "PRUNED")
                mlflow.end_run(status="KILLED")
                raise
            finished_early = pruning.stop_reason is not None
            mlflow.set_tags({"optuna.state": "COMPLETE",
                             "advisor.finished_early": str(finished_early).lower()})
            return pruning.best_value

    return objective


def summary(study: optuna.Study) -> str:
    """One line per trial: number, state, epochs trained, value, verdict and reason."""
    rows = [("trial", "state", "epochs", "val_loss", "verdict", "reason")]
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        early = attrs.get("advisor.finished_early")
        verdict = attrs.get("advisor.verdict", "")
        if t.state is TrialState.COMPLETE and not early:
            verdict = verdict or "(budget)"
        reason = attrs.get("advisor.reason", "") if (early or t.state is TrialState.PRUNED) \
            else f"completed its budget of {t.last_step} epochs"
        reason = reason if len(reason) <= 90 else reason[:89] + "…"
        value = t.value if t.value is not None else (
            t.intermediate_values.get(t.last_step) if t.last_step is not None else None)
        rows.append((str(t.number), t.state.name + (" (early)" if early else ""),
                     "" if t.last_step is None else str(t.last_step),
                     "" if value is None else f"{value:.4f}", verdict, reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=False)) + "  " + r[5]
             for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials this process runs")
    parser.add_argument("--max-epochs", type=int, default=50, help="each trial's budget")
    parser.add_argument("--storage", default="sqlite:///optuna.db",
                        help="Optuna storage URL (sqlite:///..., postgresql://...)")
    parser.add_argument("--study-name", default="digits-mlp",
                        help="the study (loaded if it exists) and its parent MLflow run")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                 "sqlite:///mlflow.db"))
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    args = parser.parse_args()

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(1)  # a tiny MLP: a second thread costs more than it gives
    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    # again by id: when two workers create the experiment at once, MLflow's set_experiment
    # returns it to the one that lost the race without making it the active experiment
    mlflow.set_experiment(experiment_id=experiment.experiment_id)

    study = optuna.create_study(
        study_name=args.study_name, storage=open_storage(args.storage), load_if_exists=True,
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=AdvisorPruner(max_steps=args.max_epochs, n_startup_trials=3))
    with mlflow.start_run(run_name=args.study_name) as parent:
        mlflow.set_tags({"optuna.study_name": args.study_name,
                         "optuna.storage": _without_password(args.storage)})
        mlflow.log_params({"max_epochs": args.max_epochs, "trials": args.trials})
        study.optimize(make_objective(args), n_trials=args.trials)
        table = summary(study)
        mlflow.log_text(table + "\n", "trials.txt")
        states = [t.state for t in study.trials]
        mlflow.log_metrics({"pruned_trials": states.count(TrialState.PRUNED),
                            "complete_trials": states.count(TrialState.COMPLETE)})
        best = None
        if any(s is TrialState.COMPLETE for s in states):
            best = (f"Best trial {study.best_trial.number}: val_loss {study.best_value:.4f} "
                    f"with {study.best_params}")
            mlflow.log_metric("best_val_loss", study.best_value)
            mlflow.set_tag("optuna.best_trial", str(study.best_trial.number))
        pruned = states.count(TrialState.PRUNED)
        early = sum(bool(t.user_attrs.get("advisor.finished_early")) for t in study.trials)
        epochs = sum(t.last_step or 0 for t in study.trials)
        totals = (f"{len(states)} trials: {pruned} pruned, {early} finished early; {epochs} "
                  f"epochs trained of {len(states) * args.max_epochs} budgeted.")
        # the study's run says it too, not only this terminal
        mlflow.set_tag("mlflow.note.content", "\n\n".join(filter(None, [
            f"**Optuna sweep {args.study_name}**: {totals}", best,
            "One nested run per trial; `trials.txt` in the artifacts:",
            "```\n" + table + "\n```"])))

    print()
    print(table)
    print()
    if best:
        print(best)
    print(totals)
    print()
    print("Open the sweep in the MLflow UI (one run per trial, nested under the study's run):")
    print(f"  .venv/bin/mlflow ui --backend-store-uri {args.tracking_uri} --port 5000")
    print(f"  then http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/"
          f"{parent.info.run_id}")


def open_storage(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """The study's storage. Workers started together on a database without Optuna's tables race
    to create them, and all but one fail (optuna/optuna#1092): those wait and try again."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://")[0] + "://…"


if __name__ == "__main__":
    main()
