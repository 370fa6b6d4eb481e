"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` on a temporary directory.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) every server
command runs as the ``postgres`` system user through ``runuser -u postgres --``, on a directory
that user owns; as any other user the commands run as that user. The server listens on a free
loopback port only (no Unix socket), trusts local connections, and runs without fsync: it holds
test data only. ``url`` is a SQLAlchemy URL for whichever PostgreSQL driver is installed.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from processes import free_port

SERVER_USER = "postgres"  # the account PostgreSQL's Debian package creates


def find_binary(name: str) -> str:
    """``initdb``/``pg_ctl`` from PATH, else from Debian's ``/usr/lib/postgresql/<v>/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise RuntimeError(f"PostgreSQL's {name!r} is neither on PATH nor in "
                       f"/usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install "
                       f"postgresql).")


def driver() -> str:
    """The SQLAlchemy dialect+driver for the installed PostgreSQL driver (psycopg 3 first)."""
    for module, name in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return name
    raise RuntimeError("no PostgreSQL driver is installed: pip install 'training-advisor[optuna]' "
                       "(it brings psycopg).")



class PostgresServer:
    """One PostgreSQL cluster in a fresh temporary directory, on a free loopback port."""

    def __init__(self, database: str = "advisor_test") -> None:
        self.database = database
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="advisor-pg-"))  # in /tmp: traversable by all
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port: int | None = None
        self.user = SERVER_USER if self.as_root else _current_user()
        self._started = False
        if self.as_root:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root needs runuser to start PostgreSQL as "
                                   f"{SERVER_USER!r} (PostgreSQL refuses to run as root).")
            try:
                shutil.chown(self.root, user=SERVER_USER, group=None)
            except LookupError as exc:
                raise RuntimeError(f"running as root needs a {SERVER_USER!r} system user to run "
                                   f"PostgreSQL (apt-get install postgresql creates it).") from exc

    @property
    def url(self) -> str:
        """The test database's SQLAlchemy URL."""
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"{driver()}://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self.as_root else []
        result = subprocess.run(prefix + list(command), cwd=self.root, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n"
                               f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n"
                               f"{self.log_tail()}")
        return result

    def start(self, attempts: int = 3) -> None:
        """initdb, then ``pg_ctl -w start`` on a free port (another if that one was taken),
        then create the test database."""
        self._run(find_binary("initdb"), "-D", str(self.data), "-U", self.user,
                  "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
        for attempt in range(attempts):
            self.port = free_port()
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                       f"-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
                       f"-c full_page_writes=off -c max_connections=100")
            try:
                self._run(find_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                          "-o", options, "-w", "-t", "60", "start")
                break
            except RuntimeError:
                if attempt == attempts - 1:  # the port raced with another process, or worse
                    raise
        self._started = True
        self.create_database(self.database)

    def create_database(self, name: str) -> str:
        """Create an empty database (for a test that needs one no other test has touched);
        returns its URL."""
        import sqlalchemy

        admin = sqlalchemy.create_engine(self.url_of("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url_of(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed) and delete its files."""
        try:
            if self._started:
                self._run(find_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                          "stop", timeout=60)
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
