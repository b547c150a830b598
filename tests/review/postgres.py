"""A throwaway PostgreSQL cluster for the tests: initdb, pg_ctl, a free loopback port, a temporary
folder, stopped and removed afterwards. The server binaries come from ``pg_config --bindir``
(Debian's PostgreSQL 15 on our machines); they refuse to run as root, so they run as the
``postgres`` user when the tests do run as root."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from moderation_worker.localstack import free_port


def bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        path = Path(
            subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
    except subprocess.CalledProcessError:
        return None
    return path if (path / "initdb").exists() and (path / "pg_ctl").exists() else None


def unavailable_reason() -> str | None:
    if bindir() is None:
        return "no PostgreSQL server binaries (pg_config --bindir has no initdb); apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


class PostgresCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mw-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "test"
        self._bin = bindir()
        if self._bin is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL")

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=True, cwd=self.root)

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self._bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync"
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'log').read_text()[-2000:]}")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
