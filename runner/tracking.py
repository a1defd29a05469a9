"""MLflow tracking: one run per job, one parent run per sweep, failures recorded with their reason.

Jobs of a sweep may run in other processes (or machines), so the parent run's id travels in the
environment variable ``CONVLAB_PARENT_RUN_ID``, never in a Python object.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
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
from hydra.types import RunMode
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, read_write

import runner
from runner import liveness, mlflow_ui, reproduce, sweeps, validation
from runner.errors import ConvlabError
from runner.mlflow_models import MODEL_TAG, download_keras_model, load_keras_model, log_keras_model  # noqa: F401
from runner.redact import redact, redact_file, redact_value

PARENT_ENV = "CONVLAB_PARENT_RUN_ID"
SWEEP_KEYS_ENV = "CONVLAB_SWEEP_KEYS"
REASON_TAG = "convlab.failure_reason"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: config keys never logged as params (may carry credentials)
PRIVATE_KEYS = ("tracking.uri",)

#: run ids of the jobs whose run failed in this process (and, after a sweep, of its failed children)
_failed_runs: list[str | None] = []  # None: a job that failed before its run existed
_last_failure: list[BaseException] = []


def last_failure() -> BaseException | None:
    """The exception of the last job whose run failed in this process."""
    return _last_failure[-1] if _last_failure else None


def failed_jobs() -> list[str | None]:
    """Run ids of the jobs that failed in this process (after a sweep: its children that did not finish;
    never the sweep's parent run itself); None for a job that failed before its run existed."""
    return list(_failed_runs)


# ------------------------------------------------------------------------------------------ signals


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run ends KILLED with ``reason``, the process exits ``exit_code``.

    A KeyboardInterrupt, so that code which cleans up after Ctrl-C does the same after SIGTERM."""

    def __init__(self, reason: str, exit_code: int):
        super().__init__(reason)
        self.reason, self.exit_code = reason, exit_code
        self.taken = False  # set by take_interruption once job_run or main handles it


#: seconds between re-raises of a signal's exception that nothing has taken yet (see signals_interrupt)
REDELIVER_S = 1.0
#: what a signal means for the run, and the exit status (128 + the signal's number, as a shell reports it)
SIGNALS = {signal.SIGINT: ("interrupted (Ctrl-C)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143)}
_interruption: Interrupted | None = None
_killed_runs: list[str] = []


def killed_runs() -> list[str]:
    """Run ids this process ended KILLED (Ctrl-C, SIGTERM)."""
    return list(_killed_runs)


def interruption_of(error: BaseException) -> Interrupted:
    """The Ctrl-C / SIGTERM behind a KeyboardInterrupt."""
    if isinstance(error, Interrupted):
        return error
    return _interruption or Interrupted(*SIGNALS[signal.SIGINT])  # a KeyboardInterrupt raised without our handler


def redact_logs() -> None:
    """Mask credentials in every log record from here on (Hydra logs each job's overrides: "#0 : tracking.uri=...")."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return record
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        return record

    masked_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the CLI runs, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (noted first: a
    library may turn the exception into another one on its way up, and the run must still end KILLED).

    A signal the process inherited as ignored (``nohup convlab &`` ignores SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        global _interruption
        _interruption = Interrupted(*SIGNALS[signum])
        # Raised inside a finalizer (a weakref callback, a __del__), the exception is printed as "Exception
        # ignored" and lost, and the job would go on: until job_run or main takes it, raise it again each second.
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S, REDELIVER_S)
        raise _interruption

    def redeliver(signum, frame):
        if _interruption is not None and not _interruption.taken:
            raise _interruption

    def quiet_when_redelivered(unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):  # ours is raised again: no "Exception ignored"
            default_hook(unraisable)

    default_hook = sys.unraisablehook
    sys.unraisablehook = quiet_when_redelivered
    previous = {signum: signal.getsignal(signum) for signum in (*SIGNALS, signal.SIGALRM)}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, redeliver if signum == signal.SIGALRM else interrupt)
    try:
        yield
    finally:
        sys.unraisablehook = default_hook
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def take_interruption(error: BaseException) -> Interrupted:
    """The Ctrl-C / SIGTERM behind ``error``, marked as handled: it is not raised again."""
    interrupted = interruption_of(error)
    interrupted.taken = True
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
    return interrupted


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
    return {key: redact_value(key, value) for key, value in params.items() if key not in PRIVATE_KEYS}


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


def final_metrics() -> dict[str, float]:
    """The active run's metrics, each at its last logged value: what a task returns (none outside a run)."""
    run = mlflow.active_run()
    if run is None:
        return {}
    wait_for_async_metrics()
    return dict(MlflowClient().get_run(run.info.run_id).data.metrics)


# --------------------------------------------------------------------- asynchronous metrics (training)

#: MLflow's batch-buffering setting: its async worker waits this long on its stop event between batches
ASYNC_BUFFER_ENV = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
_users_buffering = os.environ.get(ASYNC_BUFFER_ENV)  # a user's own value is never changed
#: the operations of :func:`log_metrics_async` not yet known to be written
_pending_metrics: list[mlflow.RunOperations] = []


def log_metrics_async(metrics: Mapping[str, float], step: int | None = None, **kwargs: Any) -> None:
    """Log ``metrics`` to the active run without waiting for the store, as MLflow's Keras callback does: a
    tracking server that is down delays the points, it never stalls training. :func:`wait_for_async_metrics`
    waits for them."""
    _pending_metrics.append(mlflow.log_metrics(dict(metrics), step=step, synchronous=False, **kwargs))


def wait_for_async_metrics() -> None:
    """Return once every point of :func:`log_metrics_async` is in the store. ``mlflow.flush_async_logging()``
    would stop and restart MLflow's worker, waiting out its 1 s queue poll; each point's own operation ends
    as soon as it is written. A point that could not be written was reported by MLflow (an error line), as a
    flush reports it; the run goes on."""
    while _pending_metrics:
        operations = _pending_metrics.pop(0)
        with contextlib.suppress(MlflowException):
            operations.wait()


def async_logging_for_training(training: bool) -> None:
    """Fit MLflow's async worker to what comes: while a model trains (``training``), it takes each epoch's
    points as they come, polling its queue once a second (MLflow's default). Once training is over, no more
    points come, and a run's end (``end_run`` stops the worker) would wait out that poll, up to 1 s;
    buffering makes the worker wait on its stop event instead, which the run's end sets at once.

    Training itself keeps MLflow's default, each epoch written at once: buffering it too was tried, and the
    Ctrl-C test of a checkpointed run then failed 3 times in about 25 (cause not found; 0 in 60 when tried again,
    docs/training.md). A user's own ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS`` is kept."""
    if _users_buffering is not None:
        return
    if training:
        os.environ.pop(ASYNC_BUFFER_ENV, None)
    else:
        os.environ[ASYNC_BUFFER_ENV] = "1"


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


def redact_hydra_files() -> None:
    """Mask credentials in the files Hydra wrote before the job started: the run dir's ``.hydra/*.yaml``
    (they hold the overrides, e.g. ``tracking.uri=http://user:secret@host``) and a sweep's ``multirun.yaml``."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir is not None and not OmegaConf.is_missing(hydra_cfg.runtime, "output_dir"):
        for path in (Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml"):
            redact_file(path)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        redact_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")


def _log_config_artifacts(cfg: DictConfig) -> None:
    mlflow.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), "config/config.yaml")
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        mlflow.log_text(redact(OmegaConf.to_yaml(overrides)), "config/overrides.yaml")
        redact_hydra_files()
        if hydra_cfg.output_subdir is not None:
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
    open_store(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    liveness.STALE_AFTER_S = float(cfg.tracking.stale_after_s)
    # MLflow prints "View run <name> at: <tracking URI>/#/..." with the URI's credentials; job_run prints it masked
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


# ------------------------------------------------------------------------------------- tracking stores


class TrackingStoreUnusable(ConvlabError, CompactHydraException):
    """The store cannot be used at all; said in one line before MLflow retries (~100 s) and a SQL traceback."""


_opened: set[str] = set()


def open_store(uri: str) -> None:
    """Check that the tracking store at ``uri`` can be used, and create a new SQLite store safely.

    http(s): the server answers (:func:`check_reachable`). sqlite: the directory is writable and has room, an
    existing file is an SQLite database, and a new one is created (MLflow's tables) under a file lock, so
    that jobs started at the same moment on a fresh ``mlflow.db`` do not both create its tables.
    """
    if uri in _opened:
        return
    scheme = uri.partition(":")[0]
    if scheme in ("http", "https"):
        check_reachable(uri)
    elif scheme == "sqlite" and (path := sqlite_path(uri)) is not None:
        _check_sqlite_file(uri, path)
        with _store_errors(uri), store_lock(path):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates the tables on first use
    _opened.add(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None: in memory)."""
    path = uri.partition("?")[0].removeprefix("sqlite:///")
    return None if path in ("", ":memory:") or path == uri else Path(path)


#: below this much free space a store cannot even be created (MLflow's schema is ~1 MiB)
MIN_FREE_BYTES = 2 * 1024 * 1024


def _check_sqlite_file(uri: str, path: Path) -> None:
    import sqlite3

    def unusable(cause: str, fix: str) -> None:
        raise TrackingStoreUnusable(f"MLflow tracking store {redact(uri)} is unusable: {cause}", fix=fix)

    directory = path.parent
    elsewhere = "or point tracking.uri / MLFLOW_TRACKING_URI at a store on another disk"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as probe:  # SQLite writes its journal beside the file
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
        free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    except OSError as error:
        unusable(f"cannot write in {directory} ({error.strerror})", f"make {directory} writable, {elsewhere}")
    if free < MIN_FREE_BYTES:
        unusable(f"{os.strerror(errno.ENOSPC)} on {directory} ({free // 1024} KiB free)",
                 f"free some space there (df -h {directory}), {elsewhere}")
    if not path.exists():
        return
    if not os.access(path, os.R_OK | os.W_OK):
        unusable(f"{path} is not readable and writable", f"chmod u+rw {path}, {elsewhere}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as error:
        unusable(f"{path} is not an SQLite database ({error})",
                 f"move {path} away (MLflow then creates a new store), {elsewhere}")


@contextlib.contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<store>.lock`` beside the SQLite file (released when the process dies)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def store_failure(error: BaseException, uri: str | None = None) -> str | None:
    """One line for an error of the tracking store itself (disk full, read-only, not a database), else None."""
    import sqlalchemy.exc

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.orig is not None:
            cause = str(seen.orig).splitlines()[0]
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):
            cause = f"{seen.strerror}: {seen.filename}" if seen.filename else str(seen.strerror)
            break
        seen = seen.__cause__ or seen.__context__
    else:
        return None
    return f"MLflow tracking store {redact(uri or mlflow.get_tracking_uri())} failed: {cause}"


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except ConvlabError:
        raise
    except Exception as error:  # noqa: BLE001 - only store errors are translated; the rest goes on up
        line = store_failure(error, uri)
        if line is None:
            raise
        raise TrackingStoreUnusable(line, fix="free space / fix permissions there, or point tracking.uri "
                                              "at another store") from None


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


#: the runs table's name column (String(250) in MLflow's SQL schema); PostgreSQL refuses a longer name, sqlite not
MAX_RUN_NAME = 250


def fitted_run_name(name: str) -> str:
    """``name`` cut to what every MLflow backend stores, marked with an ellipsis when cut."""
    return name if len(name) <= MAX_RUN_NAME else name[:MAX_RUN_NAME - 1] + "…"


def _run_name(cfg: DictConfig) -> str | None:
    if cfg.tracking.run_name:
        return fitted_run_name(cfg.tracking.run_name)
    swept = os.environ.get(SWEEP_KEYS_ENV)
    if swept and HydraConfig.initialized():
        keys = swept.split(",")
        return fitted_run_name(redact(" ".join(o for o in HydraConfig.get().overrides.task
                                               if o.lstrip("+~").split("=")[0] in keys)))
    choices = _choices()
    return "-".join(choices[g] for g in ("task", "model", "dataset") if g in choices) or None


def failure_reason(error: BaseException) -> str:
    """One line for the run's tag: the innermost ConvlabError's message, a store failure, else the exception."""
    seen = error
    while seen is not None:
        if isinstance(seen, ConvlabError):
            return redact(str(seen).splitlines()[0])
        seen = seen.__cause__ or seen.__context__
    return redact(store_failure(error) or f"{type(error).__name__}: {error}".splitlines()[0][:500])


def user_message(error: BaseException) -> str:
    """What the terminal shows for a failure: a ConvlabError's message + fix, a store failure's one line, else
    the traceback (a bug: it is worth its traceback). Credentials masked."""
    seen = error
    while seen is not None:
        if isinstance(seen, ConvlabError):
            return redact(str(seen))
        seen = seen.__cause__ or seen.__context__
    line = store_failure(error)
    if line:
        return f"{redact(line)}\n  fix: free space / fix permissions there, then rerun with resume=true"
    return redact("".join(traceback.format_exception(error)))


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
    Ctrl-C / SIGTERM mark the run KILLED (with the reason), print one line and stop everything.
    The run carries its pid, host and a heartbeat, so that a SIGKILL is detected afterwards (runner.liveness).
    """
    experiment_id = job_experiment_id(cfg)
    parent_id = parent_run_id()
    with _store_errors(cfg.tracking.uri):
        if resume_run_id:
            started = mlflow.start_run(run_id=resume_run_id)
            mlflow.set_tags({**liveness.where_tags(), **({"mlflow.parentRunId": parent_id} if parent_id else {})})
        else:  # created with its pid and host: a SIGKILL a moment later still leaves a run that can be found
            started = mlflow.start_run(experiment_id=experiment_id, run_name=_run_name(cfg),
                                       parent_run_id=parent_id, tags=liveness.where_tags())
    run = started
    with liveness.heartbeat(run.info.run_id, cfg.tracking.heartbeat_s):
        try:
            if not resume_run_id:
                mlflow.log_params(job_params(cfg))
            _log_config_artifacts(cfg)
            mlflow.set_tags({**environment_tags(cfg.seed), **(tags or {})})  # imports TensorFlow
            yield run
        except KeyboardInterrupt as error:
            interrupted = take_interruption(error)
            _end_killed(run.info.run_id, interrupted)
            raise interrupted from None
        except Exception as error:  # noqa: BLE001 - every failure is recorded, then reported
            if _interruption:  # Ctrl-C / SIGTERM that surfaced as another exception (e.g. from inside a TF op)
                interrupted = take_interruption(_interruption)
                _end_killed(run.info.run_id, interrupted)
                raise interrupted from None
            _failed_runs.append(run.info.run_id)
            _last_failure[:] = [error]
            with contextlib.suppress(Exception):  # a full disk may refuse these too; the line below still shows
                mlflow.set_tag(REASON_TAG, failure_reason(error))
                mlflow.log_text(redact("".join(traceback.format_exception(error))), "error/traceback.txt")
            _end_quietly("FAILED")
            print(f"[convlab] run {run.info.run_id} FAILED: {user_message(error)}", file=sys.stderr)
        else:
            mlflow.end_run("FINISHED")
        finally:
            async_logging_for_training(True)  # back to MLflow's default for the next job in this process
            _pending_metrics.clear()  # ending the run drained MLflow's queue
            _print_run_url(run)


def _end_killed(run_id: str, interrupted: Interrupted) -> None:
    with contextlib.suppress(Exception):
        mlflow.set_tag(REASON_TAG, interrupted.reason)
    _end_quietly("KILLED")
    _killed_runs.append(run_id)
    print(f"[convlab] run {run_id} KILLED: {interrupted.reason}", file=sys.stderr)


def fail_without_run(error: Exception) -> None:
    """A job that failed before its run existed (an unusable store, a server that is down): one line (or, for
    a bug, its traceback), credentials masked; the process exits 1 at the end like for a failed run."""
    _failed_runs.append(None)
    print(f"[convlab] FAILED: {user_message(error)}", file=sys.stderr)


def _end_quietly(status: str) -> None:
    """End the active run FAILED / KILLED; a store that refuses now (disk full) leaves it RUNNING, for
    runner.liveness to find afterwards (its process will be gone)."""
    with contextlib.suppress(Exception):
        mlflow.end_run(status)


def _print_run_url(run) -> None:
    """MLflow's "View run ... at" line for runs on a server, with the URI's credentials masked."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        experiment_url = f"{redact(uri).rstrip('/')}/#/experiments/{run.info.experiment_id}"
        print(f"🏃 View run {redact(run.info.run_name or '')} at: {experiment_url}/runs/{run.info.run_id}")


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


#: the sweep's overrides as a JSON list (convlab-rerun <parent run id> runs the sweep again with them)
SWEEP_ARGS_TAG = reproduce.SWEEP_ARGS_TAG


class SweepParentUnavailable(ConvlabError):
    """The store refused the sweep's parent run: without it the jobs would run with no summary to nest under."""


def _open_parent(config: DictConfig, sweep: sweeps.Sweep) -> str:
    """The sweep's parent run (:func:`_create_parent`), or a :class:`SweepParentUnavailable` naming the cause,
    before any job starts."""
    try:
        experiment_id = mlflow_ui.set_experiment(config.tracking.experiment).experiment_id
        return _create_parent(config, experiment_id, sweep)
    except ConvlabError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the store said, the sweep cannot be recorded
        raise SweepParentUnavailable(
            f"the sweep's parent run cannot be created in {redact(config.tracking.uri)}: {failure_reason(error)}",
            fix="no job was started; make the tracking store accept new runs (its permissions, disk space, or "
                "the server's log), or point tracking.uri / MLFLOW_TRACKING_URI at another store") from None


def _create_parent(config: DictConfig, experiment_id: str, sweep: sweeps.Sweep) -> str:
    """A new parent run for the sweep; ``resume=true`` on an Optuna sweep reopens its study's earlier one."""
    client = MlflowClient()
    earlier = sweeps.parent_of_study(experiment_id, sweep.study) if sweep.study and config.resume else None
    if earlier is not None:
        client.update_run(earlier.info.run_id, status="RUNNING")
        for key, value in liveness.where_tags().items():
            client.set_tag(earlier.info.run_id, key, value)
        if REASON_TAG in earlier.data.tags:  # why it ended last time; set again if it fails again
            client.delete_tag(earlier.info.run_id, REASON_TAG)
        return earlier.info.run_id
    overrides = [redact(o) for o in config.hydra.overrides.task]
    sweep_args = " ".join(overrides)
    run = client.create_run(
        experiment_id,
        run_name=fitted_run_name(f"sweep {sweep_args}".strip()),  # the whole line stays in a tag
        tags={"convlab.sweep": "true", "convlab.sweep_overrides": sweep_args, SWEEP_ARGS_TAG: json.dumps(overrides),
              "convlab.sweep_dir": str(config.hydra.sweep.dir), **liveness.where_tags(),
              **({sweeps.STUDY_TAG: sweep.study} if sweep.study else {})},
    )
    return run.info.run_id


def _tell_story(sweep: sweeps.Sweep) -> None:
    """The parent run's summary of its children (runner.sweeps); a failure there never loses the sweep's status."""
    try:
        sweeps.tell_story(sweep)
    except Exception as error:  # noqa: BLE001 - the children's runs are recorded; the summary is a view of them
        print(f"[convlab] sweep parent run {sweep.parent_id}: no summary ({failure_reason(error)})", file=sys.stderr)


class SweepParentRun(Callback):
    """Hydra callback: a multirun sweep gets one MLflow parent run; its jobs become nested children."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.sweep: sweeps.Sweep | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # Hydra sets it per job; the experiment name needs it now
        try:
            validation.check_sweep(config)  # every job's settings, before the parent run exists
            _use_tracking(config)
            self.sweep = sweeps.sweep_of(config, _swept_keys(list(config.hydra.overrides.task)))
            self.parent_id = self.sweep.parent_id = _open_parent(config, self.sweep)
        except ConvlabError as error:  # Hydra would turn it into a warning and start the jobs
            shown = redact(str(error))
            print(shown if isinstance(error, validation.ConfigError) else f"[convlab] {shown}", file=sys.stderr)
            raise SystemExit(1) from None
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[SWEEP_KEYS_ENV] = ",".join(self.sweep.swept_keys)  # with the sweeper's search space: Optuna's
        if self.sweep.optuna:
            sweeps.continue_study(config, self.sweep)
        _copy_env_into_jobs(config)
        atexit.register(self._end_if_open)
        print(f"[convlab] sweep parent run {self.parent_id}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _tell_story(self.sweep)
        failed = self._failed_children()
        from runner.faithfulness.leaderboard import log_leaderboard

        log_leaderboard(self.parent_id)  # a sweep over explain methods: their faithfulness leaderboard
        self._end("FAILED" if failed else "FINISHED", failed)

    def _failed_children(self) -> list[str]:
        client = MlflowClient()
        parent = client.get_run(self.parent_id)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'"
        )
        return [child.info.run_id for child in children if child.info.status != "FINISHED"]

    def _end(self, status: str, failed: list[str], reason: str | None = None) -> None:
        if self.parent_id is None:
            return
        client = MlflowClient()
        if failed:
            reason = f"{len(failed)} job(s) did not finish: {', '.join(failed)}"
            _failed_runs.extend(run_id for run_id in failed if run_id not in _failed_runs)
        with contextlib.suppress(Exception):  # a store that refuses now leaves it to liveness (pid gone)
            if reason:
                client.set_tag(self.parent_id, REASON_TAG, reason)
            client.set_terminated(self.parent_id, status)
        if status == "KILLED":
            print(f"[convlab] sweep parent run {self.parent_id} KILLED: {reason}", file=sys.stderr)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_KEYS_ENV, None)
        self.parent_id = None

    def _end_if_open(self) -> None:
        """At exit, a parent run still open means the sweep was interrupted (Ctrl-C, SIGTERM) or crashed."""
        if self.parent_id is not None:
            if _interruption:
                self._end("KILLED", [], _interruption.reason)
            else:
                self._end("FAILED", [], "the sweep stopped before its last job")
