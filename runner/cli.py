"""The `convlab` command: compose the config with Hydra, then run the task inside one MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from runner import tracking
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
    with tracking.job_run(cfg):
        seed_everything(cfg.seed, cfg.deterministic)
        model = instantiate(cfg.model)
        dataset = instantiate(cfg.dataset)
        task = instantiate(cfg.task)
        task(model=model, dataset=dataset)


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
