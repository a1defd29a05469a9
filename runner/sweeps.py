"""Sweeps that search and summarize: the objective a job returns to Hydra's sweeper (``optimized_metric``),
and the story a sweep's parent run tells when it ends."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from unittest import mock

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.errors import ConvlabError


class UnknownObjective(ConvlabError):
    """``optimized_metric`` names no metric of the task: every job of the sweep would fail the same way."""


def objective(metrics: Mapping[str, float] | None, name: str | None) -> float | None:
    """The value a job returns to the sweeper: ``metrics[name]`` (None when no ``optimized_metric`` is set)."""
    if name is None:
        return None
    metrics = metrics or {}
    if name not in metrics:
        available = ", ".join(sorted(metrics)) or "(none: this task logs no metrics)"
        raise UnknownObjective(f"optimized_metric={name} is not a metric of this task; its metrics: {available}",
                               fix="set optimized_metric to one of those names")
    value = float(metrics[name])
    return value if math.isfinite(value) else None  # NaN / inf: the sweeper marks the trial failed


# -------------------------------------------------------------------------------------- the story


#: metrics shown for every child (when logged), after the objective
KEY_METRICS = ("best_val_accuracy", "val_accuracy", "test_accuracy", "val_loss", "test_loss")
MAX_KEY_METRICS = 8
#: artifact folders that hold no pictures worth comparing
NOT_PICTURES = ("model", "checkpoints", "config", "error", "sweep")
MAX_SIDE_BY_SIDE = 6  # figures
MAX_PICTURES = 12  # children per figure
REUSED_TAG_PREFIX = "convlab.reused."
SUMMARY_CSV = "sweep/summary.csv"


@dataclass
class Sweep:
    """What a sweep's parent run needs to tell its story: which keys it varied, what it optimized, and how."""

    parent_id: str | None
    swept_keys: list[str]
    objective: str | None = None
    direction: str = "maximize"
    optuna: bool = False
    study: str | None = None  # Optuna: the study's name, from the sweep's config hash
    search_space: list[str] = field(default_factory=list)  # Optuna: its params and fixed overrides, as overrides


def sweep_of(config: DictConfig, swept_keys: list[str]) -> Sweep:
    """The :class:`Sweep` of a multirun config: the command line's swept keys and the sweeper's search space."""
    sweeper = config.hydra.sweeper
    params = list((sweeper.get("params") or {}).keys())
    direction = sweeper.get("direction") or "maximize"
    if not isinstance(direction, str):  # a list: multi-objective; the first one orders the children here
        direction = str(direction[0])
    optuna = "optuna" in str(sweeper.get("_target_", ""))
    sweep = Sweep(None, list(dict.fromkeys([*params, *swept_keys])), config.get("optimized_metric"),
                  str(direction).rsplit(".", 1)[-1].lower(), optuna)
    if optuna:
        sweep.search_space = _search_space(config)
        sweep.study = study_name(config, sweep)
    return sweep


# -------------------------------------------------------------------------------- Optuna's studies

STUDY_TAG = "convlab.study"
#: overrides that do not change what a study searches
NOT_THE_STUDY = ("resume", "hydra.sweeper.n_trials", "hydra.sweeper.n_jobs", "hydra/launcher", "hydra.launcher",
                 "tracking")


