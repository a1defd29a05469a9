"""Hydra launchers that scale out (pip install -e '.[cluster]'): the jobs of a sweep run in other processes,
and still become the nested children of the sweep's parent run (its id travels in the jobs' config:
hydra.job.env_set, see runner.tracking._copy_env_into_jobs)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_TRAIN, all_runs, compose_config
from tests.infra import VENV, free_port, report, unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

PROBE = "+hydra.callbacks.probe._target_=tests.launcher_probe.WhereJobsRun"
SWEEP = [*TINY_TRAIN, "task.augment=false,true"]


def _require_plugin(module: str) -> None:
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # find_spec imports the parent package: no Hydra plugin installed at all
        found = None
    if found is None:
        unavailable(f"{module} is not installed: pip install -e '.[cluster]'")


def _check_sweep(mlflow_client, tmp_path: Path, launcher: str) -> list[dict]:
    runs = all_runs(mlflow_client)
    [parent] = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2, [(r.info.run_name, r.data.tags) for r in runs]
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["task.augment"] for c in children) == ["False", "True"]
    assert {c.info.run_name for c in children} == {"task.augment=False", "task.augment=True"}
    assert all(c.info.experiment_id == parent.info.experiment_id for c in children)
    for child in children:
        assert [p.step for p in mlflow_client.get_metric_history(child.info.run_id, "loss")] == [0]
    where = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs" / "multirun").rglob("where.json"))]
    assert len(where) == 2, f"{launcher}: the probe ran {len(where)} times"
    assert {w["parent_run_env"] for w in where} == {parent.info.run_id}
    assert len({w["pid"] for w in where}) == 2, f"{launcher}: the two jobs did not run in two processes"
    assert not any(w["tensorflow_loaded"] for w in where), "a job started in a process that already ran TensorFlow"
    return where


def _timed_sweep(run_cli, mlflow_client, tmp_path: Path, launcher: str, *settings: str) -> tuple[float, list[dict]]:
    """Run the probe sweep with ``hydra/launcher=<launcher>``; its wall time and where the jobs ran."""
    started = time.monotonic()
    run_cli("-m", f"hydra/launcher={launcher}", *settings, PROBE, *SWEEP)
    seconds = time.monotonic() - started
    return seconds, _check_sweep(mlflow_client, tmp_path, launcher)


def test_joblib_runs_each_job_in_its_own_process(run_cli, mlflow_client, tmp_path):
    _require_plugin("hydra_plugins.hydra_joblib_launcher")
    seconds, where = _timed_sweep(run_cli, mlflow_client, tmp_path, "joblib", "hydra.launcher.n_jobs=2")
    pids = {w["pid"] for w in where}
    assert os.getpid() not in pids
    report(f"hydra/launcher=joblib, 2-job sweep, n_jobs=2: {seconds:.1f} s, job pids {sorted(pids)}")


def test_submitit_local_runs_the_sweep_as_separate_jobs(run_cli, mlflow_client, tmp_path):
    _require_plugin("hydra_plugins.hydra_submitit_launcher")
    seconds, _ = _timed_sweep(run_cli, mlflow_client, tmp_path, "submitit_local", "hydra.launcher.timeout_min=15")
    assert list((tmp_path / "outputs" / "multirun").rglob(".submitit"))  # submitit's own job folders
    report(f"hydra/launcher=submitit_local, 2-job sweep: {seconds:.1f} s")


def test_the_slurm_preset_composes_for_a_cluster():
    _require_plugin("hydra_plugins.hydra_submitit_launcher")
    os.environ.pop("SLURM_PARTITION", None)
    cfg = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == ("gpu", 4, 16, 120)
    assert launcher.submitit_folder.endswith("/.submitit/%j")


@pytest.fixture
def ray_cluster(tmp_path):
    """``ray start --head`` on 127.0.0.1 (every port), token-authenticated, stopped (its process group) after."""
    _require_plugin("hydra_plugins.hydra_ray_launcher")
    ray = VENV / "bin" / "ray"
    if not ray.exists():
        unavailable("ray is not installed: pip install -e '.[cluster]'")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": f"127.0.0.1:{port}",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # no Ray Serve to drain: stop at once
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}"],
        cwd=tmp_path, env={k: v for k, v in env.items() if k != "RAY_ADDRESS"}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head failed:\n{(tmp_path / 'ray-head.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield env, head.pid
    finally:
        for sig, wait in ((signal.SIGTERM, 45), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _listening(process_group: int) -> list[str]:
    """Local addresses of the TCP sockets that a process group listens on (from `ss`)."""
    if not shutil.which("ss"):
        return []
    found = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        for pid in re.findall(r"pid=(\d+)", line):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(int(pid)) == process_group:
                    found.append(line.split()[3])
    return found


def test_ray_runs_the_sweep_on_a_local_ray_cluster(ray_cluster, mlflow_store, mlflow_client, tmp_path):
    ray_env, head = ray_cluster
    env = {**ray_env, "MLFLOW_TRACKING_URI": mlflow_store}
    env.pop("CONVLAB_PARENT_RUN_ID", None)
    started = time.monotonic()
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "runner", "-m", "hydra/launcher=ray_cluster", PROBE,
                           *SWEEP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Connecting to existing Ray cluster at address: {env['RAY_ADDRESS']}" in proc.stderr + proc.stdout
    _check_sweep(mlflow_client, tmp_path, "ray")  # two Ray worker processes, neither with TensorFlow loaded
    addresses = _listening(head)
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses
    report(f"hydra/launcher=ray_cluster on `ray start --head` (127.0.0.1), 2-job sweep: {seconds:.1f} s; "
           f"the Ray head's {len(addresses)} listening sockets all on 127.0.0.1")
