"""Task `activations`: every channel of the intermediate Conv/Pool layers for an input (book 5.4.1).

One forward pass through a feature model gives every chosen layer's activations. Each layer becomes a
grid of its channels (``activations/<layer>.png``, raw float32 arrays in ``activations/<layer>.npz``), and
the fraction of all-zero channels is logged as ``sparsity/<layer>``: the book's observation that deeper
layers are sparser, as a number.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import mlflow
import numpy as np

from runner.errors import ConvlabError
from runner.layers import SEPARATOR, feature_model, find_layer, is_spatial, layer_paths, pick_layer
from runner.models.base import ModelSpec
from runner.tracking import log_npz
from runner.visual import VisualInput, build_model, load_inputs

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

ARTIFACT_DIR = "activations"
#: pixels between the tiles of a grid (shown blank, like the empty slots of the last row)
GAP = 2
#: small feature maps are magnified by a whole factor until their tiles are at least this many pixels wide
MIN_TILE_PIXELS = 64
DPI = 100
TITLE_INCHES = 0.4
MIN_FIGURE_INCHES = 5  # room for the title above a narrow grid


def run(
    *,
    model: ModelSpec,
    dataset,
    layers: list[str] | None,
    images_per_row: int,
    images: int,
    split: str,
) -> None:
    if images_per_row < 1:
        raise ConvlabError(f"task.images_per_row={images_per_row} must be at least 1",
                           fix="use task.images_per_row=16 (the book's value)")
    network = build_model(model, dataset)
    paths = _chosen_layers(network, layers)
    inputs = load_inputs(model, network, dataset, images, split)
    activations = _layer_activations(network, paths, np.stack([image.model_input for image in inputs]))

    names = np.array([image.name for image in inputs])
    for path, batch in activations.items():
        log_npz(f"{ARTIFACT_DIR}/{_file_name(path)}.npz", activations=batch, images=names)
    for index, image in enumerate(inputs):
        folder = ARTIFACT_DIR if len(inputs) == 1 else f"{ARTIFACT_DIR}/{_file_name(image.name)}"
        mlflow.log_image(_displayable(image), f"{folder}/input.png")
        for path, batch in activations.items():
            mlflow.log_figure(_grid_figure(batch[index], path, images_per_row), f"{folder}/{_file_name(path)}.png")
            mlflow.log_metric(f"sparsity/{_file_name(path)}", _sparsity(batch[index]), step=index)
    print(_sparsity_table(activations, list(names)))


# ------------------------------------------------------------------------------------------- layers


def _chosen_layers(network: "keras.Model", layers: list[str] | None) -> list[str]:
    """``layers`` checked to have feature-map outputs, or by default every Conv/Pool layer in call order."""
    if layers:
        for path in layers:
            _check_spatial(network, path)
        return list(layers)
    paths = [path for path in layer_paths(network) if _is_conv_or_pool(find_layer(network, path))]
    if not paths:
        raise ConvlabError(f"model {network.name!r} has no convolution or pooling layer to show",
                           fix="name layers with 4-D outputs in task.layers=[...]")
    return paths


def _is_conv_or_pool(layer: "keras.layers.Layer") -> bool:
    from keras import layers

    kinds = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D,
             layers.MaxPooling2D, layers.AveragePooling2D)
    return isinstance(layer, kinds) and is_spatial(layer)


def _check_spatial(network: "keras.Model", path: str) -> None:
    pick_layer(network, path, pooling=True, purpose="it has no channels to show", option="task.layers")


def _layer_activations(network: "keras.Model", paths: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """``{path: (images, height, width, channels) float32}`` from one forward pass over ``batch``."""
    outputs = feature_model(network, paths).predict(batch, verbose=0)
    if not isinstance(outputs, list):  # Keras unwraps a model's one-element output list
        outputs = [outputs]
    return {path: np.asarray(output, dtype=np.float32) for path, output in zip(paths, outputs)}


# -------------------------------------------------------------------------------------- channel grids


def _normalized_channels(activation: np.ndarray) -> np.ndarray:
    """The book's per-channel display scaling of (height, width, channels): subtract the channel's mean,
    divide by its std, x64 + 128, clip to uint8.

    A constant channel (std 0, where the recipe divides by zero) renders flat at 128, the recipe's limit,
    except an all-zero channel: the book leaves it at 0, so dead ReLU units show as dark tiles.
    Constant is tested exactly (max == min), not as std == 0: a float32 std of equal values is often 2e-7.
    """
    values = activation.astype(np.float64)
    mean = values.mean(axis=(0, 1))
    std = values.std(axis=(0, 1))
    constant = values.max(axis=(0, 1)) == values.min(axis=(0, 1))
    scaled = np.clip((values - mean) / np.where(constant, 1.0, std) * 64 + 128, 0, 255)
    return np.where(np.all(values == 0, axis=(0, 1)), 0, scaled).astype(np.uint8)


def _channel_grid(activation: np.ndarray, images_per_row: int, zoom: int = 1) -> np.ma.MaskedArray:
    """Channel k of (height, width, channels), each pixel repeated ``zoom`` times, as the tile at row
    k // images_per_row, column k % images_per_row; the gaps between tiles and the empty slots of the
    last row are masked."""
    height, width, channels = activation.shape
    columns = min(images_per_row, channels)
    rows = math.ceil(channels / columns)
    tile_height, tile_width = height * zoom, width * zoom
    tiles = np.zeros((rows * columns, tile_height + GAP, tile_width + GAP), np.uint8)
    channel_first = _normalized_channels(activation).transpose(2, 0, 1)
    tiles[:channels, :tile_height, :tile_width] = channel_first.repeat(zoom, axis=1).repeat(zoom, axis=2)
    blank = np.ones(tiles.shape, bool)
    blank[:channels, :tile_height, :tile_width] = False

    def laid_out(stack: np.ndarray) -> np.ndarray:
        grid = stack.reshape(rows, columns, tile_height + GAP, tile_width + GAP).transpose(0, 2, 1, 3)
        return grid.reshape(rows * (tile_height + GAP), columns * (tile_width + GAP))[:-GAP, :-GAP]

    return np.ma.MaskedArray(laid_out(tiles), mask=laid_out(blank))


def _grid_figure(activation: np.ndarray, path: str, images_per_row: int) -> "Figure":
    """The grid, one image pixel per screen pixel, titled with the layer, in viridis; small feature maps
    are magnified by a whole factor so that every pixel stays sharp."""
    from matplotlib.figure import Figure

    height, width, channels = activation.shape
    zoom = max(1, math.ceil(MIN_TILE_PIXELS / max(height, width)))
    grid = _channel_grid(activation, images_per_row, zoom)
    grid_width, grid_height = grid.shape[1] / DPI, grid.shape[0] / DPI
    figure_width, figure_height = max(grid_width, MIN_FIGURE_INCHES), grid_height + TITLE_INCHES
    fig = Figure(figsize=(figure_width, figure_height), dpi=DPI)
    left = (1 - grid_width / figure_width) / 2
    ax = fig.add_axes((left, 0, grid_width / figure_width, grid_height / figure_height))
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    dead = round(_sparsity(activation) * channels)
    fig.suptitle(f"{path}   {height}x{width}, {channels} channels, {dead} all-zero",
                 y=1 - 0.5 * TITLE_INCHES / figure_height, va="center", fontsize=10)
    return fig


def _displayable(image: VisualInput) -> np.ndarray:
    """The model input (what the activations are of) as a uint8 image."""
    pixels = np.clip(image.model_input, 0, 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


# ------------------------------------------------------------------------------------------ sparsity


def _sparsity(activation: np.ndarray) -> float:
    """Fraction of the channels of (height, width, channels) that are zero everywhere."""
    return float(np.all(activation == 0, axis=(0, 1)).mean())


def _sparsity_table(activations: dict[str, np.ndarray], names: list[str]) -> str:
    width = max(len("layer"), *(len(path) for path in activations))
    lines = [f"{'layer':<{width}}  {'output':>14}  all-zero channels ({', '.join(names)})"]
    for path, batch in activations.items():
        shape = "x".join(str(size) for size in batch.shape[1:])
        fractions = "  ".join(f"{_sparsity(activation):.3f}" for activation in batch)
        lines.append(f"{path:<{width}}  {shape:>14}  {fractions}")
    return "\n".join(lines)


def _file_name(name: str) -> str:
    """A layer path or image name as one artifact file name (``vgg16/block1_conv1`` -> ``vgg16.block1_conv1``)."""
    return name.replace(SEPARATOR, ".")
