"""Reproduce and resume: pin a run's inputs, find earlier runs of the same job, compare a rerun with
the run it reproduces. `convlab-rerun <run_id> [overrides]` is the command-line entry point."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConvlabError
from runner.redact import redact

HASH_TAG = "convlab.config_hash"
DATA_HASH_TAG = "convlab.data_hash"
WEIGHTS_HASH_TAG = "convlab.weights_sha256"
RERUN_TAG = "convlab.rerun_of"
#: the part of a config that defines a job's result (not where it is tracked or cached)
RELEVANT_KEYS = ("model", "dataset", "task", "seed")
#: tags whose change between a run and its rerun is worth a warning
COMPARED_TAGS = ("convlab.git_commit", "convlab.git_dirty", "convlab.version", "convlab.tensorflow_version",
                 "convlab.keras_version", "convlab.python_version", DATA_HASH_TAG, WEIGHTS_HASH_TAG)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


# ------------------------------------------------------------------------------------- job identity


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved model, dataset, task and seed: equal for the same job, whatever the
    tracking URI, output or cache directory."""
    relevant = {key: _resolved(cfg, key) for key in RELEVANT_KEYS}
    relevant = _without_key(relevant, "cache_dir")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resolved(cfg: DictConfig, key: str) -> Any:
    value = cfg.get(key)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def _without_key(value: Any, dropped: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_key(v, dropped) for k, v in value.items() if k != dropped}
    return value


def input_hashes(model_spec, dataset) -> dict[str, str]:
    """Tags pinning a run's inputs: the dataset as loaded and the weights file, where known."""
    tags = {}
    if hasattr(dataset, "content_hash"):
        tags[DATA_HASH_TAG] = dataset.content_hash()
    weights = model_spec.weights_sha256()
    if weights:
        tags[WEIGHTS_HASH_TAG] = weights
    if getattr(model_spec, "uri", None):  # model=from_run: which run's model (model.run_id=latest resolved)
        tags["convlab.model_uri"] = model_spec.uri
    return tags


def runs_of_job(experiment_id: str, job_hash: str):
    return MlflowClient().search_runs([experiment_id], filter_string=f"tags.`{HASH_TAG}` = '{job_hash}'",
                                      order_by=["attributes.start_time DESC"])


def finished_run(experiment_id: str, job_hash: str):
    """The latest FINISHED run of this job, if any (``resume=true`` skips the job then)."""
    return next((run for run in runs_of_job(experiment_id, job_hash) if run.info.status == "FINISHED"), None)


def resumable_run(experiment_id: str, job_hash: str):
    """The latest ended, unfinished run of this job (FAILED, KILLED) that saved a checkpoint, if any
    (``resume=true`` continues it). A RUNNING run is left alone: its process is alive, or
    runner.liveness.mark_vanished would have ended it KILLED just before."""
    client = MlflowClient()
    for run in runs_of_job(experiment_id, job_hash):
        if run.info.status in ("FAILED", "KILLED") and client.list_artifacts(run.info.run_id, "checkpoints"):
            return run
    return None


# ------------------------------------------------------------------------------------------ reruns


def compare_with_original(original_id: str, current_tags: Mapping[str, str], strict: bool) -> list[str]:
    """Each difference between the original run's pinned code/environment/inputs and the current ones.

    Printed as warnings; with ``strict`` any difference is an error.
    """
    original = MlflowClient().get_run(original_id).data.tags
    differences = [f"{tag}: was {original[tag]}, now {current_tags.get(tag, '(none)')}"
                   for tag in COMPARED_TAGS if tag in original and original[tag] != current_tags.get(tag)]
    for difference in differences:
        print(f"[convlab] rerun of {original_id} differs: {difference}", file=sys.stderr)
    if strict and differences:
        raise ConvlabError(f"rerun of {original_id} is not exact: {'; '.join(differences)}",
                           fix="check out the original commit / versions, or drop strict=true")
    return differences


def rerun_overrides(run_id: str, extra: list[str]) -> list[str]:
    """Hydra overrides that recompose run ``run_id``'s config with the current configs: its config-group
    choices and overrides, pins for every value whose default has changed since, then ``extra``."""
    from runner.cli import CONFIG_DIR

    original = _original_run(run_id)
    recorded = _recorded_config(run_id)
    choices = [f"{group}={original.data.params[f'{group}.name']}"
               for group in ("model", "dataset", "task", "experiment") if f"{group}.name" in original.data.params]
    base = choices + [o for o in _recorded_overrides(run_id) if o.split("=")[0].lstrip("+~") not in
                      ("model", "dataset", "task", "experiment") and not _masked(o)]
    composed = _compose(CONFIG_DIR, base, run_id)
    pins = [f"{key}={hydra_value(value)}" for key, value in _changed_values(recorded, composed)]
    for pin in pins:
        print(f"[convlab] the current configs differ from run {run_id}'s; pinning {pin}", file=sys.stderr)
    overrides = base + pins + [f"rerun_of={run_id}"] + extra
    _compose(CONFIG_DIR, overrides, run_id)  # fail here, with the key, if they no longer compose
    return overrides


