"""Helpers for tests that start processes: a free loopback port, and a 2-rank DDP script."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp_script(args: Sequence[str], cwd: Path, timeout: float,
                   extra_env: dict[str, str] | None = None,
                   drop_env: Sequence[str] = ()) -> tuple[str, str]:
    """Run ``python *args`` as Lightning's rank 0 (it launches rank 1) and return its output.

    The script runs in a session of its own, so a hang (ranks that disagree wait for each other)
    kills both ranks; a non-zero exit or a timeout fails the test with the output.
    """
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           **(extra_env or {})}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", *drop_env):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the DDP run did not finish in {timeout:g} s (ranks waiting for each "
                    f"other?):\n{stdout[-3000:]}{stderr[-6000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return stdout, stderr
