"""The same AdvisorCallback class serves pytorch_lightning and lightning.pytorch Trainers."""

from __future__ import annotations

import lightning.pytorch as L
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback


class FlatRegression(L.LightningModule):
    """A lightning.pytorch module trained with lr=0: its validation loss is exactly flat."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


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
    trainer.fit(FlatRegression(), data, data)
    assert callback.stop_reason is not None and "Plateau" in callback.stop_reason
    assert trainer.current_epoch < 30
    assert callback.advice.verdict.value == "plateau"
