"""Every experiment preset composes, full-size and quick; every preset's quick mode runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, compose_config, config_options

PRESETS = config_options("experiment")
#: the book's order: activations visualizes the model that scratch_augmented trained
RUN_ORDER = ["mnist_convnet", "scratch", "scratch_augmented", "activations", "features", "features_augmented",
             "finetune", "filters_vgg16", "filters_resnet50v2", "gradcam"]


#: presets that are sweeps (hydra.mode MULTIRUN) and the end-to-end test that runs their quick size instead
SWEEP_PRESETS = {"explain_benchmark": ("tests.test_faithfulness",
                                       "test_explain_benchmark_quick_logs_the_leaderboard_in_the_sweep_parent")}


def test_every_preset_is_run_in_ci():
    import importlib

    assert sorted([*RUN_ORDER, *SWEEP_PRESETS]) == PRESETS
    for module, test in SWEEP_PRESETS.values():
        assert callable(getattr(importlib.import_module(module), test))


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_resolves(preset, quick):
    cfg = compose_config([f"experiment={preset}", f"quick={str(quick).lower()}"])
    assert cfg.tracking.experiment == preset
    for group in ("model", "dataset", "task"):
        resolved = {k: cfg[group][k] for k in cfg[group]}  # resolves every ${quick:...}
        assert "_target_" in resolved


def test_quick_shrinks_a_preset():
    full, quick = (compose_config(["experiment=scratch_augmented", f"quick={q}"]) for q in ("false", "true"))
    assert (full.task.epochs, full.dataset.limit) == (100, None)
    assert (quick.task.epochs, quick.dataset.limit, quick.task.steps_per_epoch) == (1, 16, 2)


@pytest.fixture(scope="module")
def preset_store(tmp_path_factory):
    return tmp_path_factory.mktemp("presets")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("preset", RUN_ORDER)
def test_quick_preset_runs_end_to_end(preset, preset_store):
    uri = f"sqlite:///{preset_store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "runner", f"experiment={preset}", "quick=true"],
                          cwd=preset_store, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name(preset).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["quick"] == "True"
