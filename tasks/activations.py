"""Task `activations`: every channel of the intermediate Conv/Pool layers for an input (book 5.4.1).

One forward pass through a feature model gives every chosen layer's activations. Each layer becomes a
grid of its channels (``activations/<layer>.png``; every channel's raw float32 array in
``activations/<layer>.npz``), and the fraction of all-zero channels is logged as ``sparsity/<layer>``: the
book's observation that deeper layers are sparser, as a number. A grid draws at most
``max_channels_drawn`` channels, those that vary most over the image, each labelled with its index (a
MobileNetV2 drew ~47 MB of PNGs an image with all of them); ``activations/overview.png`` shows a few
channels of every layer on one page.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import mlflow
import numpy as np

from runner.errors import ConvlabError
from runner.layers import SEPARATOR, feature_model, find_layer, is_spatial, layer_paths, pick_layer
from runner.models.base import ModelSpec
from runner.tracking import final_metrics, log_npz
from runner.visual import VisualInput, build_model, load_inputs, tile

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
#: the overview: this many channels of every layer (the most varying), each drawn this many pixels wide
OVERVIEW_CHANNELS, OVERVIEW_TILE = 8, 32


def run(
    *,
    model: ModelSpec,
    dataset,
    layers: list[str] | None,
    images_per_row: int,
    images: int,
    split: str,
    max_channels_drawn: int | None = 64,
) -> dict[str, float]:
    if images_per_row < 1:
        raise ConvlabError(f"task.images_per_row={images_per_row} must be at least 1",
                           fix="use task.images_per_row=16 (the book's value)")
    if max_channels_drawn is not None and max_channels_drawn < 1:
        raise ConvlabError(f"task.max_channels_drawn={max_channels_drawn} must be at least 1",
                           fix="use task.max_channels_drawn=64, or null to draw every channel")
    network = build_model(model, dataset)
    paths = chosen_layers(network, layers)
    inputs = load_inputs(model, network, dataset, images, split)
    activations = layer_activations(network, paths, np.stack([image.model_input for image in inputs]))

    names = np.array([image.name for image in inputs])
    for path, batch in activations.items():
        log_npz(f"{ARTIFACT_DIR}/{_file_name(path)}.npz", activations=batch, images=names)
    for index, image in enumerate(inputs):
        folder = ARTIFACT_DIR if len(inputs) == 1 else f"{ARTIFACT_DIR}/{_file_name(image.name)}"
        mlflow.log_image(_displayable(image), f"{folder}/input.png")
        for path, batch in activations.items():
            drawn = drawn_channels(batch[index], max_channels_drawn)
            mlflow.log_figure(grid_figure(batch[index], path, images_per_row, drawn),
                              f"{folder}/{_file_name(path)}.png")
            mlflow.log_metric(f"sparsity/{_file_name(path)}", sparsity(batch[index]), step=index)
        mlflow.log_figure(overview_figure({path: batch[index] for path, batch in activations.items()}),
                          f"{folder}/overview.png")
    print(_sparsity_table(activations, list(names)))
    return final_metrics()


# ------------------------------------------------------------------------------------------- layers


def chosen_layers(network: "keras.Model", layers: list[str] | None) -> list[str]:
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


def layer_activations(network: "keras.Model", paths: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """``{path: (images, height, width, channels) float32}`` from one forward pass over ``batch``."""
    outputs = feature_model(network, paths).predict(batch, verbose=0)
    if not isinstance(outputs, list):  # Keras unwraps a model's one-element output list
        outputs = [outputs]
    return {path: np.asarray(output, dtype=np.float32) for path, output in zip(paths, outputs)}


# -------------------------------------------------------------------------------------- channel grids


def drawn_channels(activation: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the channels of (height, width, channels) to draw: all of them, or the ``limit`` whose
    values vary most over the image (a constant or dead channel shows nothing), in index order."""
    channels = activation.shape[-1]
    if limit is None or channels <= limit:
        return np.arange(channels)
    variance = activation.astype(np.float64).var(axis=(0, 1))
    return np.sort(np.argsort(-variance, kind="stable")[:limit])


def normalized_channels(activation: np.ndarray) -> np.ndarray:
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


def channel_grid(activation: np.ndarray, images_per_row: int, zoom: int = 1) -> np.ma.MaskedArray:
    """Channel k of (height, width, channels), each pixel repeated ``zoom`` times, as the tile at row
    k // images_per_row, column k % images_per_row; the gaps between tiles and the empty slots of the
    last row are masked."""
    channel_first = normalized_channels(activation).transpose(2, 0, 1).repeat(zoom, axis=1).repeat(zoom, axis=2)
    return np.ma.MaskedArray(tile(channel_first, images_per_row, GAP),
                             mask=tile(np.zeros(channel_first.shape, bool), images_per_row, GAP, fill=True))


