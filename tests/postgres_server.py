"""A real PostgreSQL server on 127.0.0.1 for tests: a throwaway cluster made with Debian's initdb and
started with pg_ctl on a free loopback port, once per test session.

    server = postgres_server()          # the session's cluster (started on first use)
    url = server.new_database()         # an empty database of its own for one test

The cluster lives in a temporary folder and is stopped and removed at exit; it trusts local
connections on loopback only, with no password. As root (CI), the cluster runs as the `postgres`
user the package made, since the server refuses to run as root. The test is skipped with a message
where PostgreSQL is missing (`.ci/run` installs Debian's postgresql).
"""
from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
_START_SECONDS = 60


def _bin_dir() -> Path | None:
    """Return the folder of the newest installed PostgreSQL's server programs, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    port: int
    folder: Path
    run_as: list[str]
    bin_dir: Path
    _numbers = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def new_database(self) -> str:
        """Make an empty database for one test and return its URL."""
        import psycopg
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.folder / "data"),
                        "-m", "immediate"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_server: PostgresServer | None = None


def postgres_server() -> PostgresServer:
    """Return the session's PostgreSQL server, starting it on first use (skip when none is installed)."""
    global _server
    if _server is None:
        _server = _start()
        atexit.register(_server.stop)
    return _server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _start() -> PostgresServer:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="distributor-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(folder, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data, log = folder / "data", folder / "server.log"
    initdb = subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                             "--no-locale", "-E", "UTF8"], capture_output=True, text=True, timeout=_START_SECONDS)
    if initdb.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"initdb failed: {initdb.stderr.strip()}")
    options = (f"-p {port} -c listen_addresses={HOST} -k {folder} -c fsync=off -c synchronous_commit=off"
               " -c full_page_writes=off -c max_connections=200")
    started = subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
                              "-t", str(_START_SECONDS), "-o", options], capture_output=True, text=True,
                             timeout=_START_SECONDS + 10)
    if started.returncode:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {detail.strip()}")
    return PostgresServer(port, folder, run_as, bin_dir)
