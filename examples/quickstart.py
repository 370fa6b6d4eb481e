"""Quickstart: an MLP on scikit-learn's digits, trained with the advisor in stop mode.

Logs to the embedded MLflow store (``sqlite:///mlflow.db``); a ``ModelCheckpoint`` on the
monitored metric keeps the best epoch's file under ``checkpoints/<run id>/`` (git ignores it).
Prints the verdict, the checkpoint to keep (in the advisor's epochs, counted from 1, and
Lightning's, from 0, as in the file name) and the command that opens the run in the MLflow UI.
Runs on a CPU in well under a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback


class DigitsMLP(pl.LightningModule):
    def __init__(self, hidden: int = 128, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def loaders(batch_size: int = 128, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    train = TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    val = TensorDataset(torch.from_numpy(x_va), torch.from_numpy(y_va))
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(val, batch_size=512))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                 "sqlite:///mlflow.db"))
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="folder of the best checkpoints, one subfolder per run")
    args = parser.parse_args()
    quiet()
    pl.seed_everything(0, verbose=False)
    train, val = loaders()
    logger = MLFlowLogger(experiment_name="training-advisor-quickstart",
                          tracking_uri=args.tracking_uri)
    # the advisor says which epoch to keep; a ModelCheckpoint on the same metric keeps its file
    best = ModelCheckpoint(dirpath=Path(args.checkpoints) / logger.run_id, monitor="val_loss",
                           mode="min", save_top_k=1)
    advisor = AdvisorCallback(monitor="val_loss", mode="min", train_metric="train_loss",
                              action="stop")
    trainer = pl.Trainer(max_epochs=args.max_epochs, logger=logger, callbacks=[advisor, best],
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=10)
    trainer.fit(DigitsMLP(), train, val)
    advice = advisor.advice
    if advisor.stop_reason is None:  # not stopped: the advice was not printed yet
        print(f"training-advisor: {advice.verdict.value.upper()} after the whole budget of "
              f"{args.max_epochs} epochs: {advice.reason}\nKeep {advisor.keep()}")
    if advisor.best_checkpoint:
        print(f"\nLoad the kept checkpoint with:\n  model = DigitsMLP.load_from_checkpoint("
              f"{advisor.best_checkpoint!r})")
    print()
    print("Open the advice in the MLflow UI (the run's description, its advice_report.html):")
    print(f"  .venv/bin/mlflow ui --backend-store-uri {args.tracking_uri} --port 5000")
    print(f"  then http://127.0.0.1:5000/#/experiments/{logger.experiment_id}/runs/"
          f"{logger.run_id}")


def quiet() -> None:
    """Only the advisor's words: no Lightning tips or device lines, no MLflow table setup, no
    warnings about this tiny dataset's loaders or a deprecation inside Lightning."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("pytorch_lightning.loggers.mlflow", "lightning.pytorch.loggers.mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "Experiment ... not found. Creating it."
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # inside Lightning, not this script


if __name__ == "__main__":
    main()
