"""Every option of every config group composes and instantiates; typos fail at compose time."""

from __future__ import annotations

import functools

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from runner.schema import SCHEMAS
from tests.conftest import compose_config, config_options

#: overrides an option needs to instantiate (its required keys)
REQUIRED = {
    ("dataset", "folder"): ["dataset.path={folder}"],
    ("model", "from_run"): ["model.run_id=0123456789abcdef0123456789abcdef"],
}


@pytest.mark.parametrize("group", ["model", "dataset", "task", "tracking"])
def test_every_yaml_option_has_a_schema_and_back(group):
    assert config_options(group) == sorted(SCHEMAS[group])


@pytest.mark.parametrize("group,option", [(g, o) for g in ("model", "dataset") for o in config_options(g)])
def test_model_and_dataset_options_compose_and_instantiate(group, option, tmp_path):
    folder = tmp_path / "data"
    for split in ("train", "validation", "test"):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True)
    _write_png(folder)
    overrides = [f"{group}={option}"] + [o.format(folder=folder) for o in REQUIRED.get((group, option), [])]
    cfg = compose_config(overrides)
    built = instantiate(cfg[group])
    assert type(built).__module__ == f"runner.{'models' if group == 'model' else 'data'}.{option}"


def _write_png(folder):
    import cv2
    import numpy as np

    for image_file in folder.glob("*/*"):
        cv2.imwrite(str(image_file / "x.png"), np.full((8, 8, 3), 100, np.uint8))


@pytest.mark.parametrize("option", config_options("task"))
def test_task_options_instantiate_to_their_module_entry_point(option):
    cfg = compose_config([f"task={option}"])
    task = instantiate(cfg.task)
    assert isinstance(task, functools.partial)
    assert task.func.__module__ == f"tasks.{option}"
    assert task.func.__name__ == "run"


def test_tracking_defaults_to_sqlite_in_cwd_and_task_named_experiment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config([])
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert cfg.tracking.experiment == "train"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compose_config([]).tracking.uri == "http://127.0.0.1:5000"


def test_hydra_settings_of_the_runner():
    cfg = compose_config([])
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir.startswith("outputs/")
    assert OmegaConf.select(cfg, "hydra.callbacks.mlflow_sweep._target_") == "runner.tracking.SweepParentRun"


@pytest.mark.parametrize("override", ["task.epoch=3", "model.droput=0.2", "tracking.experimnt=x"])
def test_unknown_key_fails_at_compose_with_hydras_message(override):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    assert isinstance(error.value.__cause__, ConfigAttributeError)
    key = override.lstrip("+").split("=")[0].split(".")[1]
    assert f"Key '{key}' not in" in str(error.value.__cause__)


def test_wrong_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["dataset.image_size=big"])
    assert isinstance(error.value.__cause__, ValidationError)
    assert "dataset.image_size" in str(error.value.__cause__)


def test_config_validation_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from tests.conftest import compose_config; from runner.validation import check_config; "
            "check_config(compose_config(['task.epochs=3'])); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
