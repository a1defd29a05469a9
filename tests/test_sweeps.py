"""Sweeps that search: the objective a job returns to Hydra's sweeper (optimized_metric)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.cli import CONFIG_DIR
from runner.liveness import PID_TAG
from runner.reproduce import SWEEP_ARGS_TAG, sweep_rerun_args
from runner.sweeps import (IMPORTANCES_PLOT, IMPORTANCES_TABLE, NO_IMPORTANCES_TAG, Sweep, UnknownObjective, best_run,
                           children, log_param_importances, objective, summary_rows, tell_story)
from runner.tracking import PARENT_ENV, SweepParentRun
from tests.conftest import REPO, all_runs, compose_config
from tests.infra import unavailable
from tests.quadratic_task import OPTIMUM_Y, score

#: a task with a known optimum (tests/quadratic_task.py), cheap enough for a sweep of several trials
QUADRATIC = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "task=quadratic", "dataset.limit=8"]


def _require_optuna() -> None:
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ModuleNotFoundError:
        unavailable("hydra-optuna-sweeper is not installed: pip install -e '.[search]'")


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


# ------------------------------------------------------------------------- the parent run's story


#: the Optuna sweeper's search space of tests/conf/hparams_search/quadratic_optuna.yaml, with y searched too
SEARCH_SPACE = ["task.x=interval(0.0, 1.0)", "task.y=interval(0.0, 1.0)", "dataset.limit=8"]


def _sweep_with_children(values: list[float | None], optuna: bool = True, ys: list[float] | None = None) -> Sweep:
    """A parent run and one child per value of ``task.x`` (None: a FAILED child) and of ``task.y`` (``ys``, else
    its optimum), each with ``score`` and the same picture ``plots/score.png``, logged as convlab's jobs log them."""
    import numpy as np

    client = MlflowClient()
    experiment = mlflow.set_experiment("story")
    parent = client.create_run(experiment.experiment_id, tags={"convlab.sweep": "true"})
    for x, y in zip(values, ys or [OPTIMUM_Y] * len(values)):
        with mlflow.start_run(experiment_id=experiment.experiment_id, parent_run_id=parent.info.run_id,
                              nested=True):
            mlflow.log_params({"task.x": 0.9 if x is None else x, "task.y": y, "model.name": "small_convnet"})
            if x is None:
                mlflow.end_run("FAILED")
                continue
            mlflow.log_metrics({"score": score(x, y), "test_accuracy": 0.5})
            mlflow.log_image(np.full((8, 8, 3), int(255 * score(x, y)), np.uint8), "plots/score.png")
    return Sweep(parent.info.run_id, ["task.x", "task.y"] if ys else ["task.x"], "score", "maximize", optuna,
                 search_space=SEARCH_SPACE if optuna else [])


def _artifacts(run_id: str, folder: str | None = None, client: MlflowClient | None = None) -> set[str]:
    client = client or MlflowClient()
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= _artifacts(run_id, item.path, client) if item.is_dir else {item.path}
    return found


@pytest.mark.search
def test_the_parent_tells_the_story_of_its_children(tracking):
    _require_optuna()
    values = [0.9, 0.5, None, 0.3, 0.0]  # the best: x=0.3, the optimum
    sweep = _sweep_with_children(values)
    tell_story(sweep)

    parent = MlflowClient().get_run(sweep.parent_id)
    best = [run for run in children(sweep.parent_id) if run.data.params["task.x"] == "0.3"][0]
    assert parent.data.tags["convlab.best_run_id"] == best.info.run_id
    assert float(parent.data.tags["convlab.best_value"]) == score(0.3) == parent.data.metrics["score"]
    assert parent.data.metrics["test_accuracy"] == 0.5
    assert {"sweep/children.json", "sweep/summary.csv", "sweep/objective_vs_task.x.png",
            "sweep/optimization_history.png", "sweep/side_by_side/plots_score.png"} <= _artifacts(sweep.parent_id)
    summary = mlflow.artifacts.load_text(f"runs:/{sweep.parent_id}/sweep/summary.csv").splitlines()
    assert summary[0] == "trial,run_id,status,task.x,objective,score,test_accuracy"
    assert [line.split(",")[2:4] for line in summary[1:]] == [
        ["FINISHED", "0.9"], ["FINISHED", "0.5"], ["FAILED", "0.9"], ["FINISHED", "0.3"], ["FINISHED", "0.0"]]
    table = mlflow.load_table("sweep/children.json", run_ids=[sweep.parent_id])
    assert list(table["status"]).count("FAILED") == 1 and len(table) == len(values)


