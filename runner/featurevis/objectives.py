"""Objectives: ``objective(activation) -> [batch]``, what each image of a batch maximizes.

``activation`` is the target's output ``[batch, height, width, channels]``; for the per-filter
objectives its channel i is image i's filter (``target.target_model`` arranges that), so image i's
objective depends on image i alone and the summed objective gives each image its own gradient. Each is a
small dataclass (its fields are its settings, as in ``conf/task/objective/``), called on the activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

Objective = Callable  # activation [batch, h, w, c] -> [batch]


@dataclass(frozen=True)
class Channel:
    """The mean of image i's channel i over the map, ``border`` positions left out at each side."""

    border: int = 0
    per_filter: ClassVar[bool] = True  # image i reads channel i (False: the whole layer)
    needs_map: ClassVar[int] = 1  # the smallest map side it can read (before the border)

    def __call__(self, activation):
        import tensorflow as tf

        if self.border:
            activation = activation[:, self.border:-self.border, self.border:-self.border, :]
        return tf.linalg.diag_part(tf.reduce_mean(activation, axis=[1, 2]))  # [image, channel] -> its own


@dataclass(frozen=True)
class Neuron:
    """Image i's channel i at the centre of the map (``height // 2, width // 2``)."""

    border: ClassVar[int] = 0
    per_filter: ClassVar[bool] = True
    needs_map: ClassVar[int] = 2  # a centre that is not the whole map

    def __call__(self, activation):
        import tensorflow as tf

        height, width = activation.shape[1:3]
        return tf.linalg.diag_part(activation[:, height // 2, width // 2, :])


@dataclass(frozen=True)
class Layer:
    """DeepDream's objective: the mean square of the whole layer (every channel), for each image."""

    border: ClassVar[int] = 0
    per_filter: ClassVar[bool] = False
    needs_map: ClassVar[int] = 1

    def __call__(self, activation):
        import tensorflow as tf

        return tf.reduce_mean(tf.square(activation), axis=[1, 2, 3])


@dataclass(frozen=True)
class Diversity:
    """Minus image i's mean cosine similarity to the other images, between the Gram matrices of their
    activations (Olah 2017, "Diversity"): added with a weight, it pushes the batch's images apart."""

    def __call__(self, activation):
        import tensorflow as tf

        count = activation.shape[0]
        grams = tf.einsum("bhwc,bhwd->bcd", activation, activation)
        flat = tf.math.l2_normalize(tf.reshape(grams, [count, -1]), axis=1)
        similarity = tf.matmul(flat, flat, transpose_b=True)
        return -(tf.reduce_sum(similarity, axis=1) - tf.linalg.diag_part(similarity)) / (count - 1)


def weighted_sum(terms: Sequence[tuple[float, Objective]]) -> Objective:
    """``sum(weight * term(activation))``: objectives add with weights."""
    def objective(activation):
        return sum(weight * term(activation) for weight, term in terms)

    return objective
