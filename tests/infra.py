"""Real infrastructure for the tests marked ``server``, ``ui`` and ``cluster``: the PostgreSQL that
``.ci/postgres.sh`` sets up, an ``mlflow server`` on it started by ``.ci/server.sh`` (what ``make server``
runs), and the convlab CLI pointed at it.

Missing infrastructure skips a test with the reason and the command that provides it; where
``CONVLAB_REQUIRE_INFRA=1`` (``.ci/run`` sets it) it fails the test instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

REQUIRED = os.environ.get("CONVLAB_REQUIRE_INFRA") == "1"
VENV = Path(sys.executable).parent.parent


def unavailable(reason: str) -> None:
    """Skip (a developer's machine without it) or fail (CI, CONVLAB_REQUIRE_INFRA=1)."""
    if REQUIRED:
        pytest.fail(f"{reason} (CONVLAB_REQUIRE_INFRA=1: CI must run this test)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_home() -> Path:
    """Where .ci/postgres.sh keeps backend-uri and pgpass (same default as the script)."""
    if os.environ.get("CONVLAB_SERVER_HOME"):
        return Path(os.environ["CONVLAB_SERVER_HOME"])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "convlab-server"


# ---------------------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """The role and database of .ci/postgres.sh; the password stays in its pgpass file."""

    def __init__(self, home: Path):
        from sqlalchemy.engine import make_url

        self.pgpass = home / "pgpass"
        self.url = make_url((home / "backend-uri").read_text().strip())

    def connect(self, database: str | None = None):
        import psycopg

        return psycopg.connect(host=self.url.host, port=self.url.port, user=self.url.username,
                               dbname=database or self.url.database, passfile=str(self.pgpass),
                               connect_timeout=5, autocommit=True)

    def uri(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    @contextlib.contextmanager
    def temporary_database(self) -> Iterator[str]:
        """A fresh, empty database for one test module (MLflow creates its tables on first start)."""
        name = f"convlab_test_{secrets.token_hex(4)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with self.connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres() -> Postgres:
    home = server_home()
    fix = "run `bash .ci/postgres.sh start` (root or sudo; `make server` runs it too)"
    if not (home / "backend-uri").exists() or not (home / "pgpass").exists():
        unavailable(f"PostgreSQL is not set up in {home}: {fix}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[server]'")
    pg = Postgres(home)
    try:
        pg.connect().close()
    except Exception as error:  # noqa: BLE001 - any failure to connect means: not available here
        unavailable(f"PostgreSQL at {pg.url.host}:{pg.url.port} does not answer ({type(error).__name__}): {fix}")
    return pg


# ------------------------------------------------------------------------------------- MLflow server


class TrackingServer:
    """``.ci/server.sh`` (what ``make server`` runs) on a test database, a free port and a temporary home."""

    def __init__(self, pg: Postgres, database: str, home: Path):
        self.pg, self.pg_database, self.home = pg, database, home
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = home / "artifacts"
        self.env = {
            **os.environ,
            "VENV": str(VENV),
            "CONVLAB_SERVER_HOME": str(home),
            "CONVLAB_SERVER_PORT": str(self.port),
            "CONVLAB_SERVER_WORKERS": "1",
            "CONVLAB_BACKEND_STORE_URI": pg.uri(database),
            "PGPASSFILE": str(pg.pgpass),
        }

    def _script(self, action: str, timeout: float = 180) -> None:
        proc = subprocess.run(["bash", str(REPO / ".ci" / "server.sh"), action], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.home / "mlflow.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f".ci/server.sh {action} exited {proc.returncode}:\n{proc.stderr}\n{tail}")

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def pid(self) -> int | None:
        pidfile = self.home / "mlflow.pid"
        return int(pidfile.read_text()) if pidfile.exists() else None

    def healthy(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200
        except OSError:
            return False


@contextlib.contextmanager
def tracking_server(tmp: Path) -> Iterator[TrackingServer]:
    """PostgreSQL test database + ``mlflow server`` on it; everything dropped and stopped afterwards."""
    pg = postgres()
    with pg.temporary_database() as database:
        server = TrackingServer(pg, database, tmp)
        server.start()
        try:
            yield server
        finally:
            server.stop()


# ------------------------------------------------------------------------------------------- the CLI


def convlab(*args: str, cwd: Path, tracking_uri: str, env: dict[str, str] | None = None,
            timeout: float = 600, expect_ok: bool = True) -> subprocess.CompletedProcess:
    """``python -m runner <args>`` as a user runs it, tracked at ``tracking_uri``."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO), **(env or {})}
    for name in ("CONVLAB_PARENT_RUN_ID", "CONVLAB_SWEEP_KEYS"):
        full_env.pop(name, None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"convlab {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        paths |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def report(line: str) -> None:
    """A measured number, printed in pytest's summary with -rA and kept in outputs/infra-report.txt."""
    print(f"[measured] {line}")
    out = REPO / "outputs"
    out.mkdir(exist_ok=True)
    with open(out / "infra-report.txt", "a") as file:
        file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
