"""The book's MNIST convnet (Deep Learning with Python, 5.1)."""

from __future__ import annotations

from runner.errors import ConvlabError
from runner.models.base import ModelSpec
from runner.models.small_convnet import classifier_head


class MnistConvnet(ModelSpec):
    name = "mnist_convnet"

    def build(self, input_shape=None, num_classes=None):
        import keras
        from keras import layers

        if input_shape is None or num_classes is None:
            raise ConvlabError("mnist_convnet is built for a dataset: input_shape and num_classes are needed")
        inputs = keras.Input(shape=input_shape, name="image")
        x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
        x = layers.Conv2D(32, 3, activation="relu", name="conv2d_1")(x)
        x = layers.MaxPooling2D(2, name="max_pooling2d_1")(x)
        x = layers.Conv2D(64, 3, activation="relu", name="conv2d_2")(x)
        x = layers.MaxPooling2D(2, name="max_pooling2d_2")(x)
        x = layers.Conv2D(64, 3, activation="relu", name="conv2d_3")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(64, activation="relu", name="dense")(x)
        outputs = classifier_head(num_classes)(x)
        return keras.Model(inputs, outputs, name=self.name)