def grid_figure(activation: np.ndarray, path: str, images_per_row: int,
                 drawn: np.ndarray | None = None) -> "Figure":
    """The grid of the ``drawn`` channels (default all), one image pixel per screen pixel, titled with the
    layer, in viridis; small feature maps are magnified by a whole factor so that every pixel stays sharp.
    When some channels are left out, each tile is labelled with its channel's index."""
    from matplotlib.figure import Figure

    height, width, channels = activation.shape
    drawn = np.arange(channels) if drawn is None else np.asarray(drawn)
    zoom = max(1, math.ceil(MIN_TILE_PIXELS / max(height, width)))
    grid = channel_grid(activation[..., drawn], images_per_row, zoom)
    grid_width, grid_height = grid.shape[1] / DPI, grid.shape[0] / DPI
    figure_width, figure_height = max(grid_width, MIN_FIGURE_INCHES), grid_height + TITLE_INCHES
    fig = Figure(figsize=(figure_width, figure_height), dpi=DPI)
    left = (1 - grid_width / figure_width) / 2
    ax = fig.add_axes((left, 0, grid_width / figure_width, grid_height / figure_height))
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    dead = round(sparsity(activation) * channels)
    subset = f", {len(drawn)} most varying drawn" if len(drawn) < channels else ""
    fig.suptitle(f"{path}   {height}x{width}, {channels} channels, {dead} all-zero{subset}",
                 y=1 - 0.5 * TITLE_INCHES / figure_height, va="center", fontsize=10)
    if len(drawn) < channels:
        columns = min(images_per_row, len(drawn))
        for slot, channel in enumerate(drawn):
            row, column = divmod(slot, columns)
            ax.text(column * (width * zoom + GAP) + 1, row * (height * zoom + GAP) + 1, str(channel),
                    color="white", fontsize=6, va="top", ha="left")
    return fig


def overview_figure(activations: dict[str, np.ndarray]) -> "Figure":
    """One page for the whole network: a row per layer of its ``OVERVIEW_CHANNELS`` most varying channels
    of (height, width, channels), each resampled (nearest) to ``OVERVIEW_TILE`` pixels square."""
    from matplotlib.figure import Figure

    side = OVERVIEW_TILE
    slots = np.full((len(activations), OVERVIEW_CHANNELS, side, side), np.nan)  # a layer's row, nan: no channel
    for row, activation in enumerate(activations.values()):
        picked = drawn_channels(activation, OVERVIEW_CHANNELS)
        normalized = normalized_channels(activation[..., picked])
        ys = np.arange(side) * activation.shape[0] // side
        xs = np.arange(side) * activation.shape[1] // side
        slots[row, :len(picked)] = normalized[ys][:, xs].transpose(2, 0, 1)
    mosaic = tile(slots.reshape(-1, side, side), OVERVIEW_CHANNELS, GAP, fill=np.nan)
    label_inches = 0.08 * max(len(path) for path in activations) + 0.3
    fig = Figure(figsize=(mosaic.shape[1] / DPI + label_inches, mosaic.shape[0] / DPI + TITLE_INCHES), dpi=DPI)
    ax = fig.add_axes((label_inches / fig.get_figwidth(), 0, 1 - label_inches / fig.get_figwidth(),
                       1 - TITLE_INCHES / fig.get_figheight()))
    ax.imshow(np.ma.masked_invalid(mosaic), cmap="viridis", vmin=0, vmax=255, interpolation="nearest",
              aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([index * (side + GAP) + side / 2 for index in range(len(activations))], list(activations), fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(f"{len(activations)} layers, the {OVERVIEW_CHANNELS} most varying channels of each",
                 y=1 - 0.5 * TITLE_INCHES / fig.get_figheight(), va="center", fontsize=10)
    return fig


def _displayable(image: VisualInput) -> np.ndarray:
    """The model input (what the activations are of) as a uint8 image."""
    pixels = np.clip(image.model_input, 0, 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


# ------------------------------------------------------------------------------------------ sparsity


def sparsity(activation: np.ndarray) -> float:
    """Fraction of the channels of (height, width, channels) that are zero everywhere."""
    return float(np.all(activation == 0, axis=(0, 1)).mean())


def _sparsity_table(activations: dict[str, np.ndarray], names: list[str]) -> str:
    width = max(len("layer"), *(len(path) for path in activations))
    lines = [f"{'layer':<{width}}  {'output':>14}  all-zero channels ({', '.join(names)})"]
    for path, batch in activations.items():
        shape = "x".join(str(size) for size in batch.shape[1:])
        fractions = "  ".join(f"{sparsity(activation):.3f}" for activation in batch)
        lines.append(f"{path:<{width}}  {shape:>14}  {fractions}")
    return "\n".join(lines)


def _file_name(name: str) -> str:
    """A layer path or image name as one artifact file name (``vgg16/block1_conv1`` -> ``vgg16.block1_conv1``)."""
    return name.replace(SEPARATOR, ".")