#: set on a sweep's parent run (runner.tracking): its overrides as a JSON list
SWEEP_ARGS_TAG = "convlab.sweep_args"


def sweep_rerun_args(run_id: str, extra: list[str]) -> list[str] | None:
    """``convlab`` arguments that run sweep ``run_id`` again (``-m`` + its overrides + ``extra``); None when
    ``run_id`` is not a sweep's parent run."""
    tags = _original_run(run_id).data.tags
    if tags.get("convlab.sweep") != "true":
        return None
    if SWEEP_ARGS_TAG not in tags:
        raise ConvlabError(f"sweep run {run_id} has no {SWEEP_ARGS_TAG} tag (made by an older convlab)",
                           fix=f"rerun it by hand: convlab -m {tags.get('convlab.sweep_overrides', '<overrides>')}")
    recorded = [o for o in json.loads(tags[SWEEP_ARGS_TAG])
                if o.split("=")[0].lstrip("+~") not in ("resume", "rerun_of") and not _masked(o)]
    return ["-m", *recorded, f"rerun_of={run_id}", *extra]


def _masked(override: str) -> bool:
    """An override recorded with its credentials masked cannot be reused (the current tracking.uri is)."""
    from runner.redact import MASK

    if MASK not in override:
        return False
    print(f"[convlab] rerun: not reusing the recorded override {override} (credentials masked)", file=sys.stderr)
    return True


def _original_run(run_id: str):
    if not RUN_ID.match(run_id):
        raise ConvlabError(f"{run_id!r} is not an MLflow run id (32 hex characters)",
                           fix="copy the run id from the MLflow UI or `mlflow runs list`")
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as error:
        raise ConvlabError(f"no run {run_id} in {redact(mlflow.get_tracking_uri())}",
                           fix="check the run id and MLFLOW_TRACKING_URI / tracking.uri") from error


def _recorded_config(run_id: str) -> dict:
    text = _artifact_text(run_id, "config/config.yaml")
    return OmegaConf.to_container(OmegaConf.create(text))


def _recorded_overrides(run_id: str) -> list[str]:
    return list(OmegaConf.create(_artifact_text(run_id, "config/overrides.yaml")) or [])


def _artifact_text(run_id: str, path: str) -> str:
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception as error:  # noqa: BLE001 - any failure means the run holds no convlab config
        raise ConvlabError(f"run {run_id} has no {path}: it was not made by convlab",
                           fix="rerun a run that `convlab` logged") from error


def _compose(config_dir: str, overrides: list[str], run_id: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        cause = error.__cause__ or error
        raise ConvlabError(f"run {run_id}'s config no longer composes with the current configs: "
                           f"{' '.join(str(cause).split())}",
                           fix="check out the commit the run was made with, or override that key") from error
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=False)


def _changed_values(recorded: dict, composed: dict, prefix: str = ""):
    """(key, recorded value) for the job-relevant leaves whose value differs in ``composed``."""
    for key, value in recorded.items():
        name = f"{prefix}{key}"
        if not prefix and key not in RELEVANT_KEYS + ("deterministic",):
            continue
        if key in ("cache_dir", "_partial_"):
            continue
        now = composed.get(key) if isinstance(composed, Mapping) else None
        if isinstance(value, Mapping) and isinstance(now, Mapping):
            yield from _changed_values(value, now, f"{name}.")
        elif _is_interpolation(now):
            continue  # e.g. seed: ${seed} -- follows the pinned top-level value
        elif value != now:
            yield name, value


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: list[str] | None = None) -> None:
    """``convlab-rerun <run_id> [overrides]``: run a logged job again as a new run tagged with its id (a sweep's
    parent run: the whole sweep again, with the same overrides)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: convlab-rerun <run_id> [key=value ...]   (strict=true: differences are errors)")
        sys.exit(0 if args else 2)
    run_id, extra = args[0], args[1:]
    uri = next((o.split("=", 1)[1] for o in extra if o.startswith("tracking.uri=")), None)
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        overrides = sweep_rerun_args(run_id, extra) or rerun_overrides(run_id, extra)
    except ConvlabError as error:
        print(f"[convlab] {redact(str(error))}", file=sys.stderr)
        sys.exit(2)
    from runner import cli

    sys.argv = ["convlab", *overrides]
    cli.main()
