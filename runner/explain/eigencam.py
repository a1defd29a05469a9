"""Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components",
IJCNN, arXiv:2008.00299).

    X = A reshaped to (cells, channels), centred per channel;  X = U S V^T
    L = ReLU(X v_1)   (the cells' projection on the first principal direction)

Gradient-free and class-agnostic: the same map for every target. A principal direction's sign is
arbitrary (SVD may return v or -v); the projection is oriented to correlate positively with the
activations summed over channels, so the map does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import Method
from runner.explain.targets import chosen_targets


@dataclass
class EigenCAM(Method):
    name = "eigencam"

    def compute(self, engine, images, requested):
        import tensorflow as tf

        features, probabilities, class_scores = engine.forward(images)
        targets = chosen_targets(requested, probabilities)
        return {"raw": principal_map(features), "probabilities": probabilities, "targets": targets,
                "scores": tf.gather(class_scores, targets, batch_dims=1)}


def principal_map(features):
    """(images, h, w) projection of each image's centred cells on its first principal direction, oriented."""
    import tensorflow as tf

    _, height, width, channels = features.shape
    cells = tf.reshape(features, (-1, height * width, channels))
    centred = cells - tf.reduce_mean(cells, axis=1, keepdims=True)
    _, _, directions = tf.linalg.svd(centred)  # directions: (images, channels, channels), columns v_k
    projection = tf.einsum("bnc,bc->bn", centred, directions[:, :, 0])
    return tf.reshape(oriented(projection, tf.reduce_sum(centred, axis=-1)), (-1, height, width))


def oriented(projection, reference):
    """``projection`` (images, cells) times the sign that makes it correlate positively with ``reference``."""
    import tensorflow as tf

    sign = tf.where(tf.reduce_sum(projection * reference, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    return projection * sign


METHOD = EigenCAM
