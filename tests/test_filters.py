"""Task `filters`: gradient ascent climbs, batch items stay independent, the book's deprocessing and grid,
dead filters reported, bad input explained, and one real CLI run recorded in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import keras
import mlflow
import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.models.base import ModelSpec
from runner.models.vgg16_hed import VGG16Hed
from tasks import filters
from tests.conftest import all_runs

TASK_DEFAULTS = dict(layers=["conv"], filters=None, num_filters=3, image_size=8, steps=4, step_size=1.0,
                     gradient_normalization="rms", init="book", loss_border=0, deprocess_std=0.1,
                     deprocess_crop=0, grid_columns=8, margin=5)


class ToySpec(ModelSpec):
    """8x8 input -> conv (3 filters: 0 and 2 respond to brightness, 1 is always 0 after its ReLU) -> flatten
    -> dense. Its size is fixed: it cannot be rebuilt at another."""

    name = "toy"

    def build(self, input_shape=None, num_classes=None) -> keras.Model:
        if input_shape is not None:
            raise ConvlabError("toy has a fixed input size")
        inputs = keras.Input((8, 8, 3), name="image")
        kernel = np.zeros((3, 3, 3, 3), np.float32)
        kernel[..., 0], kernel[..., 2] = 0.01, 0.02
        x = keras.layers.Conv2D(3, 3, activation="relu", name="conv", kernel_initializer=keras.initializers.Constant(
            kernel), bias_initializer=keras.initializers.Constant([0.0, -1.0, 0.0]))(inputs)
        x = keras.layers.Flatten(name="flatten")(x)
        return keras.Model(inputs, keras.layers.Dense(2, name="dense")(x), name=self.name)


@pytest.fixture(scope="module")
def hed() -> keras.Model:
    return VGG16Hed().build()


def climb(network, layer: str, indices: list[int], start: np.ndarray, steps: int):
    truncated = filters._truncated_at(network, layer, indices, start.shape[1], 0)
    ascent = filters._gradient_ascent(truncated, steps, 1.0, filters._rms_normalized, 0)
    return tuple(tensor.numpy() for tensor in ascent(start))


# ---------------------------------------------------------------------------------- gradient ascent


def test_the_loss_of_a_known_filter_rises_at_every_step(hed):
    np.random.seed(0)
    _, losses = climb(hed, "block1_conv1", [0], filters._book_init(1, 32, 3), steps=5)

    assert losses.shape == (1, 5)
    assert np.all(np.diff(losses[0]) > 0), losses
    assert losses[0, -1] > 1.2 * losses[0, 0]


def test_each_image_of_a_batch_climbs_as_if_its_filter_were_alone(hed):
    np.random.seed(1)
    start = filters._book_init(3, 24, 3)
    batch_images, batch_losses = climb(hed, "block1_conv2", [8, 2, 14], start, steps=3)
    alone_images, alone_losses = climb(hed, "block1_conv2", [2], start[1:2], steps=3)

    assert np.all(batch_losses > 0)  # live filters, so the images really moved
    assert np.abs(batch_images[1] - start[1]).max() > 1.0
    np.testing.assert_allclose(batch_images[1], alone_images[0], rtol=1e-5)
    np.testing.assert_allclose(batch_losses[1], alone_losses[0], rtol=1e-4)


@pytest.mark.parametrize("layer, convolution_computes", [("block2_conv1", 3), ("block2_pool", None)])
def test_the_truncated_model_gives_the_requested_channels_in_order(hed, layer, convolution_computes):
    """A Conv2D target computes only the requested channels; any other layer is computed whole and its
    channels taken. Either way channel i is the i-th requested filter of the full layer."""
    requested = [100, 3, 57]
    truncated = filters._truncated_at(hed, layer, requested, 32, 0)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    full = keras.Model(hed.inputs, hed.get_layer(layer).output).predict(images, verbose=0)

    np.testing.assert_allclose(truncated.predict(images, verbose=0), full[..., requested], rtol=1e-4, atol=1e-3)
    computed = {lay.name: lay.filters for lay in truncated.layers if isinstance(lay, keras.layers.Conv2D)}
    if convolution_computes:
        assert computed[layer] == convolution_computes  # and the whole block2_conv1 is not in the model
        assert computed.keys() == {"preprocess_bgr_mean", "block1_conv1", "block1_conv2", "block2_conv1"}
    else:
        assert computed == {name: hed.get_layer(name).filters for name in computed}  # every conv whole
        assert computed.keys() == {"preprocess_bgr_mean", "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}


def test_the_book_init_is_its_caffe_start_as_pixels_and_keras_io_its_start_in_minus_one_one_space():
    np.random.seed(2)
    book = filters._book_init(2, 16, 3)
    caffe_bgr = book[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)  # what VGG16 sees
    assert 128 <= caffe_bgr.min() and caffe_bgr.max() <= 148

    keras_io = filters._keras_io_init(2, 16, 3) / 127.5 - 1  # ResNet50V2's preprocessing
    assert -0.125 <= keras_io.min() and keras_io.max() <= 0.125

    gray = filters._gray_init(2, 16, 3)  # plain-pixel models: a gray image with a little noise
    assert 128 <= gray.min() and gray.max() <= 148 and gray.std() > 1


# ---------------------------------------------------------------------------------------- pictures


def book_deprocess_image(x):
    """Verbatim from the book (5.4.2, 1st edition)."""
    x -= x.mean()
    x /= (x.std() + 1e-5)
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    x = np.clip(x, 0, 255).astype('uint8')
    return x


def keras_io_deprocess_image(img):
    """Verbatim from keras.io "Visualizing what convnets learn"."""
    img -= img.mean()
    img /= img.std() + 1e-5
    img *= 0.15
    img = img[25:-25, 25:-25, :]
    img += 0.5
    img = np.clip(img, 0, 1)
    img *= 255
    img = np.clip(img, 0, 255).astype("uint8")
    return img


def test_deprocessing_is_the_books_and_keras_ios_formula():
    image = np.random.default_rng(3).normal(140, 30, (64, 64, 3)).astype(np.float32)

    np.testing.assert_array_equal(filters._deprocess(image, 0.1, 0), book_deprocess_image(image.copy()))
    np.testing.assert_array_equal(filters._deprocess(image, 0.15, 25), keras_io_deprocess_image(image.copy()))


def test_the_grid_puts_tile_k_at_row_k_div_columns_with_black_margins_between_tiles():
    patterns = np.stack([np.full((4, 4, 3), k + 1, np.uint8) for k in range(10)])
    grid = filters._grid(patterns, columns=8, margin=5)

    assert grid.shape == (2 * 4 + 5, 8 * 4 + 7 * 5, 3)
    expected = np.zeros_like(grid)
    for k in range(10):
        top, left = (k // 8) * 9, (k % 8) * 9
        expected[top:top + 4, left:left + 4] = k + 1
    np.testing.assert_array_equal(grid, expected)
    assert filters._grid(patterns[:4], columns=8, margin=5).shape == (4, 4 * 4 + 3 * 5, 3)


# -------------------------------------------------------------------------------- the task in MLflow


def test_a_filter_that_is_always_zero_is_counted_and_named_as_dead(tracking, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tasks.filters"), mlflow.start_run() as active:
        filters.run(model=ToySpec(), dataset=None, **TASK_DEFAULTS)

    run_id = active.info.run_id
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).data.metrics["dead_filters/conv"] == 1
    assert "conv: 1 dead filter(s)" in caplog.text and "[1]" in caplog.text
    final_losses = client.get_metric_history(run_id, "filter_loss/conv")
    assert [point.step for point in sorted(final_losses, key=lambda p: p.step)] == [0, 1, 2]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="filters", dst_path=str(tmp_path)))
    saved = np.load(local / "conv.npz")
    assert saved["losses"].shape == (3, 4) and saved["images"].shape == (3, 8, 8, 3)
    assert np.all(saved["losses"][1] == 0) and np.all(np.diff(saved["losses"][[0, 2]], axis=1) > 0)
    assert saved["patterns"].dtype == np.uint8 and list(saved["filters"]) == [0, 1, 2]
    assert cv2.imread(str(local / "conv.png")).shape == (8, 3 * 8 + 2 * 5, 3)


@pytest.mark.parametrize("overrides, message", [
    ({"layers": ["nope"]}, "has no layer 'nope'; its layers are: image, conv, flatten, dense"),
    ({"filters": [0, 3]}, "layer 'conv' has 3 filters (0..2); asked for [3]"),
    ({"num_filters": 4}, "layer 'conv' has 3 filters (0..2); asked for [3]"),
    ({"layers": ["dense"]}, "layer 'dense' (Dense) has no channel axis to visualize"),
    ({"layers": ["flatten"]}, "layer 'flatten' (Flatten) has no channel axis to visualize"),
    ({"layers": []}, "task.layers is empty"),
    ({"num_filters": 0}, "no filters to visualize"),
    ({"filters": []}, "no filters to visualize"),
    ({"gradient_normalization": "l1"}, "unknown task.gradient_normalization='l1'"),
    ({"init": "zeros"}, "unknown task.init='zeros'"),
    ({"steps": 0}, "task.steps=0 must be positive"),
    ({"margin": -1}, "task.margin=-1 must not be negative"),
    ({"deprocess_crop": 4}, "task.deprocess_crop=4 leaves nothing of a 8-px image"),
    ({"loss_border": 3}, "task.loss_border=3 leaves nothing of 'conv''s 6x6 map"),
])
def test_bad_input_is_refused_with_its_reason(overrides, message):
    with pytest.raises(ConvlabError) as error:
        filters.run(model=ToySpec(), dataset=None, **{**TASK_DEFAULTS, **overrides})
    assert message in str(error.value)


def test_a_model_fixed_to_another_size_names_the_size_it_takes():
    with pytest.raises(ConvlabError, match=r"toy takes 8x8 inputs, not task.image_size=16(.|\n)*task.image_size=8"):
        filters.run(model=ToySpec(), dataset=None, **{**TASK_DEFAULTS, "image_size": 16})


@pytest.mark.e2e
def test_the_cli_logs_the_grid_the_arrays_and_the_losses_of_each_filter(run_cli, mlflow_client, tmp_path):
    run_cli("task=filters", "model=vgg16_hed", "dataset=photos", "task.layers=[block1_conv1]",
            "task.num_filters=4", "task.steps=3", "task.image_size=32")

    [run] = all_runs(mlflow_client)
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id
    assert {a.path for a in mlflow_client.list_artifacts(run_id, "filters")} == {
        "filters/block1_conv1.png", "filters/block1_conv1.npz"}
    assert sorted(p.step for p in mlflow_client.get_metric_history(run_id, "filter_loss/block1_conv1")) == [0, 1, 2, 3]
    assert run.data.metrics["dead_filters/block1_conv1"] == 0
    local = Path(mlflow_client.download_artifacts(run_id, "filters", str(tmp_path)))
    assert cv2.imread(str(local / "block1_conv1.png")).shape == (32, 4 * 32 + 3 * 5, 3)
    assert np.load(local / "block1_conv1.npz")["losses"].shape == (4, 3)