def study_name(config: DictConfig, sweep: Sweep) -> str:
    """``convlab-<hash>``: the same for the same sweep (its job config hash, search space, sampler, objective),
    whatever the number of trials, the launcher or ``resume``."""
    from runner.reproduce import config_hash

    sweeper = config.hydra.sweeper
    sampler = OmegaConf.to_container(sweeper.sampler, resolve=True) if sweeper.get("sampler") else None
    identity = {"job": config_hash(config), "params": sweep.search_space, "sampler": sampler,
                "objective": sweep.objective, "direction": sweep.direction}
    return "convlab-" + hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _search_space(config: DictConfig) -> list[str]:
    """The sweeper's params and the command line's overrides, as the Optuna sweeper reads them."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    given = [o for o in config.hydra.overrides.task if not o.lstrip("+~").split("=")[0].startswith(NOT_THE_STUDY)]
    return params + sorted(given)


def parent_of_study(experiment_id: str, study: str):
    """The latest sweep parent run of ``study`` (``resume=true`` continues it), if any."""
    found = MlflowClient().search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{study}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def continue_study(config: DictConfig, sweep: Sweep) -> None:
    """Point the Optuna sweeper at the study rebuilt from the parent run's children (none for a new sweep),
    and count its trials so far towards ``hydra.sweeper.n_trials`` (called before Hydra builds the sweeper)."""
    sweeper = config.hydra.sweeper
    done = len(children(sweep.parent_id))
    with read_write(sweeper), open_dict(sweeper):
        sweeper.study_name = sweep.study
        sweeper.n_trials = max(0, int(sweeper.n_trials) - done)
        sweeper.storage = {"_target_": f"{__name__}.study_storage", "parent_run_id": sweep.parent_id,
                           "study": sweep.study, "objective": sweep.objective, "direction": sweep.direction,
                           "search_space": sweep.search_space}
    if done:
        print(f"[convlab] resume: study {sweep.study} has {done} trial(s) in run {sweep.parent_id}; "
              f"{sweeper.n_trials} more to reach hydra.sweeper.n_trials", file=sys.stderr)


def study_storage(parent_run_id: str, study: str, objective: str | None, direction: str, search_space: list[str]):
    """An in-memory Optuna storage holding ``study`` with the parent run's children as its trials.

    Optuna 2.10's RDB storage fails on SQLAlchemy 2 (MLflow's); MLflow's runs are the durable record instead."""
    import optuna

    distributions = _distributions(search_space)
    storage = optuna.storages.InMemoryStorage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "add_trial / create_trial is experimental"
        created = optuna.create_study(storage=storage, study_name=study, direction=direction)
        for run in children(parent_run_id):
            trial = _trial(run, distributions, objective)
            if trial is not None:
                created.add_trial(trial)
    return storage


def _distributions(search_space: list[str]) -> dict:
    """Optuna's distributions of the searched keys, read from the overrides as the Optuna sweeper reads them."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    distributions, _ = create_params_from_overrides(search_space)
    return distributions


def _trial(run, distributions: dict, objective: str | None):
    """The Optuna trial an earlier child run was (None if its values are not in the search space)."""
    import optuna

    params = {}
    for name, distribution in distributions.items():
        value = _param_value(run.data.params.get(name), distribution)
        if value is None:
            return None
        params[name] = value
    value = run.data.metrics.get(objective) if objective else None
    finished = run.info.status == "FINISHED" and _finite(value)
    try:
        return optuna.trial.create_trial(
            params=params, distributions=distributions, value=value if finished else None,
            state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL)
    except ValueError:  # a value outside the distribution: the search space changed
        return None


def _param_value(raw: str | None, distribution):
    from optuna.distributions import CategoricalDistribution, IntLogUniformDistribution, IntUniformDistribution

    if raw is None:
        return None
    if isinstance(distribution, CategoricalDistribution):
        return next((choice for choice in distribution.choices if str(choice) == raw), None)
    if isinstance(distribution, (IntUniformDistribution, IntLogUniformDistribution)):
        return int(float(raw))
    return float(raw)


def children(parent_id: str) -> list:
    """The sweep's runs in start order: its nested children and the runs it reused (``resume=true``)."""
    client = MlflowClient()
    parent = client.get_run(parent_id)
    nested = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                max_results=5000)
    reused = [client.get_run(tag.removeprefix(REUSED_TAG_PREFIX)) for tag in parent.data.tags
              if tag.startswith(REUSED_TAG_PREFIX)]
    found = {run.info.run_id: run for run in [*nested, *reused]}
    return sorted(found.values(), key=lambda run: run.info.start_time)


def summary_rows(sweep: Sweep, runs: list) -> list[dict]:
    """One row per child: run id, status, swept values, objective, key metrics."""
    shown = key_metrics(sweep, runs)
    rows = []
    for number, run in enumerate(runs):
        row = {"trial": number, "run_id": run.info.run_id, "status": run.info.status}
        row.update({key: run.data.params.get(key) for key in sweep.swept_keys})
        if sweep.objective:
            row["objective"] = run.data.metrics.get(sweep.objective)
        row.update({name: run.data.metrics.get(name) for name in shown})
        rows.append(row)
    return rows


def key_metrics(sweep: Sweep, runs: list) -> list[str]:
    logged = set().union(*(run.data.metrics for run in runs)) if runs else set()
    first = [name for name in (sweep.objective, *KEY_METRICS) if name and name in logged]
    common = sorted(set.intersection(*(set(run.data.metrics) for run in runs)) - set(first)) if runs else []
    return (first + common)[:MAX_KEY_METRICS]


