"""Task `filters`: the pattern each filter responds to, by gradient ascent in input space (book 5.4.2).

Every requested filter of a layer climbs at once: image i of one batch maximizes the mean activation of
filter f_i, so the summed loss gives each image the gradient of its own filter alone.

Input spaces. Our models take RGB pixels in [0, 255] and normalize inside; the sources fed their
model's *preprocessed* input directly. The recipes are mapped to pixels so the network sees what it saw:

* book (VGG16, caffe input ``BGR - CAFFE_MEAN_BGR``, pixel scale): its start ``uniform*20 + 128`` was a
  caffe value, i.e. the pixels ``uniform*20 + 128 + CAFFE_MEAN`` (≈ 232..272, brighter than white; no
  clipping, as in the book). Caffe space is pixels shifted and channel-swapped, so its gradient, RMS
  and step 1.0 are the same in pixels.
* keras.io (ResNet50V2, input ``pixel / 127.5 - 1``): its start ``(uniform - 0.5) * 0.25`` is the pixels
  ``127.5 * (1 + (uniform - 0.5) * 0.25)`` (gray ± 16); its step 10 along the L2-normalized gradient is
  ``step_size=1275`` pixels (L2 normalization removes the gradient's 1/127.5 scale).

Deprocessing normalizes the pixel image by its own mean and std, so a global affine change of space
(keras.io) gives the same picture; the book deprocessed the caffe tensor (mean not added back, BGR shown
as RGB), so its colors differ slightly from the pixels shown here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import mlflow
import numpy as np

from runner.errors import ConvlabError
from runner.layers import feature_model, find_layer, is_spatial
from runner.models.base import ModelSpec
from runner.models.vgg16 import CAFFE_MEAN_BGR
from runner.tracking import log_npz
from runner.visual import build_model

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

CAFFE_MEAN_RGB = np.asarray(CAFFE_MEAN_BGR[::-1], dtype=np.float32)
#: ResNet50V2's input is pixel / PIXELS_PER_UNIT - 1 ("tf" preprocessing)
PIXELS_PER_UNIT = 127.5


def run(
    *,
    model: ModelSpec,
    dataset,
    layers: list[str],
    filters: list[int] | None,
    num_filters: int,
    image_size: int,
    steps: int,
    step_size: float,
    gradient_normalization: str,
    init: str,
    loss_border: int,
    deprocess_std: float,
    deprocess_crop: int,
    grid_columns: int,
    margin: int,
) -> None:
    """For each layer, climb every requested filter in one batch; log its grid, arrays and losses."""
    indices = list(filters) if filters is not None else list(range(num_filters))
    _check_config(layers, indices, steps, image_size, gradient_normalization, init, loss_border, deprocess_std,
                  deprocess_crop, grid_columns, margin)
    network = _model_at_size(model, dataset, image_size)
    truncated = {layer: _truncated_at(network, layer, indices, image_size, loss_border) for layer in layers}
    channels = network.input_shape[-1]
    for layer, features in truncated.items():
        start = INITS[init](len(indices), image_size, channels)
        climb = _gradient_ascent(features, steps, step_size, NORMALIZATIONS[gradient_normalization], loss_border)
        images, losses = (tensor.numpy() for tensor in climb(start))
        patterns = np.stack([_deprocess(image, deprocess_std, deprocess_crop) for image in images])
        _log_layer(layer, indices, images, patterns, losses, grid_columns, margin)


# ------------------------------------------------------------------------------------------ recipes


def _book_init(count: int, size: int, channels: int) -> np.ndarray:
    """``uniform*20 + 128`` in caffe space, as pixels (a gray model gets the channels' average mean)."""
    mean = CAFFE_MEAN_RGB if channels == 3 else np.full(channels, CAFFE_MEAN_RGB.mean(), np.float32)
    return (np.random.random((count, size, size, channels)) * 20 + 128 + mean).astype(np.float32)


def _gray_init(count: int, size: int, channels: int) -> np.ndarray:
    """``uniform*20 + 128`` in pixels: the book's gray image with a little noise, for models that take
    pixels (convlab's own convnets rescale by 1/255 inside), where caffe space means nothing."""
    return (np.random.random((count, size, size, channels)) * 20 + 128).astype(np.float32)


def _keras_io_init(count: int, size: int, channels: int) -> np.ndarray:
    """``(uniform - 0.5) * 0.25`` in ResNet50V2's [-1, 1] input space, as pixels."""
    noise = (np.random.random((count, size, size, channels)) - 0.5) * 0.25
    return ((noise + 1) * PIXELS_PER_UNIT).astype(np.float32)


def _rms_normalized(grads):
    """The book's ``grads /= (K.sqrt(K.mean(K.square(grads))) + 1e-5)``, per image."""
    import tensorflow as tf

    return grads / (tf.sqrt(tf.reduce_mean(tf.square(grads), axis=[1, 2, 3], keepdims=True)) + 1e-5)


def _l2_normalized(grads):
    """keras.io's ``tf.math.l2_normalize(grads)``, per image."""
    import tensorflow as tf

    return tf.math.l2_normalize(grads, axis=[1, 2, 3])


INITS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "book": _book_init, "gray": _gray_init, "keras_io": _keras_io_init}
NORMALIZATIONS: dict[str, Callable] = {"rms": _rms_normalized, "l2": _l2_normalized}


