"""Offline analysis: runs logged to MLflow without the advisor, judged afterwards.

Trains four small scikit-learn MLPs on the bundled digits (different learning rates, one on
a tiny training set), logging ``train_loss`` and ``val_loss`` per epoch to the embedded MLflow
store (``sqlite:///mlflow.db``) with plain ``mlflow.log_metrics`` calls: no callback, any
framework would do the same. Then it runs ``advisor report`` on the experiment and prints where
the dashboard is: which runs plateaued or overfitted, how many epochs could have been saved, and
what stopping would have cost where a run still got better after the advisor's stop.
Runs on a CPU in well under a minute.

Usage::

    python examples/offline_analysis.py                # then open advisor-report-*/index.html
    python examples/offline_analysis.py --epochs 60 --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import mlflow
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from advisor.cli import main as advisor_cli

RUNS = {  # run name: (learning rate, hidden units, training examples or None for all)
    "adam-lr0.001": (0.001, 32, None),
    "adam-lr0.01": (0.01, 64, None),
    "adam-lr0.01-150-examples": (0.01, 64, 150),
    "sgd-lr0.05": (0.05, 32, None),
}


def train_and_log(name: str, lr: float, hidden: int, n_train: int | None, epochs: int,
                  data: tuple[np.ndarray, ...]) -> None:
    x_tr, x_va, y_tr, y_va = data
    x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    solver = "sgd" if name.startswith("sgd") else "adam"
    model = MLPClassifier(hidden_layer_sizes=(hidden,), learning_rate_init=lr, alpha=0.0,
                          solver=solver, batch_size=64, random_state=0)
    with mlflow.start_run(run_name=name):
        mlflow.log_params({"lr": lr, "hidden": hidden, "solver": solver,
                           "train_examples": len(x_tr)})
        for epoch in range(1, epochs + 1):
            model.partial_fit(x_tr, y_tr, classes=np.arange(10))
            val_loss = log_loss(y_va, model.predict_proba(x_va), labels=np.arange(10))
            mlflow.log_metrics({"train_loss": model.loss_, "val_loss": val_loss}, step=epoch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                 "sqlite:///mlflow.db"))
    parser.add_argument("--experiment", default=f"offline-analysis-{int(time.time())}")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # partial_fit convergence notes
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    x, y = load_digits(return_X_y=True)
    data = train_test_split(x / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    for name, (lr, hidden, n_train) in RUNS.items():
        train_and_log(name, lr, hidden, n_train, args.epochs, data)
        print(f"logged {name}")
    return advisor_cli(["report", "--experiment", args.experiment, "--tracking-uri",
                        args.tracking_uri, "--train-metric", "train_loss"])


if __name__ == "__main__":
    raise SystemExit(main())
