"""The shared training helpers: the book's augmentation as one Keras preprocessing layer that warps each
image once with a composed affine matrix."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from runner import tracking, training
from tests.conftest import REPO, compose_config


def _augmentation(task: str) -> dict:
    return dict(compose_config([f"task={task}"]).task.augmentation)


def _max_shift_of_an_edge(shear: float, size: int = 64) -> float:
    """How far (in pixels) a vertical edge moves at the top and bottom rows under the shear alone, over
    many random draws."""
    import tensorflow as tf

    image = np.zeros((1, size, size, 1), np.float32)
    image[:, :, size // 2:] = 1.0  # a vertical edge down the middle
    layer = training.augmentation_layer(flip=None, rotation=0, zoom=0, translation=0, shear=shear)
    images = tf.repeat(tf.constant(image), 64, axis=0)
    sheared = np.asarray(layer(images, training=True))
    # the edge's column in a row is the number of dark pixels left of it
    edge_columns = (sheared[..., 0] < 0.5).sum(axis=2)  # [draws, rows]
    return float(np.abs(edge_columns - size // 2).max())


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_default_shear_is_the_books_fraction_of_a_degree(task):
    """ImageDataGenerator(shear_range=0.2) shears by at most 0.2 *degrees*: over a 64-px image an edge
    moves by well under a pixel. Keras' RandomShear(0.2) would move it by up to ~6 px at the borders."""
    augmentation = _augmentation(task)
    assert _max_shift_of_an_edge(augmentation["shear"]) <= 1
    assert _max_shift_of_an_edge(0.2) >= 3  # the check can tell the two apart


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_default_augmentation_fills_like_the_book(task):
    """The book passes fill_mode="nearest" (Keras' layers default to "reflect"): an image shifted right
    by a quarter repeats its first column in the uncovered strip."""
    settings = {**_augmentation(task), "rotation": 0, "zoom": 0, "shear": 0, "flip": None,
                "translation": (0.25, 0.25)}
    columns = np.tile(np.arange(32, dtype=np.float32), (32, 1))[None, :, :, None]  # pixel value = column
    shifted = np.asarray(training.augmentation_layer(**settings)(columns, training=True))[0, 12:20, :, 0]
    assert np.allclose(shifted[:, :8], 0.0)  # "reflect" would give 8, 7, ..., 1 there
    assert np.allclose(shifted[:, 8:], columns[0, 12:20, :24, 0])