def _check_config(layers: list[str], filters: list[int], steps: int, image_size: int, gradient_normalization: str,
                  init: str, loss_border: int, deprocess_std: float, deprocess_crop: int, grid_columns: int,
                  margin: int) -> None:
    if not layers:
        raise ConvlabError("task.layers is empty", fix="name at least one layer, e.g. task.layers=[block1_conv1]")
    if not filters:
        raise ConvlabError("no filters to visualize", fix="set task.num_filters >= 1, or list task.filters")
    if gradient_normalization not in NORMALIZATIONS:
        raise ConvlabError(f"unknown task.gradient_normalization={gradient_normalization!r}",
                           fix=f"use one of {', '.join(NORMALIZATIONS)} (rms: book, l2: keras.io)")
    if init not in INITS:
        raise ConvlabError(f"unknown task.init={init!r}", fix=f"use one of {', '.join(INITS)}")
    positive = {"steps": steps, "image_size": image_size, "deprocess_std": deprocess_std, "grid_columns": grid_columns}
    not_negative = {"loss_border": loss_border, "deprocess_crop": deprocess_crop, "margin": margin}
    for name, value in positive.items():
        if value <= 0:
            raise ConvlabError(f"task.{name}={value} must be positive")
    for name, value in not_negative.items():
        if value < 0:
            raise ConvlabError(f"task.{name}={value} must not be negative")
    if 2 * deprocess_crop >= image_size:
        raise ConvlabError(f"task.deprocess_crop={deprocess_crop} leaves nothing of a {image_size}-px image",
                           fix=f"use task.deprocess_crop < {(image_size + 1) // 2}")


# ------------------------------------------------------------------------------------------- models


def _model_at_size(spec: ModelSpec, dataset, image_size: int) -> "keras.Model":
    """The spec's model taking ``image_size`` squares: as built when its input size is free or matches,
    else rebuilt at that size where the spec allows it (vgg16 with include_top=false)."""
    network = build_model(spec, dataset)
    height, width, channels = network.input_shape[1:]
    if height in (None, image_size) and width in (None, image_size):
        return network
    try:
        return spec.build((image_size, image_size, channels))
    except ConvlabError as error:
        raise ConvlabError(
            f"{spec.name} takes {height}x{width} inputs, not task.image_size={image_size} "
            f"({str(error).splitlines()[0]})",
            fix=f"set task.image_size={height}, or use a fully convolutional model",
        ) from None


def _truncated_at(network: "keras.Model", layer: str, filters: list[int], image_size: int,
                  loss_border: int) -> "keras.Model":
    """``network`` cut at ``layer``, giving only ``filters``' channels in that order (channel i is image
    i's filter), after checking that the layer has a channel axis holding ``filters`` and a feature map
    larger than the excluded border.

    A plain Conv2D target is replaced by a copy computing only those channels: the others would cost
    their share of the forward and backward pass of every step for nothing (3/4 of block3_conv1's for 64
    of its 256 filters). Other layers (an Add, an Activation) are computed whole and the channels taken.
    """
    import keras

    target = find_layer(network, layer)
    if not is_spatial(target):
        raise ConvlabError(f"layer {layer!r} ({type(target).__name__}) has no channel axis to visualize: its output "
                           f"shape is {tuple(target.output.shape)}",
                           fix="pick a convolution or pooling layer (4-D output: batch, height, width, channels)")
    channels = target.output.shape[-1]
    out_of_range = [index for index in filters if not 0 <= index < channels]
    if out_of_range:
        raise ConvlabError(f"layer {layer!r} has {channels} filters (0..{channels - 1}); asked for {out_of_range}",
                           fix=f"use filter indices below {channels} (task.filters / task.num_filters <= {channels})")
    sliced = _conv_with_channels(target, filters)
    features = feature_model(network, [layer], replace={layer: sliced} if sliced else None)
    output = features.outputs[0]
    if sliced is None:
        output = keras.ops.take(output, filters, axis=-1)
    truncated = keras.Model(features.inputs[0], output, name=features.name)  # one tensor, not a list
    height, width = truncated.compute_output_shape((1, image_size, image_size, network.input_shape[-1]))[1:3]
    if 2 * loss_border >= min(height, width):
        raise ConvlabError(f"task.loss_border={loss_border} leaves nothing of {layer!r}'s {height}x{width} map",
                           fix="use a smaller task.loss_border or a larger task.image_size")
    return truncated


