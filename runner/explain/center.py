"""Baseline ``center``: a centred Gaussian, the photographer's prior (objects sit in the middle).

    M_ij = exp(-((i - ci)^2 + (j - cj)^2) / (2 (sigma * min(H, W))^2))
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import InputGradient


@dataclass
class CenterMap(InputGradient):
    name = "center"
    sigma: float = 0.25  # a fraction of the image's shorter side

    def compute(self, engine, images, requested):
        import tensorflow as tf

        probabilities, targets, scores = self.first_pass(engine, images, requested)
        height, width = images.shape[1], images.shape[2]
        rows = tf.range(height, dtype=tf.float32) - (height - 1) / 2
        cols = tf.range(width, dtype=tf.float32) - (width - 1) / 2
        spread = self.sigma * min(height, width)
        gaussian = tf.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * spread ** 2))
        return {"raw": tf.tile(gaussian[None], (tf.shape(images)[0], 1, 1)), "probabilities": probabilities,
                "targets": targets, "scores": scores}


METHOD = CenterMap
