"""tasks.activations: what the intermediate layers compute for an input (book 5.4.1)."""

from __future__ import annotations

import io
import warnings

import mlflow
import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.models.base import ModelSpec
from runner.models.small_convnet import SmallConvnet
from tasks import activations
from tests.conftest import TINY_TRAIN, all_runs

SMALL_CONVNET_LAYERS = ["conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
                        "conv2d_3", "max_pooling2d_3", "conv2d_4", "max_pooling2d_4"]


@pytest.fixture(scope="module")
def small_convnet():
    return SmallConvnet().build((46, 46, 3), 2)


@pytest.fixture(scope="module")
def nested_model():
    """A pretrained-base style model: a functional sub-model ("base") inside the outer model."""
    import keras
    from keras import layers

    base_input = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(base_input)
    x = layers.DepthwiseConv2D(3, name="depthwise")(x)
    base = keras.Model(base_input, layers.MaxPooling2D(name="pool")(x), name="base")
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255, name="rescaling")(inputs)
    x = layers.SeparableConv2D(3, 1, name="separable")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(base(x))
    return keras.Model(inputs, layers.Dense(2, name="dense")(x), name="outer")


def _random_images(count: int, side: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, side, side, 3)).astype(np.float32)


# ------------------------------------------------------------------------------------------- layers


def test_default_layers_of_small_convnet_are_its_eight_conv_and_pool_layers_in_order(small_convnet):
    assert activations.chosen_layers(small_convnet, None) == SMALL_CONVNET_LAYERS


def test_default_layers_descend_into_nested_models(nested_model):
    assert activations.chosen_layers(nested_model, None) == ["separable", "base/conv", "base/depthwise", "base/pool"]


def test_activations_equal_a_direct_sub_model_prediction(small_convnet):
    import keras

    images = _random_images(2, 46)
    found = activations.layer_activations(small_convnet, SMALL_CONVNET_LAYERS, images)

    assert list(found) == SMALL_CONVNET_LAYERS
    for path in ("conv2d_1", "max_pooling2d_2", "max_pooling2d_4"):
        direct = keras.Model(small_convnet.inputs, small_convnet.get_layer(path).output).predict(images, verbose=0)
        assert found[path].dtype == np.float32 and found[path].shape == direct.shape
        np.testing.assert_allclose(found[path], direct, rtol=1e-5, atol=1e-6)


def test_activations_inside_a_nested_model_equal_the_sub_model_on_what_it_receives(nested_model):
    import keras

    images = _random_images(1, 16)
    found = activations.layer_activations(nested_model, ["base/depthwise"], images)

    received = keras.Model(nested_model.inputs, nested_model.get_layer("separable").output).predict(images, verbose=0)
    base = nested_model.get_layer("base")
    direct = keras.Model(base.inputs, base.get_layer("depthwise").output).predict(received, verbose=0)
    np.testing.assert_allclose(found["base/depthwise"], direct, rtol=1e-5, atol=1e-6)


def test_an_unknown_layer_is_an_error_listing_the_valid_ones(small_convnet):
    with pytest.raises(ConvlabError, match="no layer 'conv9'") as error:
        activations.chosen_layers(small_convnet, ["conv2d_1", "conv9"])
    assert "conv2d_1, max_pooling2d_1" in str(error.value)


@pytest.mark.parametrize("layer", ["flatten", "dense"])
def test_a_layer_without_a_feature_map_is_a_clear_error(small_convnet, layer):
    message = rf"layer '{layer}' outputs shape \(None, \d+\), not a .* feature map"
    with pytest.raises(ConvlabError, match=message) as error:
        activations.chosen_layers(small_convnet, [layer])
    assert "pick a layer with a 4-D output: " in str(error.value) and "max_pooling2d_4" in str(error.value)


# -------------------------------------------------------------------------------------- channel grids


