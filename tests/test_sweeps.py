"""Sweeps that search: the objective a job returns to Hydra's sweeper (optimized_metric)."""

from __future__ import annotations

import math

import pytest

from runner.sweeps import UnknownObjective, objective
from tests.conftest import REPO, all_runs

#: a task with a known optimum (tests/quadratic_task.py), cheap enough for a sweep of several trials
QUADRATIC = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "task=quadratic", "dataset.limit=8"]


def test_the_objective_is_the_named_metric_and_none_without_a_name():
    metrics = {"val_accuracy": 0.75, "test_accuracy": 0.5}
    assert objective(metrics, "val_accuracy") == 0.75
    assert objective(metrics, None) is None
    assert objective(None, None) is None


def test_a_non_finite_objective_is_returned_as_nothing_so_the_trial_fails():
    assert objective({"loss": math.nan}, "loss") is None
    assert objective({"loss": math.inf}, "loss") is None


def test_an_unknown_objective_names_the_metrics_there_are():
    with pytest.raises(UnknownObjective) as raised:
        objective({"val_accuracy": 0.75, "test_accuracy": 0.5}, "val_acc")
    message = str(raised.value)
    assert "optimized_metric=val_acc" in message and "test_accuracy, val_accuracy" in message
    assert "fix:" in message
    with pytest.raises(UnknownObjective, match="none: this task logs no metrics"):
        objective({}, "val_accuracy")


@pytest.mark.e2e
@pytest.mark.slow  # ~30 s here: one job's TensorFlow start
def test_an_unknown_objective_fails_the_first_job_of_a_sweep_and_stops_it(run_cli, mlflow_client):
    proc = run_cli("-m", *QUADRATIC, "task.x=0.1,0.2", "optimized_metric=scor", expect_ok=False)

    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "optimized_metric=scor is not a metric of this task; its metrics: data.skipped_files, distance, score" in proc.stderr
    runs = all_runs(mlflow_client)
    [job] = [r for r in runs if r.data.tags.get("convlab.sweep") != "true"]  # the second job never started
    assert job.info.status == "FAILED"
    assert job.data.tags["convlab.failure_reason"].startswith("optimized_metric=scor is not a metric")
