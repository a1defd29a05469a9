"""Bad input outside the config and the image files: a run with no model, an unknown layer name."""

from __future__ import annotations

import traceback

import mlflow
import pytest

from runner.errors import ConvlabError
from runner.layers import LISTED_LAYERS, find_layer
from runner.models.from_run import FromRun
from tests.conftest import TINY_TRAIN, all_runs


def test_from_run_on_a_run_without_a_model_names_the_run_its_task_and_what_it_logged(tracking):
    mlflow.set_experiment("gradcam")
    with mlflow.start_run(run_name="gradcam-mobilenet_v2-photos") as run:
        mlflow.log_param("task.name", "gradcam")
        mlflow.log_text("x", "gradcam/chelsea.txt")
        mlflow.log_text("y", "config/config.yaml")
    spec = FromRun(run_id=run.info.run_id)
    with pytest.raises(ConvlabError) as error:
        spec.build()
    assert str(error.value).splitlines()[0] == (
        f"run {run.info.run_id} (gradcam-mobilenet_v2-photos, task=gradcam, FINISHED) logged no model/; "
        "it logged: config/, gradcam/")
    assert "task=train or task=finetune" in error.value.fix


def test_from_run_on_a_run_id_this_store_lacks_says_so(tracking):
    with pytest.raises(ConvlabError, match=r"there is no run 0{32} in the tracking store sqlite:///"):
        FromRun(run_id="0" * 32).build()


def test_an_unknown_layer_of_a_big_model_shows_the_closest_names_and_the_count_not_all():
    import keras

    names = [f"block_{i}_project" for i in range(LISTED_LAYERS + 10)]
    model = keras.Sequential([keras.Input((2,)), *(keras.layers.Dense(2, name=name) for name in names)], name="big")
    with pytest.raises(ConvlabError) as error:
        find_layer(model, "block_7_projct")
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"model 'big' has no layer 'block_7_projct'; closest of its {len(names)} layers: "
                                 "block_7_project")
    assert "block_29_project" not in str(error.value)  # the message stays short
    assert f"all {len(names)} layers: block_0_project, " in "".join(traceback.format_exception(error.value))


@pytest.mark.e2e
def test_a_one_class_folder_fails_the_run_at_load_naming_the_class(run_cli, mlflow_client, tmp_path):
    import cv2
    import numpy as np

    for split in ("train", "validation", "test"):
        (tmp_path / "data" / split / "cats").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / split / "cats" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    proc = run_cli(*TINY_TRAIN, "dataset=folder", f"dataset.path={tmp_path / 'data'}", expect_ok=False)

    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [run] = all_runs(mlflow_client)
    assert run.info.status == "FAILED"
    reason = run.data.tags["convlab.failure_reason"]
    assert reason.endswith("has 1 class folder (cats) in each split: a classifier needs at least 2")
    assert f"[convlab] run {run.info.run_id} FAILED: {reason}" in proc.stderr and "  fix: add a folder" in proc.stderr
    assert "model/model.keras" not in [a.path for a in mlflow_client.list_artifacts(run.info.run_id)]


def test_the_files_bad_files_skip_left_out_are_recorded_in_the_run(tracking, tmp_path):
    import cv2
    import numpy as np

    from runner.cli import log_skipped_files
    from runner.data.folder import Folder

    for split in ("train", "validation", "test"):
        for label in ("cats", "dogs"):
            (tmp_path / split / label).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / split / label / "0.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "train" / "dogs" / "notes.jpg").write_text("not an image")
    with mlflow.start_run() as run:
        log_skipped_files(Folder(str(tmp_path), bad_files="skip"))
    client = mlflow.tracking.MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["data.skipped_files"] == 1
    listed = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data/skipped_files.tsv")
    assert listed == f"{tmp_path / 'train' / 'dogs' / 'notes.jpg'}\tnot an image\n"


def test_a_one_pixel_photo_is_upsampled_with_a_warning_naming_both_sizes(tmp_path, caplog):
    import logging

    import cv2
    import keras
    import numpy as np

    from runner.data.photos import Photos
    from runner.models.base import ModelSpec
    from runner.visual import load_inputs

    cv2.imwrite(str(tmp_path / "dot.png"), np.full((1, 1, 3), 200, np.uint8))
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(1, 3)], name="probe")
    with caplog.at_level(logging.WARNING):
        [shown] = load_inputs(ModelSpec(), model, Photos(names=[], paths=[str(tmp_path / "dot.png")]), 1, "test")
    assert shown.model_input.shape == (32, 32, 3)
    assert "1 image(s) are far smaller than probe's input (32x32 px)" in caplog.text and "dot (1x1 px)" in caplog.text
