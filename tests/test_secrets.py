"""Credentials never land anywhere: not in an artifact, a tag, Hydra's run-dir files or the terminal.

The end-to-end case runs a real throwaway ``mlflow server`` (sqlite backend, 127.0.0.1, a free port; no extra
needed) and greps everything the run left for the password."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runner.redact import redact, redact_value
from tests.conftest import TINY_TRAIN, ctrl_c_when, start_cli
from tests.infra import free_port


@pytest.mark.parametrize("text, shown", [
    ("tracking.uri=http://user:s3cret@host:5000", "tracking.uri=http://***@host:5000"),
    ("['tracking.uri=https://token@host/x', 'seed=1']", "['tracking.uri=https://***@host/x', 'seed=1']"),
    ("password: hunter2\nseed: 1", "password: ***\nseed: 1"),
    ("MLFLOW_TRACKING_TOKEN=abc DB_PASSWORD='x y'", "MLFLOW_TRACKING_TOKEN=*** DB_PASSWORD='***'"),
    ('{"api_key": "k1"}', '{"api_key": "***"}'),
    ("http://host/?token=abc&page=2", "http://host/?token=***&page=2"),
    (r"#0 : tracking.uri=http\://u\:pw@host\:5000", r"#0 : tracking.uri=http\://***@host\:5000"),  # Hydra's log
])
def test_credentials_are_masked(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize("text", ["sqlite:///mlflow.db", "passed: 3", "tokenizer: bpe", "task.epochs=5",
                                  "http://127.0.0.1:5000/#/experiments/1"])
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text


def test_config_values_under_credential_keys_are_masked_whole():
    shown = redact_value("tracking", {"uri": "http://a:b@host", "password": "p", "api_token": 12, "epochs": 3})
    assert shown == {"uri": "http://***@host", "password": "***", "api_token": "***", "epochs": 3}


# ------------------------------------------------------------------------------------------ end to end


@contextlib.contextmanager
def _mlflow_server(home: Path):
    """``mlflow server`` from this venv on 127.0.0.1:<free port>, artifacts proxied, stopped after."""
    port = free_port()
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
         "--artifacts-destination", str(home / "artifacts")],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield port
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.e2e
def test_a_password_in_the_tracking_uri_lands_nowhere(tmp_path):
    secret = f"pw{secrets.token_hex(8)}"
    server_home, workdir = tmp_path / "server", tmp_path / "work"
    server_home.mkdir()
    workdir.mkdir()
    with _mlflow_server(server_home) as port:
        uri = f"http://convlab:{secret}@127.0.0.1:{port}"  # in MLFLOW_TRACKING_URI and in the override
        # a one-job sweep (parent run, multirun.yaml), stopped (SIGTERM) once its config artifacts are logged
        output = tmp_path / "terminal.txt"
        client = MlflowClient(f"http://127.0.0.1:{port}")
        proc = start_cli(workdir, uri, "-m", "tracking=server", f"tracking.uri={uri}", *TINY_TRAIN, output=output)

        def config_logged() -> bool:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            return bool(jobs and client.list_artifacts(jobs[0].info.run_id, "config/hydra"))

        ctrl_c_when(proc, config_logged, "the job's config artifacts", sig=signal.SIGTERM)
        terminal = output.read_text()
        assert proc.returncode == 143, terminal[-3000:]
        assert "View run" in terminal and f"http://***@127.0.0.1:{port}/#/experiments/" in terminal

        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        [job] = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        downloaded = tmp_path / "downloaded"
        for run in runs:
            client.download_artifacts(run.info.run_id, "", str(downloaded / run.info.run_id))
        assert (downloaded / job.info.run_id / "config" / "config.yaml").exists()
        assert list((downloaded / job.info.run_id / "config" / "hydra").glob("*.yaml"))
        recorded = [str(r.to_dictionary()) for r in runs]

    assert secret not in terminal
    assert not [text for text in recorded if secret in text]  # params, tags, run names
    assert not _files_holding(workdir, secret)  # outputs/**/.hydra, multirun.yaml, Hydra's job log
    assert not _files_holding(downloaded, secret)
    assert not _files_holding(server_home, secret)  # what the server stored: its database, its artifacts