@pytest.mark.search
def test_the_parameter_that_moves_the_objective_gets_the_larger_importance(tracking):
    _require_optuna()
    grid = [(x, y) for x in (0.0, 0.5, 1.0) for y in (0.0, 0.5, 1.0)]  # x moves the score by 0.45, y by 0.025
    sweep = _sweep_with_children([x for x, _ in grid], ys=[y for _, y in grid])
    log_param_importances(sweep, children(sweep.parent_id))

    table = mlflow.load_table(IMPORTANCES_TABLE, run_ids=[sweep.parent_id])
    importances = dict(zip(table["param"], table["importance"]))
    assert set(importances) == {"task.x", "task.y"} and math.isclose(sum(importances.values()), 1.0)
    assert importances["task.x"] > importances["task.y"]
    assert IMPORTANCES_PLOT in _artifacts(sweep.parent_id)
    assert NO_IMPORTANCES_TAG not in MlflowClient().get_run(sweep.parent_id).data.tags


@pytest.mark.search
def test_without_importances_the_parent_says_why_and_still_shows_the_rest(tracking, monkeypatch):
    _require_optuna()
    one_finished = _sweep_with_children([0.5, None])
    nothing_varies = _sweep_with_children([0.3, 0.3])
    same_score = _sweep_with_children([0.3, 0.3], ys=[0.0, 1.0])  # y varies, the score does not
    no_sklearn = _sweep_with_children([0.1, 0.9])
    for sweep in (one_finished, nothing_varies, same_score):
        log_param_importances(sweep, children(sweep.parent_id))
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as on a machine without scikit-learn
    tell_story(no_sklearn)

    def why_not(sweep):
        return MlflowClient().get_run(sweep.parent_id).data.tags[NO_IMPORTANCES_TAG]

    assert why_not(one_finished) == "1 finished trial(s) in the search space; importances need 2"
    assert why_not(nothing_varies) == "no searched parameter took two values in the finished trials"
    assert why_not(same_score).startswith(f"score is {score(0.3, 0.0)} in every finished trial")
    assert why_not(no_sklearn).startswith("scikit-learn is not installed")
    assert not any(IMPORTANCES_PLOT in _artifacts(sweep.parent_id)
                   for sweep in (one_finished, nothing_varies, same_score, no_sklearn))
    assert {"sweep/optimization_history.png", "sweep/objective_vs_task.x.png"} <= _artifacts(no_sklearn.parent_id)


def test_a_minimized_objective_picks_the_smallest_and_failed_children_never_win(tracking):
    sweep = _sweep_with_children([0.0, None, 0.5], optuna=False)
    sweep.direction = "minimize"
    runs = children(sweep.parent_id)
    assert best_run(sweep, runs).data.params["task.x"] == "0.0"  # score 0.91 < 0.96; the FAILED one has none
    assert [row["objective"] for row in summary_rows(sweep, runs)][1] is None


def test_a_sweep_without_an_objective_still_gets_its_table_but_no_best_run(tracking):
    sweep = _sweep_with_children([0.1, 0.2], optuna=False)
    sweep.objective = None
    tell_story(sweep)
    parent = MlflowClient().get_run(sweep.parent_id)
    assert "convlab.best_run_id" not in parent.data.tags
    assert "sweep/summary.csv" in _artifacts(sweep.parent_id)
    assert not any(path.startswith("sweep/objective_vs") for path in _artifacts(sweep.parent_id))


# ---------------------------------------------------------------------------- Optuna end to end

