"""A real 2-process CPU DDP run (``strategy="ddp"``, gloo) with the advisor in stop mode.

Lightning's ``ddp`` strategy starts the other rank by running the launching script again, so the
training runs in a subprocess: this file is also that script (``python tests/test_ddp.py OUT``).
Each rank trains on its own data and logs ``val_loss`` without ``sync_dist``, so the ranks' local
metrics differ and only the callback's decide-once broadcast keeps their advice identical. Each
rank writes ``rank<N>.json``; rank 0 logs to MLflow in a sqlite store under ``OUT``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from processes import run_ddp_script

MAX_EPOCHS = 60
EXPERIMENT = "ddp-advisor"


def _tracking_uri(out: Path) -> str:
    return f"sqlite:///{out / 'mlflow.db'}"


# ---------------------------------------------------------------------------- the DDP script
def _train(out: Path) -> None:
    import pytorch_lightning as pl
    import torch
    from lightning_models import LinearRegression
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from advisor import AdvisorCallback

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    torch.set_num_threads(1)

    def data(seed: int, n: int, noise: float) -> TensorDataset:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 8, generator=g)
        w = torch.linspace(-1.0, 1.0, 8).unsqueeze(1)
        y = x @ w + noise * torch.randn(n, 1, generator=g)
        return TensorDataset(x, y)

    class Regression(LinearRegression):
        """A linear model on noisy linear data: the loss falls to the noise floor and stays."""

        def __init__(self) -> None:
            super().__init__(in_features=8, lr=0.1)

        # every rank its own data (the distributed sampler is off)
        def train_dataloader(self):
            return DataLoader(data(10 + self.global_rank, 128, 0.3), batch_size=32)

        def val_dataloader(self):
            return DataLoader(data(20 + self.global_rank, 256, 0.3 + 0.2 * self.global_rank),
                              batch_size=256)

    class LocalValues(pl.Callback):
        """This rank's own val_loss at every check, as Lightning logged it."""

        def __init__(self) -> None:
            self.values: list[float] = []

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.values.append(float(trainer.callback_metrics["val_loss"]))

    pl.seed_everything(0, verbose=False)
    local = LocalValues()
    advisor = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop")
    logger = MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=_tracking_uri(out))
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=MAX_EPOCHS,
        callbacks=[local, advisor], logger=logger, use_distributed_sampler=False,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, log_every_n_steps=50)
    trainer.fit(Regression())
    record = {
        "global_rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "current_epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "local_val_loss": local.values,
        "stop_reason": advisor.stop_reason,
        "stopped_step": advisor.stopped_step,
        "verdict": advisor.advice.verdict.value,
        "verdicts": [row["verdict"] for row in advisor.history],
        "history": advisor.history,
        "advisor_state": advisor.advisor.state_dict(),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
    trainer.strategy.barrier()  # both files are written before rank 0 returns
    for child in getattr(trainer.strategy.launcher, "procs", []):  # rank 0 waits for rank 1
        child.wait(timeout=60)


# ---------------------------------------------------------------------------- the test


def _canonical(value) -> str:
    """JSON text, so NaN compares equal to NaN."""
    return json.dumps(value, sort_keys=True)


def test_ddp_ranks_stop_together_with_identical_advice_and_rank0_alone_logs(tmp_path):
    run_ddp_script([__file__, str(tmp_path)], tmp_path, timeout=240,
                   extra_env={"PYTHONHASHSEED": "0"}, drop_env=["MLFLOW_TRACKING_URI"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    r0, r1 = ranks

    # it really was 2-process DDP over gloo
    assert [r["global_rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["strategy"] for r in ranks} == {"DDPStrategy"}
    assert {r["backend"] for r in ranks} == {"gloo"}

    # the ranks saw different val_loss values at every check ...
    assert len(r0["local_val_loss"]) == len(r1["local_val_loss"])
    assert all(a != b for a, b in zip(r0["local_val_loss"], r1["local_val_loss"], strict=True))

    # ... yet the advisor stopped both, on a plateau, at the same check, before the budget
    for r in ranks:
        assert r["stop_reason"] is not None, r["verdicts"]
        assert r["verdict"] == "plateau"
        assert r["stopped_step"] < MAX_EPOCHS
        assert r["current_epoch"] == r["stopped_step"]  # training ended with the epoch it stopped
        assert len(r["local_val_loss"]) == r["stopped_step"]  # no check after the stop
    assert r0["stopped_step"] == r1["stopped_step"]
    assert r0["current_epoch"] == r1["current_epoch"]
    assert r0["global_step"] == r1["global_step"]
    assert r0["stop_reason"] == r1["stop_reason"]

    # identical advice and advisor state on both ranks, made from rank 0's values
    assert r0["verdicts"] == r1["verdicts"]
    assert _canonical(r0["history"]) == _canonical(r1["history"])
    assert _canonical(r0["advisor_state"]) == _canonical(r1["advisor_state"])
    checks = int(r0["stopped_step"])
    state = r0["advisor_state"]["history"]
    assert state["step"] == [float(e) for e in range(1, checks + 1)]
    assert state["val_loss"] == r0["local_val_loss"]

    # only rank 0 wrote to MLflow: one run, the advisor's tags, one value per check
    from mlflow import MlflowClient

    client = MlflowClient(_tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["advisor.verdict"] == "plateau"
    assert run.data.tags["advisor.reason"] == r0["stop_reason"]
    assert run.data.tags["advisor.suggested_stop_epoch"]
    assert "PLATEAU" in run.data.tags["mlflow.note.content"]
    val_logged = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.value for m in val_logged) == sorted(r0["local_val_loss"])
    val_steps = sorted(m.step for m in val_logged)  # the logger's global steps, one per check
    assert len(val_steps) == checks
    for name in ("advisor/should_stop", "advisor/best_value"):  # on the same axis
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == val_steps, name
    stops = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                 "advisor/should_stop")}
    assert stops[val_steps[-1]] == 1.0
    assert [stops[s] for s in val_steps] == [float(row["should_stop"]) for row in r0["history"]]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"advice.json", "advice_history.csv"} <= artifacts


if __name__ == "__main__":
    _train(Path(sys.argv[1]))
