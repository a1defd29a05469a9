"""Reproduce a run from its id (`convlab-rerun`) and resume sweeps / checkpointed training (`resume=true`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runner.reproduce import hydra_value, config_hash
from tests.conftest import REPO, TINY_TRAIN, all_runs, compose_config, ctrl_c_when, start_cli

FOLDER_TRAIN = ["dataset=folder", "dataset.image_size=48", "dataset.batch_size=4", "task.epochs=1",
                "task.steps_per_epoch=2", "task.augment=false"]


def make_folder(root: Path, seed: int = 0) -> Path:
    """A tiny dataset in the book's layout: 2 classes x 3 splits x 4 noise images."""
    rng = np.random.default_rng(seed)
    for split in ("train", "validation", "test"):
        for label in ("cats", "dogs"):
            (root / split / label).mkdir(parents=True)
            for index in range(4):
                cv2.imwrite(str(root / split / label / f"{index}.png"), rng.integers(0, 255, (48, 48, 3), np.uint8))
    return root


def _rerun(tmp_path, mlflow_store, *args, expect_ok=True):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", "from runner.reproduce import main; main()", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"convlab-rerun exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def _history(client: MlflowClient, run_id: str, metric: str) -> list[tuple[int, float]]:
    return sorted((p.step, p.value) for p in client.get_metric_history(run_id, metric))


# ------------------------------------------------------------------------------------------- units


def test_config_hash_ignores_tracking_and_cache_but_not_the_job():
    base = config_hash(compose_config([]))
    assert config_hash(compose_config(["tracking.uri=http://127.0.0.1:1", "cache_dir=/elsewhere"])) == base
    assert config_hash(compose_config(["task.epochs=3"])) != base
    assert config_hash(compose_config(["seed=1"])) != base
    assert config_hash(compose_config(["dataset.image_size=80"])) != base


