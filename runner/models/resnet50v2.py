"""ResNet50V2 (``keras.applications.ResNet50V2``), the model of the keras.io filter-visualization example.

Its ImageNet weights need a network or a filled Keras cache; offline, building fails with a message
naming the offline models. Its "tf"-mode preprocessing (x / 127.5 - 1) is a Rescaling layer inside the
model, so it takes RGB pixels in [0, 255] like every convlab model.
"""

from __future__ import annotations

import os

from runner.errors import ConvlabError
from runner.fetch import sha256_file
from runner.models.base import ModelSpec
from runner.models.imagenet import imagenet_class_names
from runner.models.vgg16 import OFFLINE_ALTERNATIVES, keras_cached_weights

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_IMAGENET_WEIGHTS = {
    True: ("resnet50v2_weights_tf_dim_ordering_tf_kernels.h5", "3ef43a0b657b3be2300d5770ece849e0"),
    False: ("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "fac2f116257151a9d068a22e544a4917"),
}


class ResNet50V2(ModelSpec):
    name = "resnet50v2"
    input_size = (224, 224)

    def __init__(self, weights: str | None = "imagenet", include_top: bool = True):
        if weights not in ("imagenet", None) and not os.path.isfile(weights):
            raise ConvlabError(f"ResNet50V2 weights file {weights} does not exist",
                               fix=f"give the path of an existing weights file, or use {OFFLINE_ALTERNATIVES}")
        self.weights = weights
        self.include_top = include_top
        self.class_names = imagenet_class_names() if include_top else None

    def build(self, input_shape=None, num_classes=None):
        import keras

        if self.include_top and input_shape is not None and tuple(input_shape) != (*self.input_size, 3):
            raise ConvlabError(f"resnet50v2 with its top is built for 224x224 RGB input, not {tuple(input_shape)}",
                               fix="let the model's preprocess() resize the images, or use model.include_top=false")
        # without the top, like keras.io's example: any image size
        inputs = keras.Input(shape=(*self.input_size, 3) if self.include_top else (None, None, 3), name="image")
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")(inputs)
        return keras.applications.ResNet50V2(include_top=self.include_top, weights=self._weights_file(),
                                             input_tensor=scaled, name=self.name)

    def weights_sha256(self) -> str | None:
        weights_file = self._weights_file()
        return sha256_file(weights_file) if weights_file else None

    def _weights_file(self) -> str | None:
        if self.weights != "imagenet":
            return self.weights
        filename, md5 = _IMAGENET_WEIGHTS[self.include_top]
        return keras_cached_weights(_KERAS_WEIGHTS_URL, filename, md5, "ResNet50V2")
