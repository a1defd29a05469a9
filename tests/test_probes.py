"""task.probes: Grad-CAM of fixed images after training epochs, logged as MLflow image timelines."""

from __future__ import annotations

import cv2
import mlflow
import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from runner.explain import explain
from runner.mlflow_images import image_timelines
from runner.models.base import CropBox
from runner.probes import ALPHA, ProbeCallback
from runner.validation import ConfigError, check_config
from runner.visual import overlay
from tests.conftest import compose_config


def _small_model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def _logged(run_id: str, key: str, step: int, folder) -> np.ndarray:
    client = mlflow.MlflowClient()
    stem = key.replace("/", "~") + f"+step+{step}+"
    [path] = [item.path for item in client.list_artifacts(run_id, "images")
              if item.path.split("/")[-1].startswith(stem) and item.path.endswith(".png")]
    return cv2.cvtColor(cv2.imread(client.download_artifacts(run_id, path, str(folder))), cv2.COLOR_BGR2RGB)


def test_each_probe_logs_the_gradcam_overlay_of_the_weights_at_that_epoch(tracking, tmp_path):
    network = _small_model()
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    originals = images.astype(np.uint8)
    expected = []
    with mlflow.start_run() as active:
        probe = ProbeCallback(network, ["a", "b"], images)
        for step in range(2):
            expected.append(explain(network, images, "gradcam", layer="conv").maps)
            probe.on_epoch_end(step)
            conv = network.get_layer("conv")  # as an epoch of training would: new weights, same variables
            conv.set_weights([np.random.default_rng(step + 1).normal(size=w.shape) for w in conv.get_weights()])
    run_id = active.info.run_id

    assert image_timelines(run_id) == {"probe/a": [0, 1], "probe/b": [0, 1]}
    for step in range(2):
        for index, name in enumerate("ab"):
            want = overlay(originals[index], expected[step][index], CropBox(0, 0, 16, 16), ALPHA)
            np.testing.assert_array_equal(_logged(run_id, f"probe/{name}", step, tmp_path), want)
    assert not np.allclose(expected[0], expected[1])  # the second probe saw the changed weights
    seconds = mlflow.MlflowClient().get_metric_history(run_id, "probe/seconds")
    assert sorted(point.step for point in seconds) == [0, 1] and all(point.value > 0 for point in seconds)


def test_probes_run_every_nth_epoch_numbered_on_from_a_later_phase(tracking):
    with mlflow.start_run() as active:
        probe = ProbeCallback(_small_model(), ["a"], np.zeros((1, 16, 16, 3)), every=2, first_epoch=3)
        for _ in range(2):  # a second phase's fit: traced already
            probe.on_train_begin()
        for epoch in range(4):  # the run's epochs 3, 4, 5, 6: the 4th and 6th are probed
            probe.on_epoch_end(epoch)
    assert image_timelines(active.info.run_id) == {"probe/a": [3, 5]}
    [trace] = mlflow.MlflowClient().get_metric_history(active.info.run_id, "probe/trace_seconds")
    assert trace.step == 3 and trace.value > 0  # traced once, before the first epoch


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_probes_are_on_by_default_and_bad_settings_fail_before_a_run(task):
    probes = compose_config([f"task={task}"]).task.probes
    assert (probes.enabled, probes.every, probes.images, probes.split, probes.layer) == (True, 1, 4, "test", None)
    with pytest.raises(ConfigError, match=r"task.probes.every=0"):
        check_config(compose_config([f"task={task}", "task.probes.every=0"]))
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([f"task={task}", "task.probes.split=tset"])
    assert "[train, validation, test]" in str(error.value.__cause__)  # Hydra lists the choices