def _conv_with_channels(conv: "keras.layers.Layer", channels: list[int]) -> "keras.layers.Layer | None":
    """A copy of a plain channels-last Conv2D computing only ``channels`` (in that order), or None."""
    import keras

    if type(conv) is not keras.layers.Conv2D or conv.groups != 1 or conv.data_format != "channels_last":
        return None
    sliced = keras.layers.Conv2D.from_config({**conv.get_config(), "filters": len(channels)})
    sliced.build(conv.input.shape)
    kernel, *bias = conv.get_weights()
    sliced.set_weights([kernel[..., channels], *(b[channels] for b in bias)])
    return sliced


# ------------------------------------------------------------------------------------ gradient ascent


def _gradient_ascent(truncated: "keras.Model", steps: int, step_size: float, normalize: Callable,
                     loss_border: int) -> Callable:
    """A tf.function ``climb(images) -> (images, losses [filters x steps])`` running every step at once;
    image i climbs channel i of ``truncated`` (see ``_truncated_at``).

    ``losses[i, s]`` is filter i's loss on image i before step s (what the sources record).
    """
    import tensorflow as tf

    def loss_per_image(images):
        activation = truncated(images, training=False)
        if loss_border:
            activation = activation[:, loss_border:-loss_border, loss_border:-loss_border, :]
        return tf.linalg.diag_part(tf.reduce_mean(activation, axis=[1, 2]))  # [image, channel] -> its own

    @tf.function
    def climb(images):
        losses = tf.TensorArray(tf.float32, size=steps)
        for step in tf.range(steps):
            # only the image is watched: no weight gradients are computed
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(images)
                loss = loss_per_image(images)
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, images)
            images += step_size * normalize(grads)
            losses = losses.write(step, loss)
        return images, tf.transpose(losses.stack())

    return climb


def _deprocess(image: np.ndarray, std: float, crop: int) -> np.ndarray:
    """The book's ``deprocess_image`` (std 0.1), with keras.io's std and centre crop as options."""
    x = image - image.mean()
    x /= image.std() + 1e-5
    x *= std
    if crop:
        x = x[crop:-crop, crop:-crop]
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    return x.astype(np.uint8)


# -------------------------------------------------------------------------------------------- output


def _grid(patterns: np.ndarray, columns: int, margin: int) -> np.ndarray:
    """Patterns in reading order (keras.io's; the book filled its grid column by column), ``columns`` a row,
    ``margin`` black pixels between them (not around)."""
    count, height, width, channels = patterns.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = np.zeros((rows * height + (rows - 1) * margin, columns * width + (columns - 1) * margin, channels),
                    dtype=patterns.dtype)
    for k, pattern in enumerate(patterns):
        top, left = (k // columns) * (height + margin), (k % columns) * (width + margin)
        grid[top:top + height, left:left + width] = pattern
    return grid


def _log_layer(layer: str, filters: list[int], images: np.ndarray, patterns: np.ndarray, losses: np.ndarray,
               grid_columns: int, margin: int) -> None:
    from mlflow.entities import Metric

    grid = _grid(patterns, grid_columns, margin)
    mlflow.log_image(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, artifact_file=f"filters/{layer}.png")
    log_npz(f"filters/{layer}.npz", filters=np.asarray(filters), patterns=patterns, images=images, losses=losses)

    final = losses[:, -1]
    timestamp = int(1000 * time.time())
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=[
        Metric(f"filter_loss/{layer}", float(value), timestamp, index) for index, value in zip(filters, final)])
    dead = [filters[i] for i in np.flatnonzero(np.all(losses == 0, axis=1))]
    mlflow.log_metric(f"dead_filters/{layer}", len(dead))
    if dead:
        log.warning("%s: %d dead filter(s), activation 0 from the start so their images never moved "
                    "(their tiles show the starting noise): %s", layer, len(dead), dead)
    log.info("%s: %d filters, final loss mean %.4g, max %.4g", layer, len(filters), final.mean(), final.max())
