"""Objectives: ``objective(activation) -> [batch]``, what each image of a batch maximizes.

``activation`` is the target's output ``[batch, height, width, channels]``; for the per-filter
objectives its channel i is image i's filter (``target.target_model`` arranges that), so image i's
objective depends on image i alone and the summed objective gives each image its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Objective = Callable  # activation [batch, h, w, c] -> [batch]


def channel(border: int = 0) -> Objective:
    """The mean of image i's channel i over the map, ``border`` positions left out at each side."""
    import tensorflow as tf

    def objective(activation):
        if border:
            activation = activation[:, border:-border, border:-border, :]
        return tf.linalg.diag_part(tf.reduce_mean(activation, axis=[1, 2]))  # [image, channel] -> its own

    return objective


def neuron() -> Objective:
    """Image i's channel i at the centre of the map (``height // 2, width // 2``)."""
    import tensorflow as tf

    def objective(activation):
        height, width = activation.shape[1:3]
        return tf.linalg.diag_part(activation[:, height // 2, width // 2, :])

    return objective


def layer() -> Objective:
    """DeepDream's objective: the mean square of the whole layer (every channel), for each image."""
    import tensorflow as tf

    def objective(activation):
        return tf.reduce_mean(tf.square(activation), axis=[1, 2, 3])

    return objective


def diversity() -> Objective:
    """Minus image i's mean cosine similarity to the other images, between the Gram matrices of their
    activations (Olah 2017, "Diversity"): added with a weight, it pushes the batch's images apart."""
    import tensorflow as tf

    def objective(activation):
        count = activation.shape[0]
        grams = tf.einsum("bhwc,bhwd->bcd", activation, activation)
        flat = tf.math.l2_normalize(tf.reshape(grams, [count, -1]), axis=1)
        similarity = tf.matmul(flat, flat, transpose_b=True)
        return -(tf.reduce_sum(similarity, axis=1) - tf.linalg.diag_part(similarity)) / (count - 1)

    return objective


def weighted_sum(terms: Sequence[tuple[float, Objective]]) -> Objective:
    """``sum(weight * term(activation))``: objectives add with weights."""
    def objective(activation):
        return sum(weight * term(activation) for weight, term in terms)

    return objective