def best_run(sweep: Sweep, runs: list):
    """The finished child with the best objective (None without an objective or a finished child)."""
    scored = [run for run in runs if run.info.status == "FINISHED" and _finite(run.data.metrics.get(sweep.objective))]
    if not sweep.objective or not scored:
        return None
    pick = max if sweep.direction == "maximize" else min
    return pick(scored, key=lambda run: run.data.metrics[sweep.objective])


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def tell_story(sweep: Sweep) -> None:
    """At the end of a sweep: its children as a table (+ ``sweep/summary.csv``), the objective against each
    swept value, Optuna's optimization history and parameter importances, the best child as tags and metrics,
    and the pictures that the children logged under the same names side by side."""
    import pandas as pd

    runs = children(sweep.parent_id)
    if not runs:
        return
    client = MlflowClient()
    rows = summary_rows(sweep, runs)
    table = pd.DataFrame(rows)
    mlflow.log_table(table, "sweep/children.json", run_id=sweep.parent_id)
    client.log_text(sweep.parent_id, table.to_csv(index=False), SUMMARY_CSV)
    if sweep.objective:
        for key in sweep.swept_keys:
            client.log_figure(sweep.parent_id, objective_scatter(rows, key, sweep.objective),
                              f"sweep/objective_vs_{_file_name(key)}.png")
        if sweep.optuna:
            client.log_figure(sweep.parent_id, optimization_history(rows, sweep), "sweep/optimization_history.png")
            log_param_importances(sweep, runs)
    best = best_run(sweep, runs)
    if best is not None:
        client.set_tag(sweep.parent_id, "convlab.best_run_id", best.info.run_id)
        client.set_tag(sweep.parent_id, "convlab.best_value", str(best.data.metrics[sweep.objective]))
        for name in key_metrics(sweep, [best]):
            client.log_metric(sweep.parent_id, name, best.data.metrics[name])
    for path, figure in side_by_side(sweep, runs):
        client.log_figure(sweep.parent_id, figure, f"sweep/side_by_side/{_file_name(path)}")


def _file_name(key: str) -> str:
    return key.replace("/", "_")


def objective_scatter(rows: list[dict], key: str, objective_name: str):
    """The objective of each child against its value of ``key`` (numbers on a numeric axis, else as categories)."""
    import matplotlib.pyplot as plt

    points = [(row[key], row["objective"]) for row in rows if row.get(key) is not None and _finite(row["objective"])]
    figure, axes = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
    numeric = all(_is_number(value) for value, _ in points)
    xs = [float(value) if numeric else str(value) for value, _ in points]
    axes.scatter(xs, [objective for _, objective in points])
    if numeric and points and min(xs) > 0 and max(xs) / min(xs) > 50:
        axes.set_xscale("log")
    axes.set(xlabel=key, ylabel=objective_name, title=f"{objective_name} vs {key}")
    axes.grid(alpha=0.3)
    plt.close(figure)
    return figure


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return str(value).lower() not in ("true", "false", "nan")


def optimization_history(rows: list[dict], sweep: Sweep):
    """Optuna's own optimization-history plot (objective per trial, best so far) of the children."""
    import optuna
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "add_trial / plot_optimization_history is experimental"
        study = optuna.create_study(direction=sweep.direction)
        for row in rows:
            finished = row["status"] == "FINISHED" and _finite(row["objective"])
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL,
                value=row["objective"] if finished else None))
        axes = plot_optimization_history(study)
    axes.set_ylabel(sweep.objective)
    figure = axes.get_figure()
    figure.set_layout_engine("constrained")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return figure


#: why a parent run has no parameter importances (too few finished trials, no scikit-learn, ...)
NO_IMPORTANCES_TAG = "convlab.no_param_importances"
IMPORTANCES_TABLE = "sweep/param_importances.json"
IMPORTANCES_PLOT = "sweep/param_importances.png"
#: the evaluator's random forest is seeded: the same children give the same importances
IMPORTANCE_SEED = 0


def log_param_importances(sweep: Sweep, runs: list) -> None:
    """Optuna's parameter importances of the finished children: a table (param, importance) and a bar
    chart; where there can be none, the tag :data:`NO_IMPORTANCES_TAG` and one line saying why."""
    import pandas as pd

    client = MlflowClient()
    study, why_not = importance_study(sweep, runs)
    if study is None:
        client.set_tag(sweep.parent_id, NO_IMPORTANCES_TAG, why_not)
        print(f"[convlab] sweep parent run {sweep.parent_id}: no parameter importances ({why_not})", file=sys.stderr)
        return
    importances = param_importances(study)
    mlflow.log_table(pd.DataFrame({"param": list(importances), "importance": list(importances.values())}),
                     IMPORTANCES_TABLE, run_id=sweep.parent_id)
    client.log_figure(sweep.parent_id, importance_bars(importances, sweep.objective), IMPORTANCES_PLOT)
    if NO_IMPORTANCES_TAG in client.get_run(sweep.parent_id).data.tags:  # said when the sweep ended before a resume
        client.delete_tag(sweep.parent_id, NO_IMPORTANCES_TAG)