def _decompose(matrices: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """Invert ``compose``'s product F R T S Z (about the centre c) from the matrices alone: the linear part
    is diag(flip, 1) R z [[1, s], [0, 1]] and the centre maps to c - F R t."""
    linear = matrices[:, [0, 1, 3, 4]].reshape(-1, 2, 2)
    flip = np.sign(np.linalg.det(linear))
    unflipped = linear * np.stack([flip, np.ones_like(flip)], -1)[:, :, None]
    zoom = np.hypot(unflipped[:, 0, 0], unflipped[:, 1, 0])
    angle = np.arctan2(unflipped[:, 1, 0], unflipped[:, 0, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    shear = (unflipped[:, 0, 1] * cos + unflipped[:, 1, 1] * sin) / zoom
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    moved = np.stack([matrices[:, 0] * centre[0] + matrices[:, 1] * centre[1] + matrices[:, 2],
                      matrices[:, 3] * centre[0] + matrices[:, 4] * centre[1] + matrices[:, 5]], -1) - centre
    flip_rotate = np.stack([np.stack([flip * cos, -flip * sin], -1), np.stack([sin, cos], -1)], -2)
    shift = -np.linalg.solve(flip_rotate, moved[..., None])[..., 0] / np.array([width, height])
    return {"flip": flip, "angle": np.degrees(angle), "shift": shift, "zoom": zoom,
            "shear": np.degrees(np.arctan(shear))}


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_composed_matrices_have_the_books_distributions(task):
    """ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, zoom_range=0.2, shear_range=0.2,
    horizontal_flip=True): every parameter recovered from the composed matrices stays in the book's range
    and spreads over it (uniform draws: symmetric, reaching near both ends); half the images flipped."""
    layer = training.augmentation_layer(**_augmentation(task), seed=7)
    parts = _decompose(np.asarray(layer.random_matrices(4000, 150, 120), dtype=np.float64), 150, 120)
    for name, low, high in (("angle", -40, 40), ("zoom", 0.8, 1.2), ("shear", -0.2, 0.2)):
        values, middle, half = parts[name], (low + high) / 2, (high - low) / 2
        slack = 5e-3 * half  # the configured shear 0.0035 is tan 0.2005°
        assert values.min() >= low - slack and values.max() <= high + slack, name
        assert values.min() < middle - 0.95 * half and values.max() > middle + 0.95 * half, name
        assert abs(values.mean() - middle) < 0.05 * half, name
    shift = parts["shift"]
    assert np.abs(shift).max() <= 0.2 + 1e-4 and (np.abs(shift).max(axis=0) > 0.19).all()
    assert np.abs(np.corrcoef(shift.T)[0, 1]) < 0.1  # x and y shifts drawn independently
    assert 0.45 < (parts["flip"] < 0).mean() < 0.55


def _smooth_image(size: int = 48) -> np.ndarray:
    """Slowly varying RGB values, so that resampling once or four times differs only a little."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 60 * (np.sin(x / 5) + np.cos(y / 7) + x / size) + 128
    return np.stack([base, base[::-1], base[:, ::-1]], -1)[None]


def test_one_warp_equals_the_four_layer_chain():
    """With each factor pinned to one value, the composed warp reproduces RandomRotation -> RandomTranslation
    -> RandomShear -> RandomZoom up to interpolation (away from the borders, which each layer of the chain
    fills anew), and a chain with another angle is clearly different."""
    from keras import Sequential, layers

    def chain(angle):
        return Sequential([layers.RandomRotation((angle, angle), fill_mode="nearest"),
                           layers.RandomTranslation((0.1, 0.1), (0.1, 0.1), fill_mode="nearest"),
                           layers.RandomShear(x_factor=(0.0035, 0.0035), fill_mode="nearest"),
                           layers.RandomZoom((0.15, 0.15), fill_mode="nearest")])

    image = _smooth_image()
    warp = training.augmentation_layer(flip=None, rotation=(0.05, 0.05), translation=(0.1, 0.1),
                                       zoom=(0.15, 0.15), shear=(0.0035, 0.0035))
    once = np.asarray(warp(image, training=True))[0, 8:-8, 8:-8]
    spread = image.max() - image.min()
    assert np.abs(once - np.asarray(chain(0.05)(image, training=True))[0, 8:-8, 8:-8]).mean() < 0.01 * spread
    assert np.abs(once - np.asarray(chain(0.0)(image, training=True))[0, 8:-8, 8:-8]).mean() > 0.05 * spread


def test_flip_is_folded_into_the_warp():
    image = _smooth_image(16)
    flipped = training.augmentation_layer(flip="horizontal", rotation=0, translation=0, zoom=0, shear=0)
    outputs = np.asarray(flipped(np.repeat(image, 32, 0), training=True))
    mirrored = np.all(np.isclose(outputs, image[:, :, ::-1], atol=1e-3), axis=(1, 2, 3))
    unchanged = np.all(np.isclose(outputs, image, atol=1e-3), axis=(1, 2, 3))
    assert (mirrored | unchanged).all() and mirrored.any() and unchanged.any()


def test_augmentation_layer_round_trips_through_a_keras_file(tmp_path):
    """Inside a model it is saved and loaded with its settings, and passes images through at inference."""
    import keras

    settings = {**_augmentation("train"), "seed": 3}
    model = keras.Sequential([keras.Input((16, 16, 3)), training.augmentation_layer(**settings),
                              keras.layers.Conv2D(2, 3)])
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    layer = loaded.get_layer("augmentation")
    assert type(layer) is type(model.get_layer("augmentation"))
    assert {key: layer.get_config()[key] for key in settings} == settings
    image = _smooth_image(16)
    assert np.allclose(loaded.predict(image, verbose=0), model.predict(image, verbose=0), atol=1e-4)
    assert np.allclose(layer(image, training=False), image)
    assert not np.allclose(layer(image, training=True), image)
    assert math.isclose(float(np.asarray(layer(image, training=True)).mean()), float(image.mean()), rel_tol=0.3)


# ------------------------------------------------------------------------------- per-epoch MLflow metrics

def _fit_tiny_model(callbacks, epochs: int = 2) -> None:
    import keras

    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    network.compile(optimizer="sgd", loss="binary_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(8, 3)), np.array([0, 1] * 4)
    network.fit(x, y, validation_data=(x, y), epochs=epochs, batch_size=4, callbacks=callbacks, verbose=0)


@pytest.mark.skipif(bool(os.environ.get(tracking.ASYNC_BUFFER_ENV)),
                    reason=f"{tracking.ASYNC_BUFFER_ENV} is set here, and a user's own value is kept")
@pytest.mark.usefixtures("tracking")  # the fixture: a temporary MLflow store
def test_a_later_phase_numbers_its_epochs_on_and_training_alone_polls_mlflows_queue():
    """The epochs are logged asynchronously and waited for point by point; MLflow's worker polls its queue
    while the model trains and waits on its stop event once training is over (so ending the run is prompt)."""
    import keras
    import mlflow
    from mlflow.environment_variables import MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS

    buffering_during_epochs: list = []

    class Observe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            buffering_during_epochs.append(MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS.get())

    try:
        with mlflow.start_run() as run:
            _fit_tiny_model([training.epoch_metrics_callback(), Observe()], epochs=2)
            _fit_tiny_model([training.epoch_metrics_callback(first_epoch=2, phase="fine"), Observe()], epochs=3)
            assert MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS.get() == 1  # training is over
            tracking.wait_for_async_metrics()
            client = mlflow.MlflowClient()
            steps = sorted(point.step for point in client.get_metric_history(run.info.run_id, "val_loss"))
            metrics = client.get_run(run.info.run_id).data.metrics
            artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    finally:
        tracking.async_logging_for_training(True)  # as a job's end does: later tests' jobs inherit the environment
    assert steps == [0, 1, 2, 3, 4]
    assert buffering_during_epochs == [None] * 5  # MLflow's default while training: each epoch written at once
    assert "validation_loss" in metrics  # MLflow's own on_test_end metrics, kept
    assert {"model_summary.txt", "model_summary_fine.txt"} <= artifacts


def test_a_users_own_mlflow_async_buffering_is_kept(tmp_path):
    code = ("import os; from runner import tracking\n"
            "tracking.async_logging_for_training(False); tracking.async_logging_for_training(True)\n"
            f"print(os.environ[{tracking.ASYNC_BUFFER_ENV!r}])")
    env = {**os.environ, tracking.ASYNC_BUFFER_ENV: "5", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "5"


@pytest.mark.usefixtures("tracking")
def test_waiting_for_async_metrics_returns_with_every_point_written():
    import mlflow

    with mlflow.start_run() as run:
        for step in range(100):  # each its own batch for MLflow's worker: about a second of SQLite writes
            tracking.log_metrics_async({"x": float(step)}, step=step)
        tracking.wait_for_async_metrics()
        points = mlflow.MlflowClient().get_metric_history(run.info.run_id, "x")
    assert sorted(point.step for point in points) == list(range(100))
    assert all(point.value == point.step for point in points)
