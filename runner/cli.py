"""The `convlab` command: compose the config with Hydra, then run the task inside one MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import mlflow
from mlflow.tracking import MlflowClient

from runner import mlflow_datasets, mlflow_models, reproduce, terminal, tracking
from runner.schema import register_configs

register_configs()

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.backend.clear_session()  # jobs of a sweep may share this process
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def run_job(cfg: DictConfig) -> None:
    """Build the model spec, dataset and task from the config and run the task, tracked in MLflow."""
    job_hash = reproduce.config_hash(cfg)
    resume_run_id = None
    if cfg.resume:
        experiment_id = tracking.job_experiment_id(cfg)
        done = reproduce.finished_run(experiment_id, job_hash)
        if done:
            _skip(done.info.run_id)
            return
        unfinished = reproduce.resumable_run(experiment_id, job_hash)
        resume_run_id = unfinished.info.run_id if unfinished else None
    terminal.import_tensorflow()
    tags = {reproduce.HASH_TAG: job_hash, **({reproduce.RERUN_TAG: cfg.rerun_of} if cfg.rerun_of else {})}
    with tracking.job_run(cfg, tags=tags, resume_run_id=resume_run_id) as run:
        seed_everything(cfg.seed, cfg.deterministic)
        model = instantiate(cfg.model)
        dataset = instantiate(cfg.dataset)
        mlflow_datasets.log_inputs_when_read(dataset)
        inputs = reproduce.input_hashes(model, dataset)
        mlflow.set_tags(inputs)
        if cfg.rerun_of:
            current = {**mlflow.get_run(run.info.run_id).data.tags, **inputs}
            reproduce.compare_with_original(cfg.rerun_of, current, cfg.strict)
        task = instantiate(cfg.task)
        task(model=model, dataset=dataset)
        if cfg.tracking.register_model:
            mlflow_models.register_run_model(run.info.run_id, cfg.tracking.register_model)
    terminal.print_summary(run.info.run_id)


def _skip(finished_run_id: str) -> None:
    """resume=true: this job already has a FINISHED run; link it from the sweep's parent run."""
    print(f"[convlab] resume: skipping, already FINISHED as run {finished_run_id}", file=sys.stderr)
    parent = tracking.parent_run_id()
    if parent:
        MlflowClient().set_tag(parent, f"convlab.reused.{finished_run_id}", "FINISHED earlier; not re-run")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> None:
    hydra_main()
    failures = tracking.failed_jobs()
    if failures:
        print(f"[convlab] {len(failures)} job(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
