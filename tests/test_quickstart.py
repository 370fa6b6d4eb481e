"""The quickstart as a new user runs it: what it prints, the checkpoint it keeps, and the run
it leaves in MLflow (the embedded store in a fresh folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_names_an_existing_checkpoint_of_its_best_epoch_in_both_numberings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # the advisor's epoch (from 1) and Lightning's (from 0, as in the file name), and the file
    keep = re.search(r"^Keep epoch (\d+) \(Lightning's epoch=(\d+)\), val_loss [\d.]+: (.+)$",
                     out, re.MULTILINE)
    assert keep, out
    epoch, lightning_epoch, path = int(keep[1]), int(keep[2]), Path(keep[3])
    assert lightning_epoch == epoch - 1
    assert path.is_file() and path.name.startswith(f"epoch={lightning_epoch}-step=")
    assert path.is_relative_to(tmp_path / "checkpoints")  # not in an untracked ./1/ folder
    assert not (tmp_path / "1").exists()
    assert f"load_from_checkpoint('{path}')" in out
    # said once; no Lightning tips, device lines, MLflow table set-up or deprecation warnings
    stopped = [line for line in out.splitlines() if line.startswith("training-advisor stopped")]
    assert len(stopped) == 1
    reason = stopped[0].split(": ", 1)[1]
    assert out.count(reason[:60]) == 1  # the reason is printed once
    for noise in ("Tip:", "GPU available", "LeafSpec", "INFO mlflow", "Creating it"):
        assert noise not in out + done.stderr, noise

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(
        "training-advisor-quickstart").experiment_id])
    tags = run.data.tags
    assert tags["advisor.best_epoch"] == str(epoch)
    assert tags["advisor.best_checkpoint"] == str(path)
    note = tags["mlflow.note.content"]
    assert f"at epoch {epoch} (Lightning's epoch={lightning_epoch})" in note
    assert f"`{path}`" in note
    assert f"epoch {epoch}" in tags["advisor.reason"]  # the reason names the same epoch
    assert tags["advisor.reason"] == reason
