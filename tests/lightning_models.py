"""A tiny Lightning model shared by the callback, browser, DDP and overhead tests."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


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


def loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """The regression's data: 192 training and 64 validation rows of a noisy linear target."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(256, 1, generator=g)
    return (DataLoader(TensorDataset(x[:192], y[:192]), batch_size=batch_size),
            DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64))
