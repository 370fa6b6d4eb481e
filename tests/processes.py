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


class SilentServer:
    """A hung tracking server: a TCP server on a free loopback port that accepts connections
    and never answers. With ``health=True`` it answers ``GET /health`` (as a live MLflow server
    does) and hangs on every other request, as a server that stalls mid-way."""

    def __init__(self, health: bool = False) -> None:
        import threading

        self.health = health
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []  # the first line of every request it read
        self._connections: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            return
        self.requests.append(data.split(b"\r\n", 1)[0])
        if self.health and data.startswith(b"GET ") and b"/health " in data.split(b"\r\n")[0]:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
            conn.close()
        # anything else: read, and never answered

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        for conn in self._connections:
            conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
