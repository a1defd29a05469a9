"""The `convlab` command: compose the config with Hydra, then run the task inside one MLflow run."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import mlflow
from mlflow.tracking import MlflowClient

from runner import liveness, mlflow_datasets, mlflow_models, reproduce, sweeps, terminal, tracking, validation
from runner.redact import redact
from runner.schema import register_configs

register_configs()

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


#: jobs started in this process (a sweep's basic launcher runs them all in one)
_jobs_started = 0


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; from the second job of a process on, first drop the Keras models and
    traces the earlier jobs left (``clear_session``: a full garbage collection, ~0.25 s, wasted on a fresh
    process, so tasks do not clear at their end either)."""
    import keras
    import tensorflow as tf

    global _jobs_started
    if _jobs_started:
        keras.backend.clear_session()
    _jobs_started += 1
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def run_job(cfg: DictConfig) -> float | None:
    """Build the model spec, dataset and task from the config and run the task, tracked in MLflow.

    Returns the task's metric named ``optimized_metric`` (for Hydra's sweeper), None when unset or the job failed."""
    tracking.redact_hydra_files()
    validation.check_config(cfg)  # before any run exists: a typo costs a second, not a FAILED run
    job_hash = reproduce.config_hash(cfg)
    resume_run_id = None
    if cfg.resume:
        experiment_id = tracking.job_experiment_id(cfg)
        liveness.mark_vanished(MlflowClient(), [experiment_id], cfg.tracking.stale_after_s)
        done = reproduce.finished_run(experiment_id, job_hash)
        if done:
            _skip(done.info.run_id)
            return sweeps.objective(done.data.metrics, cfg.optimized_metric)
        unfinished = reproduce.resumable_run(experiment_id, job_hash)
        resume_run_id = unfinished.info.run_id if unfinished else None
    tracking.open_store(cfg.tracking.uri)  # an unusable store fails in seconds, before TensorFlow loads
    terminal.import_tensorflow()
    result = None  # a job that fails returns nothing: the sweeper marks its trial failed and goes on
    tags = {reproduce.HASH_TAG: job_hash, **({reproduce.RERUN_TAG: cfg.rerun_of} if cfg.rerun_of else {})}
    with tracking.job_run(cfg, tags=tags, resume_run_id=resume_run_id) as run:
        seed_everything(cfg.seed, cfg.deterministic)
        model = instantiate(cfg.model)
        dataset = instantiate(cfg.dataset)
        log_skipped_files(dataset)
        mlflow_datasets.log_inputs_when_read(dataset)
        inputs = reproduce.input_hashes(model, dataset)
        mlflow.set_tags(inputs)
        if cfg.rerun_of:
            current = {**mlflow.get_run(run.info.run_id).data.tags, **inputs}
            reproduce.compare_with_original(cfg.rerun_of, current, cfg.strict)
        task = instantiate(cfg.task)
        metrics = task(model=model, dataset=dataset)
        result = sweeps.objective(metrics, cfg.optimized_metric)  # a wrong name fails the first job
        if cfg.tracking.register_model:
            mlflow_models.register_run_model(run.info.run_id, cfg.tracking.register_model)
    terminal.print_summary(run.info.run_id)
    if isinstance(tracking.last_failure(), sweeps.UnknownObjective):
        raise SystemExit(1)  # every other job of the sweep would fail the same way
    return result


def log_skipped_files(dataset) -> None:
    """bad_files=skip: how many files the dataset left out (metric) and which, with why (text artifact)."""
    skipped = getattr(dataset, "skipped_files", None)
    if skipped is None:
        return
    mlflow.log_metric("data.skipped_files", len(skipped))
    if skipped:
        mlflow.log_text("".join(f"{path}\t{problem}\n" for path, problem in skipped), "data/skipped_files.tsv")


def _skip(finished_run_id: str) -> None:
    """resume=true: this job already has a FINISHED run; link it from the sweep's parent run."""
    print(f"[convlab] resume: skipping, already FINISHED as run {finished_run_id}", file=sys.stderr)
    parent = tracking.parent_run_id()
    if parent:
        MlflowClient().set_tag(parent, f"convlab.reused.{finished_run_id}", "FINISHED earlier; not re-run")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    try:
        return run_job(cfg)
    except validation.ConfigError as error:  # rejected before any run: the message alone, and stop
        print(redact(str(error)), file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as error:  # noqa: BLE001 - before a run exists (e.g. an unusable store): reported here,
        # not by Hydra, whose "Error executing job with overrides: [...]" line prints credentials in overrides
        tracking.fail_without_run(error)


def main() -> None:
    """``convlab [overrides]``: exit 0, 1 (a job failed), 130 (Ctrl-C) or 143 (SIGTERM), without a traceback."""
    exit_without_teardown(exit_code())


def exit_code() -> int:
    """Run the command line's jobs; the exit code."""
    tracking.redact_logs()
    try:
        with tracking.signals_interrupt():
            hydra_main()
    except KeyboardInterrupt as error:
        interrupted = tracking.take_interruption(error)
        if not tracking.killed_runs():
            print(f"[convlab] KILLED: {interrupted.reason}, before a run started", file=sys.stderr)
        return interrupted.exit_code
    except SystemExit as error:  # Hydra's own (--help, --cfg, a bad override) and a sweep's wrong objective
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    failures = tracking.failed_jobs()
    if failures:
        run_ids = ", ".join(run_id for run_id in failures if run_id)
        print(f"[convlab] {len(failures)} job(s) failed" + (f": {run_ids}" if run_ids else ""), file=sys.stderr)
        return 1
    return 0


def exit_without_teardown(code: int) -> None:
    """Exit with ``code`` once everything a normal exit finishes is finished, but skip the interpreter's
    teardown: freeing TensorFlow's, MLflow's and SQLAlchemy's modules object by object takes ~2.5 s after
    a job's last output (bench/overhead.py), a tenth of a small job, and nothing is written during it.

    First, as ``sys.exit`` would: the other threads are joined (MLflow's logging workers finish what they
    queued), the ``atexit`` functions run and the standard streams are flushed. Where this Python lacks
    the hooks for that, it exits the ordinary way."""
    import atexit
    import os
    import threading

    shutdown, run_exit_functions = getattr(threading, "_shutdown", None), getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exit_functions is None:
        sys.exit(code)
    shutdown()
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
