"""Lucid's redirected ReLU gradient (``lucid.misc.redirected_relu_grad``), for the first steps of an
ascent: where an image's gradient through a ReLU is 0 everywhere (the unit is off on the whole image,
as on a gray start), the upstream gradient passes anyway, except where it would push an input that
is already below the ReLU's floor lower (or one above a ReLU6's ceiling higher). A filter whose ReLU
zeroes it from the start can then climb; after those steps the true gradient takes over.

Signs are the ascent's: ``dy`` is the objective's gradient and the step moves along ``+dy`` (Lucid
descends a loss, so its ``grad > 0`` is our ``dy < 0``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def redirected_gradient(x, y, passed, dy):
    """Per image: ``passed`` (the activation's own gradient) where any of it is non-zero, else ``dy``
    with the entries that push a saturated input further out (below: ``x < y``, ``dy < 0``; above:
    ``x > y``, ``dy > 0``) set to 0."""
    import tensorflow as tf

    outward = ((x < y) & (dy < 0)) | ((x > y) & (dy > 0))
    redirected = tf.where(outward, tf.zeros_like(dy), dy)
    flat = tf.reshape(passed, [tf.shape(passed)[0], -1])
    through = tf.reduce_any(flat != 0, axis=1)
    through = tf.reshape(through, tf.concat([tf.shape(through), tf.ones([tf.rank(dy) - 1], tf.int32)], 0))
    return tf.where(through, passed, redirected)


def redirected_activation(activation, name: str) -> "keras.layers.Layer":
    """A layer computing ``activation`` whose gradient is :func:`redirected_gradient`."""
    import keras
    import tensorflow as tf

    class RedirectedActivation(keras.layers.Layer):
        def call(self, x):
            @tf.custom_gradient
            def redirected(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = activation(x)

                def gradient(dy):
                    return redirected_gradient(x, y, tape.gradient(y, x, output_gradients=dy), dy)

                return y, gradient

            return redirected(x)

        def compute_output_shape(self, input_shape):
            return input_shape

    return RedirectedActivation(name=name)


def redirected_clone(model: "keras.Model") -> "keras.Model":
    """A copy of ``model`` whose ReLUs (layers, and ReLUs folded into convolutions) have the redirected
    gradient; every other layer is ``model``'s own (weights shared)."""
    from runner.explain.surgery import clone_with_relus

    return clone_with_relus(model, redirected_activation)