def test_channel_normalization_is_the_books():
    channel = np.array([[0.0, 1.0], [2.0, 5.0]], np.float32)[..., None]
    expected = np.clip((channel - channel.mean()) / channel.std() * 64 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(activations.normalized_channels(channel), expected)


def test_a_constant_channel_renders_flat_without_nan():
    activation = np.zeros((26, 26, 3), np.float32)
    activation[..., 1] = 3.0052862  # in float32, np.std of 26x26 copies is 2.4e-7, not 0
    activation[..., 2] = np.arange(26 * 26).reshape(26, 26)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by zero or a NaN cast would warn
        normalized = activations.normalized_channels(activation)
    assert (normalized[..., 0] == 0).all()  # all-zero: the book's dark tile
    assert (normalized[..., 1] == 128).all()
    assert normalized[..., 2].min() < 64 and normalized[..., 2].max() > 192


def test_the_grid_puts_channel_k_at_row_k_div_per_row_and_column_k_mod_per_row():
    height, width, channels, per_row = 3, 4, 7, 3
    activation = np.zeros((height, width, channels), np.float32)
    for k in range(channels):
        activation[k // width, k % width, k] = 1.0  # channel k: one hot pixel, at flat position k

    grid = activations.channel_grid(activation, per_row)

    gap = activations.GAP
    assert grid.shape == (3 * height + 2 * gap, per_row * width + (per_row - 1) * gap)
    for k in range(channels):
        row, column = divmod(k, per_row)
        top, left = row * (height + gap), column * (width + gap)
        tile = grid[top:top + height, left:left + width]
        assert not tile.mask.any()
        assert np.argmax(tile.data) == k and tile.data.max() == 255 and (np.delete(tile.data, k) < 128).all()
    assert grid.mask[2 * (height + gap):, width + gap:].all()  # the last row's two empty slots
    assert grid.mask[:, width:width + gap].all() and grid.mask[height:height + gap, :].all()  # the gaps


def test_the_grid_magnifies_each_pixel_by_zoom():
    activation = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    plain, zoomed = activations.channel_grid(activation, 2), activations.channel_grid(activation, 2, zoom=3)
    np.testing.assert_array_equal(zoomed.data[:6, :6], plain.data[:2, :2].repeat(3, axis=0).repeat(3, axis=1))


def test_the_grid_figure_is_titled_with_the_layer():
    figure = activations.grid_figure(np.zeros((4, 4, 5), np.float32), "base/conv", 16)
    assert figure.texts[0].get_text().startswith("base/conv")
    assert "5 all-zero" in figure.texts[0].get_text()
    figure.savefig(io.BytesIO(), format="png")


def test_a_grid_draws_the_most_varying_channels_labelled_with_their_indices():
    activation = np.zeros((6, 6, 10), np.float32)
    activation[..., [2, 7, 9]] = np.random.default_rng(0).normal(size=(6, 6, 3)) * [1.0, 3.0, 2.0]
    activation[..., 4] = 5.0  # constant: nothing to see
    assert list(activations.drawn_channels(activation, 2)) == [7, 9]
    assert list(activations.drawn_channels(activation, 3)) == [2, 7, 9]
    assert list(activations.drawn_channels(activation, None)) == list(range(10))
    figure = activations.grid_figure(activation, "conv", 16, activations.drawn_channels(activation, 3))
    assert [text.get_text() for text in figure.axes[0].texts] == ["2", "7", "9"]
    assert "3 most varying drawn" in figure.texts[0].get_text()
    side = 6 * 11  # 6-px maps magnified 11x to reach MIN_TILE_PIXELS (64)
    assert figure.axes[0].images[0].get_array().shape == (side, 3 * side + 2 * activations.GAP)


def test_the_overview_has_one_row_of_channels_per_layer():
    rng = np.random.default_rng(0)
    layers = {"conv": rng.normal(size=(20, 20, 16)), "pool": rng.normal(size=(10, 10, 3)),
              "base/deep": rng.normal(size=(2, 2, 40))}
    figure = activations.overview_figure(layers)
    mosaic = figure.axes[0].images[0].get_array()
    tile, gap, per_row = activations.OVERVIEW_TILE, activations.GAP, activations.OVERVIEW_CHANNELS
    assert mosaic.shape == (3 * tile + 2 * gap, per_row * tile + (per_row - 1) * gap)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list(layers)
    pool_row = mosaic[tile + gap:2 * tile + gap]
    drawn = [not pool_row[:, slot * (tile + gap):slot * (tile + gap) + tile].mask.any() for slot in range(per_row)]
    assert drawn == [True] * 3 + [False] * (per_row - 3)  # "pool" has only 3 channels
    figure.savefig(io.BytesIO(), format="png")


# ------------------------------------------------------------------------------------------ sparsity


def test_sparsity_is_the_fraction_of_all_zero_channels():
    activation = np.zeros((3, 3, 4), np.float32)
    activation[2, 2, 1] = 0.5  # one nonzero pixel keeps channel 1 alive
    activation[..., 3] = 1.0
    assert activations.sparsity(activation) == 0.5


# ------------------------------------------------------------------------------------------ the task


class _Prebuilt(ModelSpec):
    name = "prebuilt"

    def __init__(self, model):
        self.model = model

    def build(self, input_shape=None, num_classes=None):
        return self.model


def test_several_images_get_one_folder_each_and_nested_paths_become_file_names(nested_model, monkeypatch):
    from runner.data.photos import Photos

    logged: dict[str, object] = {}  # what the task would log, without a (slow to create) MLflow store
    monkeypatch.setattr(activations, "log_npz", lambda path, **arrays: logged.setdefault(path, arrays))
    monkeypatch.setattr(mlflow, "log_image", lambda image, path: logged.setdefault(path, image))
    monkeypatch.setattr(mlflow, "log_figure", lambda figure, path: logged.setdefault(path, figure))
    monkeypatch.setattr(mlflow, "log_metric", lambda key, value, step: logged.setdefault(f"{key}@{step}", value))

    activations.run(model=_Prebuilt(nested_model), dataset=Photos(names=["chelsea", "coffee"]),
                    layers=["base/conv"], images_per_row=2, images=1, split="test")

    assert set(logged) == {
        "activations/base.conv.npz",
        "activations/chelsea/input.png", "activations/chelsea/base.conv.png", "activations/chelsea/overview.png",
        "activations/coffee/input.png", "activations/coffee/base.conv.png", "activations/coffee/overview.png",
        "sparsity/base.conv@0", "sparsity/base.conv@1",
    }
    saved = logged["activations/base.conv.npz"]
    assert saved["activations"].shape == (2, 14, 14, 4) and saved["activations"].dtype == np.float32
    assert list(saved["images"]) == ["chelsea", "coffee"]
    assert logged["activations/coffee/input.png"].shape == (16, 16, 3)
    for step in (0, 1):
        assert logged[f"sparsity/base.conv@{step}"] == activations.sparsity(saved["activations"][step])


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        paths |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


@pytest.mark.e2e
def test_cli_logs_the_books_grids_arrays_and_sparsity_for_a_trained_model(run_cli, mlflow_client, tmp_path):
    run_cli(*TINY_TRAIN)
    [trained] = all_runs(mlflow_client)

    proc = run_cli("task=activations", "model=from_run", f"model.run_id={trained.info.run_id}",
                   "dataset=cats_vs_dogs", "dataset.limit=16")

    [run] = [run for run in all_runs(mlflow_client) if run.info.run_id != trained.info.run_id]
    assert run.info.status == "FINISHED"
    artifacts = _artifact_paths(mlflow_client, run.info.run_id)
    expected = {f"activations/{layer}.{suffix}" for layer in SMALL_CONVNET_LAYERS for suffix in ("png", "npz")}
    assert expected | {"activations/input.png"} <= artifacts
    saved = np.load(mlflow_client.download_artifacts(run.info.run_id, "activations/conv2d_1.npz", str(tmp_path)))
    assert saved["activations"].shape == (1, 46, 46, 32) and saved["activations"].dtype == np.float32
    assert (saved["activations"] >= 0).all()  # relu
    sparsity = {layer: run.data.metrics[f"sparsity/{layer}"] for layer in SMALL_CONVNET_LAYERS}
    assert all(0.0 <= value <= 1.0 for value in sparsity.values())
    # a max-pooled channel is all-zero at least when its conv channel is
    assert sparsity["max_pooling2d_1"] >= sparsity["conv2d_1"]
    assert all(layer in proc.stdout for layer in SMALL_CONVNET_LAYERS)
