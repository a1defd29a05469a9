"""Shared fixtures: Hydra compose for config tests, a temporary MLflow store and a CLI runner for
end-to-end tests (the real `python -m runner` in a subprocess, as a user runs it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient

from runner.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
#: tiny settings for end-to-end runs: 1 epoch, few small batches
TINY_TRAIN = [
    "dataset.image_size=48",
    "dataset.limit=16",
    "dataset.batch_size=8",
    "task.epochs=1",
    "task.steps_per_epoch=2",
    "task.augmentation_samples=4",
    "task.probes.enabled=false",  # tracing Grad-CAM costs ~2 s a run; tests/test_probes.py and one e2e test probe
]


def compose_config(overrides: list[str] | None = None):
    """Compose like the CLI does (hydra node included, HydraConfig set, so interpolations resolve)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides or [], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def config_options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """An MLflow store for a module's in-process task runs (the previous one restored afterwards)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    mlflow.set_experiment("Default")  # not the experiment an earlier module made active in its own store
    yield
    mlflow.set_tracking_uri(previous)


def start_cli(tmp_path: Path, mlflow_store: str, *args: str, output: Path | None = None) -> subprocess.Popen:
    """``python -m runner <args>`` started in the background (for tests that interrupt it); ``output``: a file
    that gets its stdout and stderr.

    SIGINT is reset to its default in the child: run from a non-interactive shell's background job (as CI
    may be), it would inherit SIGINT *ignored*, and a Ctrl-C could not be simulated.
    """
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PYTHONPATH": str(REPO)}
    env.pop("CONVLAB_PARENT_RUN_ID", None)
    sink = open(output, "w") if output else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    finally:
        if output:
            sink.close()


def ctrl_c_when(proc: subprocess.Popen, condition: Callable[[], bool], what: str, timeout: float = 300,
                sig: int = signal.SIGINT) -> None:
    """Send SIGINT (Ctrl-C; or ``sig``) to ``proc`` as soon as ``condition()`` holds, then wait for it to exit."""
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting: {what}")
            if proc.poll() is not None:
                pytest.fail(f"convlab exited {proc.returncode} while waiting: {what}")
            time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        proc.kill()


@pytest.fixture
def mlflow_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def run_cli(tmp_path: Path, mlflow_store: str):
    """Run ``python -m runner <args>`` in ``tmp_path`` against the temporary MLflow store."""

    def run(*args: str, expect_ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PYTHONPATH": str(REPO)}
        env.pop("CONVLAB_PARENT_RUN_ID", None)
        proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if expect_ok and proc.returncode != 0:
            raise AssertionError(f"convlab {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    return run


@pytest.fixture
def mlflow_client(mlflow_store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store)


def all_runs(client: MlflowClient):
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments])