def importance_study(sweep: Sweep, runs: list):
    """(an Optuna study of the finished children in the search space, None) or (None, why there is none):
    importances need scikit-learn, two finished trials, a searched value that varies and an objective that does."""
    import optuna

    try:
        import sklearn  # noqa: F401 - Optuna's importance evaluators fit scikit-learn's random forests
    except ImportError:
        return None, "scikit-learn is not installed (Optuna's importance evaluators need it): pip install scikit-learn"
    distributions = _distributions(sweep.search_space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "create_trial is experimental"
        trials = [trial for run in runs if (trial := _trial(run, distributions, sweep.objective)) is not None
                  and trial.state == optuna.trial.TrialState.COMPLETE]
    if len(trials) < 2:
        return None, f"{len(trials)} finished trial(s) in the search space; importances need 2"
    if all(len({trial.params[name] for trial in trials}) < 2 for name in distributions):
        return None, "no searched parameter took two values in the finished trials"
    if len({trial.value for trial in trials}) < 2:
        return None, f"{sweep.objective} is {trials[0].value} in every finished trial: nothing to attribute"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "add_trials is experimental"
        study = optuna.create_study(direction=sweep.direction)
        study.add_trials(trials)
    return study, None


def param_importances(study) -> dict[str, float]:
    """Optuna's importances of the study's parameters (``optuna.importance.get_param_importances``; they sum
    to 1, largest first).

    With Optuna's mean-decrease-in-impurity evaluator, not its default fANOVA: Optuna 2.10's fANOVA reads
    scikit-learn's tree node values as scalars, which NumPy 2 refuses ("setting an array element with a
    sequence"), and the sweeper plugin pins optuna<3."""
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances

    return dict(get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=IMPORTANCE_SEED)))


def importance_bars(importances: dict[str, float], objective_name: str):
    """The importances as horizontal bars, the largest on top, each labelled with its value: Optuna's own
    ``plot_param_importances`` in 2.10 calls ``matplotlib.cm.get_cmap``, which Matplotlib 3.9 removed."""
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(5, 1.2 + 0.4 * len(names)), layout="constrained")
    bars = axes.barh(names, [importances[name] for name in names], color="tab:blue")
    axes.bar_label(bars, fmt="%.2f", padding=2)
    axes.set(xlabel=f"importance for {objective_name}", xlim=(0, 1.1), title="parameter importances")
    axes.grid(axis="x", alpha=0.3)
    plt.close(figure)
    return figure


def side_by_side(sweep: Sweep, runs: list):
    """(artifact path, figure) for each picture that every finished child logged under the same name: the
    children's pictures in a row, each titled by its swept values."""
    import matplotlib.image
    import matplotlib.pyplot as plt

    finished = [run for run in runs if run.info.status == "FINISHED"][:MAX_PICTURES]
    if len(finished) < 2:
        return
    common = set.intersection(*(set(_pictures(run.info.run_id)) for run in finished))
    for path in sorted(common)[:MAX_SIDE_BY_SIDE]:
        figure, axes = plt.subplots(1, len(finished), figsize=(2.6 * len(finished), 3), squeeze=False,
                                    layout="constrained")
        for ax, run in zip(axes[0], finished):
            with mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):  # one bar each
                local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=path)
            ax.imshow(matplotlib.image.imread(local))
            ax.set_title("\n".join(f"{key.rsplit('.', 1)[-1]}={_short(run.data.params.get(key))}"
                                   for key in sweep.swept_keys), fontsize=8)
            ax.axis("off")
        figure.suptitle(path, fontsize=9)
        plt.close(figure)
        yield path, figure


def _short(value: str | None) -> str:
    if value is None:
        return "-"
    return f"{float(value):.3g}" if _is_number(value) else value


def _pictures(run_id: str, folder: str | None = None) -> list[str]:
    client = MlflowClient()
    found = []
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            if folder is not None or item.path not in NOT_PICTURES:
                found += _pictures(run_id, item.path)
        elif item.path.endswith(".png"):
            found.append(item.path)
    return found
