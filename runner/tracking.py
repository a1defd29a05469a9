"""MLflow tracking: one run per job, one parent run per sweep, failures recorded with their reason.

Jobs of a sweep may run in other processes (or machines), so the parent run's id travels in the
environment variable ``CONVLAB_PARENT_RUN_ID``, never in a Python object.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, read_write

import runner
from runner import mlflow_ui
from runner.errors import ConvlabError
from runner.mlflow_models import MODEL_TAG, download_keras_model, load_keras_model, log_keras_model  # noqa: F401

PARENT_ENV = "CONVLAB_PARENT_RUN_ID"
SWEEP_KEYS_ENV = "CONVLAB_SWEEP_KEYS"
REASON_TAG = "convlab.failure_reason"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: config keys never logged as params (may carry credentials)
PRIVATE_KEYS = ("tracking.uri",)

_failed_jobs: list[str] = []
_interrupted = False


def failed_jobs() -> list[str]:
    """Reasons of the jobs that failed in this process (and, after a sweep, in its children)."""
    return list(_failed_jobs)


# ------------------------------------------------------------------------------------- run contents


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"task": {"epochs": 5}} -> {"task.epochs": "5"}``; lists stay whole (``[64, 64]``)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif key != "_partial_":
            flat[name] = str(value)
    return flat


def job_params(cfg: DictConfig) -> dict[str, str]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = flatten({key: value for key, value in resolved.items() if key != "hydra"})
    for group, choice in _choices().items():
        params.setdefault(f"{group}.name", str(choice))
    return {key: value for key, value in params.items() if key not in PRIVATE_KEYS}


def _choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: choices[group] for group in ("model", "dataset", "task", "experiment") if choices.get(group)}


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment_tags(seed: int) -> dict[str, str]:
    """What pins a run's code and environment: git commit + dirty flag, versions, seed, host."""
    import keras
    import tensorflow as tf

    tags = {
        "convlab.version": runner.__version__,
        "convlab.tensorflow_version": tf.__version__,
        "convlab.keras_version": keras.__version__,
        "convlab.mlflow_version": mlflow.__version__,
        "convlab.python_version": platform.python_version(),
        "convlab.hostname": platform.node(),
        "convlab.seed": str(seed),
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["convlab.git_commit"] = commit
        tags["convlab.git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    return tags


def _log_config_artifacts(cfg: DictConfig) -> None:
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        mlflow.log_text(OmegaConf.to_yaml(overrides), "config/overrides.yaml")
        hydra_dir = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir
        if hydra_dir.is_dir():
            mlflow.log_artifacts(str(hydra_dir), "config/hydra")


def log_npz(artifact_file: str, **arrays) -> None:
    """Log NumPy arrays as one compressed ``.npz`` artifact (e.g. ``gradcam/chelsea.npz``)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(artifact_file).name
        np.savez_compressed(local, **arrays)
        directory = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(local), None if directory == "." else directory)


CHECKPOINT_DIR = "checkpoints"


def log_checkpoint(model, epoch: int) -> None:
    """Save ``model`` (with its optimizer state) after ``epoch`` (0-based) to the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model.keras")
        (Path(tmp) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
        mlflow.log_artifacts(tmp, CHECKPOINT_DIR)


def load_checkpoint():
    """``(model, last finished epoch)`` from the active run's checkpoint, or None if it has none."""
    import keras

    run_id = mlflow.active_run().info.run_id
    if not MlflowClient().list_artifacts(run_id, CHECKPOINT_DIR):
        return None
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_DIR))
    epoch = json.loads((local / "epoch.json").read_text())["epoch"]
    return keras.models.load_model(local / "model.keras"), epoch


# ---------------------------------------------------------------------------------------- job runs


def _use_tracking(cfg: DictConfig) -> None:
    check_reachable(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)


# ------------------------------------------------------------------------ tracking server reachability


class TrackingServerUnreachable(ConvlabError, CompactHydraException):
    """Hydra prints a CompactHydraException as its message alone, without a traceback."""


_reachable: set[str] = set()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer at all.

    MLflow's client would retry for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES) before the first error;
    that patience is for outages in the middle of a run, not for a server that was never started.
    Any HTTP answer (even 401 or 404) counts as reachable: auth and paths are MLflow's business.
    """
    import urllib.parse

    import requests

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or uri in _reachable:
        return
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # never print credentials
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.exceptions.SSLError:
        pass  # it answered; TLS settings are MLflow's (MLFLOW_TRACKING_INSECURE_TLS, ..._SERVER_CERT_PATH)
    except requests.RequestException as error:
        raise TrackingServerUnreachable(
            f"MLflow tracking server {shown} is not reachable ({type(error).__name__})",
            fix="start it (`make server` runs one on this machine), or point tracking.uri / "
                "MLFLOW_TRACKING_URI at a running server",
        ) from None
    _reachable.add(uri)


def _run_name(cfg: DictConfig) -> str | None:
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    swept = os.environ.get(SWEEP_KEYS_ENV)
    if swept and HydraConfig.initialized():
        keys = swept.split(",")
        return " ".join(o for o in HydraConfig.get().overrides.task if o.lstrip("+~").split("=")[0] in keys)
    choices = _choices()
    return "-".join(choices[g] for g in ("task", "model", "dataset") if g in choices) or None


def failure_reason(error: BaseException) -> str:
    """One line for the run's tag: the innermost ConvlabError's message, else the exception itself."""
    seen = error
    while seen is not None:
        if isinstance(seen, ConvlabError):
            return str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]


def _user_message(error: BaseException) -> str:
    seen = error
    while seen is not None:
        if isinstance(seen, ConvlabError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return "".join(traceback.format_exception(error))


def job_experiment_id(cfg: DictConfig) -> str:
    """The experiment a job's run goes to: its sweep parent's, else ``tracking.experiment``."""
    _use_tracking(cfg)
    parent_id = os.environ.get(PARENT_ENV)
    if parent_id:
        return MlflowClient().get_run(parent_id).info.experiment_id
    return mlflow_ui.set_experiment(cfg.tracking.experiment).experiment_id


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_ENV)


@contextlib.contextmanager
def job_run(cfg: DictConfig, tags: dict[str, str] | None = None,
            resume_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one job, nested under the sweep's parent run when there is one
    (``resume_run_id``: reopen that earlier run instead of starting a new one).

    An exception marks the run FAILED (traceback artifact + one-line reason tag) and is not re-raised:
    the process exits non-zero at the end (see :func:`failed_jobs`) and the other jobs of a sweep go on.
    Ctrl-C marks the run KILLED and stops everything.
    """
    experiment_id = job_experiment_id(cfg)
    parent_id = parent_run_id()
    if resume_run_id:
        started = mlflow.start_run(run_id=resume_run_id)
        if parent_id:
            mlflow.set_tag("mlflow.parentRunId", parent_id)
    else:
        started = mlflow.start_run(experiment_id=experiment_id, run_name=_run_name(cfg), parent_run_id=parent_id)
    with started as run, _ctrl_c_noted():
        try:
            if not resume_run_id:
                mlflow.log_params(job_params(cfg))
            mlflow.set_tags({**environment_tags(cfg.seed), **(tags or {})})
            _log_config_artifacts(cfg)
            yield run
        except KeyboardInterrupt:
            global _interrupted
            _interrupted = True
            mlflow.set_tag(REASON_TAG, "interrupted (Ctrl-C)")
            mlflow.end_run("KILLED")
            raise
        except Exception as error:  # noqa: BLE001 - every failure is recorded, then reported
            if _interrupted:  # Ctrl-C that surfaced as another exception (e.g. from inside a TF op)
                mlflow.set_tag(REASON_TAG, "interrupted (Ctrl-C)")
                mlflow.end_run("KILLED")
                raise KeyboardInterrupt from error
            reason = failure_reason(error)
            _failed_jobs.append(reason)
            mlflow.set_tag(REASON_TAG, reason)
            mlflow.log_text("".join(traceback.format_exception(error)), "error/traceback.txt")
            mlflow.end_run("FAILED")
            print(f"[convlab] run {run.info.run_id} FAILED: {_user_message(error)}", file=sys.stderr)


@contextlib.contextmanager
def _ctrl_c_noted() -> Iterator[None]:
    """Note a Ctrl-C before Python raises KeyboardInterrupt for it: a library may turn that exception into
    another one on its way up, and the run must still end KILLED, not FAILED."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # a background job (`nohup convlab &`) that ignores Ctrl-C keeps ignoring it
        return

    def note_then_interrupt(signum, frame):
        global _interrupted
        _interrupted = True
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, note_then_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------ sweep parents


def _swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep varies (``task.augment=false,true`` -> ``task.augment``): they name its jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element() for o in parsed if o.is_sweep_override()]


#: set where the sweep starts, needed where its jobs run (never credentials: they end up in the job's config)
JOB_ENV = (PARENT_ENV, SWEEP_KEYS_ENV, "MLFLOW_TRACKING_URI", "CONVLAB_CACHE")


def _copy_env_into_jobs(config: DictConfig) -> None:
    """Jobs may run in other processes or machines (hydra/launcher=joblib, submitit_slurm, ray) that do not
    inherit this environment. The launcher composes each job's config here from ``hydra.overrides.hydra``;
    ``hydra.job.env_copy`` copies these variables into the job's ``hydra.job.env_set``, and Hydra sets them
    around the job wherever it runs."""
    names = dict.fromkeys([*config.hydra.job.env_copy, *(n for n in JOB_ENV if n in os.environ)])
    with read_write(config.hydra.overrides.hydra):
        config.hydra.overrides.hydra.append(f"hydra.job.env_copy=[{','.join(names)}]")


class SweepParentRun(Callback):
    """Hydra callback: a multirun sweep gets one MLflow parent run; its jobs become nested children."""

    def __init__(self) -> None:
        self.parent_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # Hydra sets it per job; the experiment name needs it now
        try:
            _use_tracking(config)
        except TrackingServerUnreachable as error:  # Hydra would turn it into a warning and start the jobs
            print(f"[convlab] {error}", file=sys.stderr)
            raise SystemExit(1) from None
        experiment = mlflow_ui.set_experiment(config.tracking.experiment)
        sweep_args = " ".join(config.hydra.overrides.task)
        run = MlflowClient().create_run(
            experiment.experiment_id,
            run_name=f"sweep {sweep_args}".strip(),
            tags={"convlab.sweep": "true", "convlab.sweep_overrides": sweep_args,
                  "convlab.sweep_dir": str(config.hydra.sweep.dir)},
        )
        self.parent_id = run.info.run_id
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[SWEEP_KEYS_ENV] = ",".join(_swept_keys(list(config.hydra.overrides.task)))
        _copy_env_into_jobs(config)
        atexit.register(self._end_if_open)
        print(f"[convlab] sweep parent run {self.parent_id}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = self._failed_children()
        self._end("FAILED" if failed else "FINISHED", failed)

    def _failed_children(self) -> list[str]:
        client = MlflowClient()
        parent = client.get_run(self.parent_id)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'"
        )
        return [child.info.run_id for child in children if child.info.status != "FINISHED"]

    def _end(self, status: str, failed: list[str]) -> None:
        if self.parent_id is None:
            return
        client = MlflowClient()
        if failed:
            client.set_tag(self.parent_id, REASON_TAG, f"{len(failed)} job(s) did not finish: {', '.join(failed)}")
            _failed_jobs.extend(run_id for run_id in failed if run_id not in _failed_jobs)
        client.set_terminated(self.parent_id, status)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_KEYS_ENV, None)
        self.parent_id = None

    def _end_if_open(self) -> None:
        """At exit, a parent run still open means the sweep was interrupted or crashed."""
        if self.parent_id is not None:
            self._end("KILLED" if _interrupted else "FAILED", [])
