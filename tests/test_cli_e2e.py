"""The real CLI end to end on tiny settings, asserting on what MLflow recorded."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from tests.conftest import TINY_TRAIN, all_runs

pytestmark = pytest.mark.e2e


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        paths |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def test_train_job_records_config_metrics_plots_and_a_loadable_model(run_cli, mlflow_client, mlflow_store):
    run_cli(*TINY_TRAIN)

    [run] = all_runs(mlflow_client)
    assert run.info.status == "FINISHED"
    assert mlflow_client.get_experiment(run.info.experiment_id).name == "train"
    params = run.data.params
    assert params["model.name"] == "small_convnet"
    assert params["dataset.name"] == "cats_vs_dogs"
    assert params["task.epochs"] == "1"
    assert params["dataset.image_size"] == "48"
    assert params["model.dropout"] == "0.5"
    assert "tracking.uri" not in params
    tags = run.data.tags
    assert len(tags["convlab.git_commit"]) == 40 and tags["convlab.git_dirty"] in ("True", "False")
    assert tags["convlab.seed"] == "42"
    for key in ("convlab.version", "convlab.tensorflow_version", "convlab.keras_version", "convlab.hostname"):
        assert tags[key]

    for metric in ("accuracy", "loss", "val_accuracy", "val_loss"):
        history = mlflow_client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == [0], metric
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert run.data.metrics["test_loss"] > 0

    artifacts = _artifact_paths(mlflow_client, run.info.run_id)
    assert {"plots/accuracy.png", "plots/loss.png", "plots/augmentation.png", "config/config.yaml",
            "config/overrides.yaml"} <= artifacts
    [output] = run.outputs.model_outputs  # the model is an MLflow LoggedModel, not a run artifact
    assert mlflow_client.get_logged_model(output.model_id).name == "model"

    mlflow.set_tracking_uri(mlflow_store)
    from runner.tracking import load_keras_model

    model, class_names = load_keras_model(f"runs:/{run.info.run_id}/model")
    assert class_names == ["cats", "dogs"]
    assert model.input_shape == (None, 48, 48, 3)
    prediction = model.predict(np.zeros((1, 48, 48, 3), np.float32), verbose=0)
    assert prediction.shape == (1, 1) and 0.0 <= float(prediction[0, 0]) <= 1.0
    # logged without RMSprop's slots (one per weight): the file holds about the weights alone
    from runner.tracking import download_keras_model

    weight_bytes = 4 * model.count_params()
    assert download_keras_model(f"runs:/{run.info.run_id}/model").stat().st_size < 1.3 * weight_bytes


def test_bad_input_fails_the_run_with_its_reason_and_no_traceback(run_cli, mlflow_client):
    proc = run_cli(*TINY_TRAIN, "dataset.image_size=32", expect_ok=False)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "small_convnet needs inputs of at least 46x46 px" in proc.stderr
    assert "dataset.image_size=46" in proc.stderr  # the fix
    [run] = all_runs(mlflow_client)
    assert run.info.status == "FAILED"
    assert run.data.tags["convlab.failure_reason"].startswith("small_convnet needs inputs of at least 46x46")
    assert "error/traceback.txt" in _artifact_paths(mlflow_client, run.info.run_id)


def test_a_two_job_sweep_makes_one_parent_and_two_nested_children(run_cli, mlflow_client):
    run_cli("-m", *TINY_TRAIN, "task.augment=false,true")

    runs = all_runs(mlflow_client)
    [parent] = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.params["task.augment"] for c in children) == ["False", "True"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_name for c in children} == {"task.augment=False", "task.augment=True"}
    assert all(c.info.experiment_id == parent.info.experiment_id for c in children)


def test_a_sweep_with_one_failing_job_finishes_the_others_and_exits_nonzero(run_cli, mlflow_client):
    proc = run_cli("-m", *TINY_TRAIN, "dataset.image_size=32,48", expect_ok=False)

    assert proc.returncode == 1
    runs = all_runs(mlflow_client)
    [parent] = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    statuses = {r.data.params["dataset.image_size"]: r.info.status for r in runs if r is not parent}
    assert statuses == {"32": "FAILED", "48": "FINISHED"}
    assert parent.info.status == "FAILED"
    assert "1 job(s) did not finish" in parent.data.tags["convlab.failure_reason"]
    [failed] = [r.info.run_id for r in runs if r.info.status == "FAILED" and r is not parent]
    assert f"[convlab] 1 job(s) failed: {failed}\n" in proc.stderr  # the jobs, not jobs + parent


def test_mnist_convnet_trains_ten_way_and_a_logged_model_trains_on(run_cli, mlflow_client):
    run_cli("model=mnist_convnet", "dataset=mnist", "dataset.limit=64", "dataset.batch_size=16",
            "task.epochs=1", "task.steps_per_epoch=2", "task.augment=false", "task.learning_rate=1e-3")
    [first] = all_runs(mlflow_client)
    assert first.info.status == "FINISHED"
    assert first.data.params["dataset.name"] == "mnist"

    run_cli("model=from_run", f"model.run_id={first.info.run_id}", "dataset=mnist", "dataset.limit=64",
            "dataset.batch_size=16", "task.epochs=1", "task.steps_per_epoch=2", "task.augment=false")
    second = next(r for r in all_runs(mlflow_client) if r.info.run_id != first.info.run_id)
    assert second.info.status == "FINISHED"
    assert second.data.params["model.run_id"] == first.info.run_id


def test_the_exit_skips_only_the_teardown_after_threads_atexit_and_streams(tmp_path):
    """exit_without_teardown (the end of `convlab`): a worker thread still writing finishes, atexit functions
    run, buffered output is flushed, and the exit code is kept."""
    import subprocess
    import sys
    from pathlib import Path

    written = tmp_path / "written.txt"
    script = f"""
import atexit, sys, threading, time
from pathlib import Path
from runner.cli import exit_without_teardown
def late_write():
    time.sleep(0.5)
    Path({str(written)!r}).write_text("done")
threading.Thread(target=late_write).start()
atexit.register(lambda: print("atexit ran"))
print("buffered", end="")
sys.stderr.write("to stderr")
exit_without_teardown(3)
print("never")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "bufferedatexit ran\n" and proc.stderr == "to stderr"
    assert written.read_text() == "done"
