"""The same AdvisorCallback class serves pytorch_lightning and lightning.pytorch Trainers."""

from __future__ import annotations

import lightning.pytorch as L
import pytorch_lightning as pl
import torch
from lightning_models import RegressionSteps
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback


class FlatRegression(RegressionSteps, L.LightningModule):
    """The shared regression as a lightning.pytorch module."""


def test_callback_is_a_callback_of_both_packages():
    callback = AdvisorCallback(log_to_mlflow=False)
    assert isinstance(callback, pl.Callback)
    assert isinstance(callback, L.Callback)


def test_lightning_pytorch_trainer_is_stopped_by_the_callback():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop",
                               log_to_mlflow=False)
    trainer = L.Trainer(max_epochs=30, callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(FlatRegression(lr=0.0), data, data)  # lr=0: exactly flat
    assert callback.stop_reason is not None and "Plateau" in callback.stop_reason
    assert trainer.current_epoch < 30
    assert callback.advice.verdict.value == "plateau"