#: tests/conf/hparams_search/quadratic_optuna.yaml: 4 seeded TPE trials of x in [0, 1]; x > 0.7 fails
OPTUNA = [*QUADRATIC, "hparams_search=quadratic_optuna", "task.fail_above=0.7"]


def _sweep_runs(client):
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    return parents, [r for r in runs if r.data.tags.get("convlab.sweep") != "true"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.search
def test_an_optuna_sweep_beats_its_first_trial_survives_a_failed_one_and_resumes_its_study(run_cli, mlflow_client):
    _require_optuna()
    proc = run_cli("-m", *OPTUNA, expect_ok=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one trial failed: reported, the study went on

    [parent], jobs = _sweep_runs(mlflow_client)
    assert len(jobs) == 4 and all(j.data.tags["mlflow.parentRunId"] == parent.info.run_id for j in jobs)
    jobs.sort(key=lambda run: run.info.start_time)
    statuses = [j.info.status for j in jobs]
    assert statuses.count("FAILED") >= 1 and statuses.count("FINISHED") >= 2, statuses
    assert all(float(j.data.params["task.x"]) > 0.7 for j in jobs if j.info.status == "FAILED")
    first = next(j for j in jobs if j.info.status == "FINISHED")
    best = float(parent.data.tags["convlab.best_value"])
    assert best > first.data.metrics["score"]  # TPE improved on the first trial
    assert best == max(j.data.metrics.get("score", -1) for j in jobs)
    assert mlflow_client.get_run(parent.data.tags["convlab.best_run_id"]).data.metrics["score"] == best
    assert {"sweep/summary.csv", "sweep/children.json", "sweep/objective_vs_task.x.png", IMPORTANCES_PLOT,
            "sweep/optimization_history.png", "sweep/side_by_side/plots_score.png"} <= _artifacts(parent.info.run_id,
                                                                                                client=mlflow_client)
    study = parent.data.tags["convlab.study"]

    proc = run_cli("-m", *OPTUNA, "resume=true", "hydra.sweeper.n_trials=6", expect_ok=False)
    assert f"resume: study {study} has 4 trial(s) in run {parent.info.run_id}; 2 more" in proc.stderr
    [again], jobs = _sweep_runs(mlflow_client)
    assert again.info.run_id == parent.info.run_id and len(jobs) == 6  # the same study, 2 more trials
    summary = Path(mlflow_client.download_artifacts(parent.info.run_id, "sweep/summary.csv")).read_text()
    assert len(summary.splitlines()) == 1 + 6
    assert float(again.data.tags["convlab.best_value"]) >= best


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.search
@pytest.mark.cluster
def test_parallel_optuna_trials_through_joblib_nest_under_one_parent(run_cli, mlflow_client):
    _require_optuna()
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
    except ModuleNotFoundError:
        unavailable("hydra-joblib-launcher is not installed: pip install -e '.[cluster]'")
    run_cli("-m", *QUADRATIC, "hparams_search=quadratic_optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2")

    [parent], jobs = _sweep_runs(mlflow_client)
    assert len(jobs) == 2 and {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}
    assert len({j.data.tags[PID_TAG] for j in jobs}) == 2  # two processes at once: one batch of two trials
    assert parent.info.status == "FINISHED" and parent.data.tags["convlab.best_run_id"] in {j.info.run_id for j in jobs}


def test_a_sweep_whose_parent_run_cannot_be_created_stops_before_its_first_job(tracking, monkeypatch, capsys):
    def refuse(*args, **kwargs):  # what PostgreSQL said to a parent run name over 250 characters
        raise MlflowException("(psycopg.errors.StringDataRightTruncation) value too long for type character "
                              "varying(250)")

    monkeypatch.setattr(MlflowClient, "create_run", refuse)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    uri = mlflow.get_tracking_uri()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):  # the sweep's jobs are composed in it
        config = compose("config", overrides=[f"tracking.uri={uri}", "tracking.experiment=refused"],
                         return_hydra_config=True)
        with pytest.raises(SystemExit) as exited:
            SweepParentRun().on_multirun_start(config=config)

    assert exited.value.code == 1  # Hydra starts no job: a SystemExit is not turned into a warning
    stderr = capsys.readouterr().err
    assert f"[convlab] the sweep's parent run cannot be created in {uri}: MlflowException: " in stderr
    assert "value too long for type character varying(250)" in stderr and "fix: no job was started" in stderr
    assert PARENT_ENV not in os.environ
    refused = MlflowClient().get_experiment_by_name("refused")
    assert refused is None or not MlflowClient().search_runs([refused.experiment_id])


def test_convlab_rerun_of_a_sweep_parent_runs_the_sweep_again_with_its_overrides(tracking):
    experiment = mlflow.set_experiment("rerun-sweep")
    recorded = ["hparams_search=scratch_optuna", "quick=true", "resume=true", "task.x=interval(0, 1)"]
    parent = MlflowClient().create_run(experiment.experiment_id, tags={
        "convlab.sweep": "true", SWEEP_ARGS_TAG: json.dumps(recorded)})
    job = MlflowClient().create_run(experiment.experiment_id)

    args = sweep_rerun_args(parent.info.run_id, ["hydra.sweeper.n_trials=5"])
    assert args == ["-m", "hparams_search=scratch_optuna", "quick=true", "task.x=interval(0, 1)",
                    f"rerun_of={parent.info.run_id}", "hydra.sweeper.n_trials=5"]  # resume left out: a new sweep
    assert sweep_rerun_args(job.info.run_id, []) is None  # a job's run: rerun as one job


@pytest.mark.parametrize("preset", ["scratch_optuna", "finetune_optuna"])
def test_the_search_presets_compose_a_seeded_tpe_study_with_a_quick_size(preset):
    _require_optuna()
    quick = compose_config([f"hparams_search={preset}", "quick=true"])
    full = compose_config([f"hparams_search={preset}"])
    sweeper = quick.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == quick.seed and sweeper.direction == "maximize"
    assert quick.optimized_metric == "best_val_accuracy" and len(sweeper.params) >= 2
    assert 3 <= sweeper.n_trials <= 4 < full.hydra.sweeper.n_trials
    assert quick.dataset.limit <= 16 and full.dataset.limit is None  # the quick size shrinks the job too


def test_the_filters_search_preset_climbs_lucids_recipe_and_maximizes_a_metric_the_filters_task_logs():
    _require_optuna()
    quick = compose_config(["hparams_search=filters_optuna", "quick=true"])
    full = compose_config(["hparams_search=filters_optuna"])
    sweeper = quick.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == quick.seed
    assert quick.task.step._target_.endswith("Adam") and quick.task.param._target_.endswith("Fourier")
    (layer,) = quick.task.layers
    assert quick.optimized_metric == f"robust_activation/{layer}" and quick.task.quality_metrics
    assert set(sweeper.params) == {"task.step.learning_rate", "task.transforms.jitter", "task.transforms.rotate",
                                   "task.regularizers.total_variation_weight"}
    assert 3 <= sweeper.n_trials <= 4 < full.hydra.sweeper.n_trials and quick.task.steps < full.task.steps


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.search
@pytest.mark.parametrize("preset", ["scratch_optuna", "filters_optuna", "finetune_optuna"])
def test_a_search_presets_quick_size_runs_its_trials_and_names_the_best(run_cli, mlflow_client, preset):
    _require_optuna()
    run_cli("-m", f"hparams_search={preset}", "quick=true")

    [parent], jobs = _sweep_runs(mlflow_client)
    assert parent.info.status == "FINISHED" and len(jobs) == 3 and all(j.info.status == "FINISHED" for j in jobs)
    quick = compose_config([f"hparams_search={preset}", "quick=true"])
    metric = quick.optimized_metric
    assert any(len({j.data.params[key] for j in jobs}) == 3 for key in quick.hydra.sweeper.params)  # searched
    best = mlflow_client.get_run(parent.data.tags["convlab.best_run_id"])
    assert float(parent.data.tags["convlab.best_value"]) == best.data.metrics[metric] == max(
        j.data.metrics[metric] for j in jobs)
