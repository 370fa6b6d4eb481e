"""A tiny Lightning model shared by the callback, browser, DDP and overhead tests."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch import nn


class RegressionSteps:
    """Linear regression logging ``train_loss`` (per epoch) and ``val_loss``, mixed into a
    LightningModule of either package.

    With ``lr=0`` the validation loss is exactly flat (a plateau); ``epoch_sleep`` makes epochs
    slower, for the tests that stop a server mid-run.
    """

    def __init__(self, in_features: int = 4, lr: float = 0.05, epoch_sleep: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, 1)
        self.lr = lr
        self.epoch_sleep = epoch_sleep

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        # no sync_dist: under DDP each rank's val_loss is its own
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def on_train_epoch_end(self) -> None:
        if self.epoch_sleep:
            time.sleep(self.epoch_sleep)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class LinearRegression(RegressionSteps, pl.LightningModule):
    """The regression as a ``pytorch_lightning`` module."""
