"""The book's data augmentation as one Keras preprocessing layer: flip, rotation, shift, shear and zoom
composed into one affine matrix per image and applied in a single resampling, as Keras'
``ImageDataGenerator`` does (the chain ``RandomFlip`` -> ``RandomRotation`` -> ``RandomTranslation`` ->
``RandomShear`` -> ``RandomZoom`` resamples four times: four times the work and the interpolation blur).

Factors mean what they mean for those Keras layers: a number ``f`` draws uniformly from ``[-f, f]``, a pair
``(low, high)`` from ``[low, high]``:

* ``rotation``: a fraction of a full turn (0.111: ±40°)
* ``translation``: a fraction of the image's height and width (0.2: ±20 %)
* ``zoom``: the zoom factor minus 1, the same for both axes (0.2: [0.8, 1.2]; > 1 shows more of the image)
* ``shear``: the tangent of the x-shear angle (the book's ``shear_range=0.2`` is in degrees: 0.0035)
* ``flip``: ``horizontal``, ``vertical``, ``horizontal_and_vertical`` or None, each axis with probability ½

The transform runs on TensorFlow's ``ImageProjectiveTransformV3`` (``keras.ops.image.affine_transform``),
in a ``tf.data`` pipeline or inside a model; outside training it passes images through.
"""

from __future__ import annotations

import math

import keras
from keras import ops

FLIPS = (None, "horizontal", "vertical", "horizontal_and_vertical")
FILL_MODES = ("nearest", "reflect", "wrap", "constant")


def _bounds(factor, name: str) -> tuple[float, float]:
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2:
            raise ValueError(f"{name}={factor!r}: give a number f (for [-f, f]) or a pair (low, high)")
        low, high = sorted(float(value) for value in factor)
        return low, high
    return -abs(float(factor)), abs(float(factor))


@keras.saving.register_keras_serializable(package="convlab")
class AffineAugmentation(keras.layers.Layer):
    """Random flip + rotation + translation + shear + zoom, one composed warp per image (see the module)."""

    def __init__(self, rotation=0.0, translation=0.0, zoom=0.0, shear=0.0, flip=None, fill_mode="nearest",
                 fill_value=0.0, interpolation="bilinear", seed=None, **kwargs):
        super().__init__(**kwargs)
        if flip not in FLIPS:
            raise ValueError(f"flip={flip!r}: expected one of {FLIPS}")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode={fill_mode!r}: expected one of {FILL_MODES}")
        self.rotation, self.translation, self.zoom, self.shear = rotation, translation, zoom, shear
        self.flip, self.fill_mode, self.fill_value = flip, fill_mode, fill_value
        self.interpolation, self.seed = interpolation, seed
        self._ranges = {name: _bounds(value, name) for name, value in
                        (("rotation", rotation), ("translation", translation), ("zoom", zoom), ("shear", shear))}
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def random_matrices(self, batch_size, height, width):
        """``batch_size`` composed transforms, each the 8 entries ``a0 a1 a2 b0 b1 b2 c0 c1`` of the matrix
        that maps an output pixel (x, y) to the input point it samples (TensorFlow's projective-transform
        convention)."""
        def draw(name, shape=(batch_size,)):
            low, high = self._ranges[name]
            if low == high:
                return ops.full(shape, low)
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)

        angle = draw("rotation") * (2 * math.pi)
        shift_x = draw("translation") * ops.cast(width, "float32")
        shift_y = draw("translation") * ops.cast(height, "float32")
        zoom = 1.0 + draw("zoom")
        shear = draw("shear")
        flip_x, flip_y = (self._flips(batch_size) if self.flip and axis in self.flip else ops.ones((batch_size,))
                          for axis in ("horizontal", "vertical"))
        return compose(angle, shift_x, shift_y, zoom, shear, flip_x, flip_y, height, width)

    def _flips(self, batch_size):
        """-1 (flip) or +1 per image, each with probability ½."""
        coin = keras.random.uniform((batch_size,), seed=self.seed_generator)
        return ops.where(coin < 0.5, -1.0, 1.0)

    def call(self, images, training=True):
        images = ops.cast(images, self.compute_dtype)
        if not training:
            return images
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        shape = ops.shape(images)
        matrices = self.random_matrices(shape[0], shape[1], shape[2])
        warped = ops.image.affine_transform(images, matrices, interpolation=self.interpolation,
                                            fill_mode=self.fill_mode, fill_value=self.fill_value)
        return ops.squeeze(warped, 0) if unbatched else warped

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "translation": self.translation,
                "zoom": self.zoom, "shear": self.shear, "flip": self.flip, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "interpolation": self.interpolation, "seed": self.seed}


def compose(angle, shift_x, shift_y, zoom, shear, flip_x, flip_y, height, width):
    """The output -> input matrices (flattened to 8 entries) of flip, then rotation by ``angle`` (radians),
    translation by (``shift_x``, ``shift_y``) pixels, x-shear by ``shear`` (a tangent) and zoom by ``zoom``,
    all about the image centre, per image: the product F R T S Z, as the Keras layers in that order
    compose (each samples its input at its own matrix times the output pixel)."""
    cx = (ops.cast(width, "float32") - 1.0) / 2.0
    cy = (ops.cast(height, "float32") - 1.0) / 2.0
    one, zero = ops.ones_like(angle), ops.zeros_like(angle)

    def matrix(a0, a1, a2, b0, b1, b2):
        rows = [ops.stack([a0, a1, a2], -1), ops.stack([b0, b1, b2], -1), ops.stack([zero, zero, one], -1)]
        return ops.stack(rows, -2)  # [batch, 3, 3]

    cos, sin = ops.cos(angle), ops.sin(angle)
    flip = matrix(flip_x, zero, (1 - flip_x) * cx, zero, flip_y, (1 - flip_y) * cy)
    rotation = matrix(cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos)
    translation = matrix(one, zero, -shift_x, zero, one, -shift_y)
    shearing = matrix(one, shear, -shear * cy, zero, one, zero)
    zooming = matrix(zoom, zero, (1 - zoom) * cx, zero, zoom, (1 - zoom) * cy)
    product = flip
    for step in (rotation, translation, shearing, zooming):
        product = ops.matmul(product, step)
    return ops.reshape(product, (-1, 9))[:, :8]
