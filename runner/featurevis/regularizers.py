"""Regularizers: ``penalty(images) -> [batch]``, what each image pays for looking unnatural, subtracted
from its objective with a weight (``engine.Recipe.regularizers``). They read the parameterization's
pixels before the transforms, in [0, 1] units (pixels / 255, Lucid's image range), and are means rather
than Lucid's sums, so a weight means the same at any image size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Regularizer = Callable  # pixels [batch, h, w, c] in [0, 255] -> [batch]

PIXEL_MAX = 255.0
#: Lucid's blur kernel: 1 at the centre, 0.5 around it, normalized by its sum under the image
BLUR_KERNEL = np.array([[0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 0.5]], np.float32)


def _units(images):
    return images / PIXEL_MAX


def l1(center: float = 0.5) -> Regularizer:
    """Lucid's ``L1(constant=.5)``: the mean ``|x - center|``, pulling pixels toward gray."""
    import tensorflow as tf

    def penalty(images):
        return tf.reduce_mean(tf.abs(_units(images) - center), axis=[1, 2, 3])

    return penalty


def total_variation() -> Regularizer:
    """The mean absolute difference between vertical neighbours plus that between horizontal ones (0 for a
    constant image, 2 for a 0/1 checkerboard): ``tf.image.total_variation`` as means."""
    import tensorflow as tf

    def penalty(images):
        x = _units(images)
        vertical = tf.reduce_mean(tf.abs(x[:, 1:] - x[:, :-1]), axis=[1, 2, 3])
        horizontal = tf.reduce_mean(tf.abs(x[:, :, 1:] - x[:, :, :-1]), axis=[1, 2, 3])
        return vertical + horizontal

    return penalty


def blurred(images):
    """Each channel convolved with ``BLUR_KERNEL``, divided by the kernel's weight inside the image (so
    the borders are not darkened and a constant image is its own blur)."""
    import tensorflow as tf

    channels = images.shape[-1]
    kernel = tf.constant(np.tile(BLUR_KERNEL[:, :, None, None], (1, 1, channels, 1)))

    def convolve(x):
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")

    return convolve(images) / convolve(tf.ones_like(images[:1]))


def blur() -> Regularizer:
    """Lucid's ``blur_input_each_step``: ``0.5 * mean((x - stop_gradient(blur(x)))^2)``; its gradient
    moves each pixel toward its blurred value, so each step blurs the image a little."""
    import tensorflow as tf

    def penalty(images):
        x = _units(images)
        return 0.5 * tf.reduce_mean(tf.square(x - tf.stop_gradient(blurred(x))), axis=[1, 2, 3])

    return penalty


def weighted(terms) -> Regularizer | None:
    """``sum(weight * penalty(images))`` over the terms with a weight other than 0, or None if none."""
    chosen = [(weight, term) for weight, term in terms if weight]
    if not chosen:
        return None

    def penalty(images):
        return sum(weight * term(images) for weight, term in chosen)

    return penalty


def penalty(l1_weight: float = 0.0, l1_center: float = 0.5, total_variation_weight: float = 0.0,
            blur_weight: float = 0.0) -> Regularizer | None:
    """The weighted sum of the three (``task.regularizers``), or None when every weight is 0."""
    return weighted([(l1_weight, l1(l1_center)), (total_variation_weight, total_variation()),
                     (blur_weight, blur())])
