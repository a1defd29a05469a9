"""The book's cats-vs-dogs convnet (Deep Learning with Python, 5.2)."""

from __future__ import annotations

from runner.errors import ConvlabError
from runner.explain.targets import is_binary, output_units
from runner.models.base import ModelSpec

#: smallest input side for which four (3x3 valid conv + 2x2 pool) stages leave a feature map
MIN_INPUT_SIDE = 46


class SmallConvnet(ModelSpec):
    name = "small_convnet"

    def __init__(self, dropout: float = 0.5):
        self.dropout = dropout

    def build(self, input_shape=None, num_classes=None):
        import keras
        from keras import layers

        if input_shape is None or num_classes is None:
            raise ConvlabError("small_convnet is built for a dataset: input_shape and num_classes are needed")
        if min(input_shape[:2]) < MIN_INPUT_SIDE:
            raise ConvlabError(
                f"small_convnet needs inputs of at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} px, got "
                f"{input_shape[0]}x{input_shape[1]}",
                fix=f"set dataset.image_size={MIN_INPUT_SIDE} or more (the book uses 150)",
            )
        inputs = keras.Input(shape=input_shape, name="image")
        x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
        for index, filters in enumerate((32, 64, 128, 128), start=1):
            x = layers.Conv2D(filters, 3, activation="relu", name=f"conv2d_{index}")(x)
            x = layers.MaxPooling2D(2, name=f"max_pooling2d_{index}")(x)
        x = layers.Flatten(name="flatten")(x)
        if self.dropout:
            x = layers.Dropout(self.dropout, name="dropout")(x)
        x = layers.Dense(512, activation="relu", name="dense")(x)
        outputs = classifier_head(num_classes)(x)
        return keras.Model(inputs, outputs, name=self.name)


def classifier_head(num_classes: int):
    """One sigmoid unit for two classes (the book's binary head), else a softmax over the classes."""
    from keras import layers

    if is_binary(output_units(num_classes)):
        return layers.Dense(1, activation="sigmoid", name="predictions")
    return layers.Dense(num_classes, activation="softmax", name="predictions")