@pytest.mark.parametrize("value", [None, True, 3, 1e-05, "a b'c", [64, 64], ["x", "y"]])
def test_pinned_values_survive_the_hydra_override_grammar(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    [parsed] = OverridesParser.create().parse_overrides([f"key={hydra_value(value)}"])
    assert parsed.value() == value


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
@pytest.mark.slow
def test_deterministic_rerun_reproduces_every_epoch_exactly(run_cli, mlflow_client, mlflow_store, tmp_path):
    run_cli(*TINY_TRAIN, "task.epochs=2", "deterministic=true")
    [original] = all_runs(mlflow_client)
    assert original.data.tags["convlab.data_hash"]
    assert len(original.data.tags["convlab.config_hash"]) == 16

    _rerun(tmp_path, mlflow_store, original.info.run_id)
    rerun = next(r for r in all_runs(mlflow_client) if r.info.run_id != original.info.run_id)
    assert rerun.info.status == "FINISHED"
    assert rerun.data.tags["convlab.rerun_of"] == original.info.run_id
    assert rerun.data.tags["convlab.config_hash"] == original.data.tags["convlab.config_hash"]
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert _history(mlflow_client, rerun.info.run_id, metric) == _history(
            mlflow_client, original.info.run_id, metric), metric
    assert rerun.data.metrics["test_loss"] == original.data.metrics["test_loss"]


@pytest.mark.e2e
@pytest.mark.slow
def test_rerun_applies_extra_overrides_and_strict_fails_on_a_changed_input(run_cli, mlflow_client, mlflow_store,
                                                                          tmp_path):
    data = make_folder(tmp_path / "data")
    run_cli(*FOLDER_TRAIN, f"dataset.path={data}")
    [original] = all_runs(mlflow_client)

    _rerun(tmp_path, mlflow_store, original.info.run_id, "task.epochs=2")
    changed = next(r for r in all_runs(mlflow_client) if r.info.run_id != original.info.run_id)
    assert changed.data.params["task.epochs"] == "2"
    assert len(_history(mlflow_client, changed.info.run_id, "loss")) == 2

    cv2.imwrite(str(data / "train" / "cats" / "extra.png"), np.zeros((48, 48, 3), np.uint8))
    proc = _rerun(tmp_path, mlflow_store, original.info.run_id, "strict=true", expect_ok=False)
    assert proc.returncode == 1
    assert "convlab.data_hash: was" in proc.stderr
    strict_run = next(r for r in all_runs(mlflow_client) if r.data.params.get("strict") == "True")
    assert strict_run.info.status == "FAILED"
    assert "is not exact" in strict_run.data.tags["convlab.failure_reason"]


@pytest.mark.e2e
def test_rerun_bad_input_gets_a_one_line_error(run_cli, mlflow_client, mlflow_store, tmp_path):
    proc = _rerun(tmp_path, mlflow_store, "not-a-run-id", expect_ok=False)
    assert proc.returncode == 2 and "is not an MLflow run id" in proc.stderr and "Traceback" not in proc.stderr

    proc = _rerun(tmp_path, mlflow_store, "0" * 32, expect_ok=False)
    assert proc.returncode == 2 and "no run 00000000" in proc.stderr

    foreign = mlflow_client.create_run(mlflow_client.create_experiment("other-tool"))
    proc = _rerun(tmp_path, mlflow_store, foreign.info.run_id, expect_ok=False)
    assert proc.returncode == 2 and "it was not made by convlab" in proc.stderr

    experiment = mlflow_client.get_experiment_by_name("other-tool").experiment_id
    stale = mlflow_client.create_run(experiment)
    for key, value in {"model.name": "small_convnet", "dataset.name": "cats_vs_dogs", "task.name": "train"}.items():
        mlflow_client.log_param(stale.info.run_id, key, value)
    mlflow_client.log_text(stale.info.run_id, "task:\n  epochs: 1\n  warmup: 3\nseed: 42\n", "config/config.yaml")
    mlflow_client.log_text(stale.info.run_id, "[]\n", "config/overrides.yaml")
    proc = _rerun(tmp_path, mlflow_store, stale.info.run_id, expect_ok=False)
    assert proc.returncode == 2
    assert "no longer composes" in proc.stderr and "warmup" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_resume_completes_only_the_jobs_a_killed_or_failed_sweep_missed(run_cli, mlflow_client, tmp_path):
    paths = [make_folder(tmp_path / "a", 1), make_folder(tmp_path / "b", 2), tmp_path / "c"]  # c: not there yet
    sweep = ["-m", *FOLDER_TRAIN, f"dataset.path={','.join(map(str, paths))}"]
    first = run_cli(*sweep, expect_ok=False)
    assert first.returncode == 1
    statuses = sorted(r.info.status for r in all_runs(mlflow_client) if "convlab.sweep" not in r.data.tags)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]

    make_folder(paths[2], 3)
    run_cli(*sweep, "resume=true")
    runs = all_runs(mlflow_client)
    jobs = [r for r in runs if "convlab.sweep" not in r.data.tags]
    assert len(jobs) == 4  # 3 from the first sweep + only the missing one
    assert sorted(r.info.status for r in jobs) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    second_parent = max((r for r in runs if "convlab.sweep" in r.data.tags), key=lambda r: r.info.start_time)
    assert second_parent.info.status == "FINISHED"
    reused = [key for key in second_parent.data.tags if key.startswith("convlab.reused.")]
    assert len(reused) == 2
    new_children = [r for r in jobs if r.data.tags.get("mlflow.parentRunId") == second_parent.info.run_id]
    assert [r.data.params["dataset.path"] for r in new_children] == [str(paths[2])]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_killed_checkpointed_run_continues_from_its_last_epoch(tmp_path, mlflow_store, mlflow_client, run_cli):
    data = make_folder(tmp_path / "data")
    args = [*FOLDER_TRAIN, f"dataset.path={data}", "task.checkpoint=true", "task.epochs=4"]
    args = [a for a in args if a != "task.epochs=1"]
    proc = start_cli(tmp_path, mlflow_store, *args, "task.steps_per_epoch=40")

    def checkpoint_logged() -> bool:
        runs = all_runs(mlflow_client) if (tmp_path / "mlflow.db").exists() else []
        return bool(runs and mlflow_client.list_artifacts(runs[0].info.run_id, "checkpoints"))

    ctrl_c_when(proc, checkpoint_logged, "a first checkpoint")
    [killed] = all_runs(mlflow_client)
    assert killed.info.status == "KILLED"
    done_before = {p.step for p in mlflow_client.get_metric_history(killed.info.run_id, "loss")}
    assert 0 in done_before and max(done_before) < 3

    run_cli(*args, "task.steps_per_epoch=40", "resume=true")
    [resumed] = all_runs(mlflow_client)  # the same run, continued
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert {p.step for p in mlflow_client.get_metric_history(resumed.info.run_id, "loss")} == {0, 1, 2, 3}
