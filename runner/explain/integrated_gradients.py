"""Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks", ICML,
arXiv:1703.01365).

    IG_ijc = (x - x')_ijc * integral_0^1 dS/dx (x' + a (x - x'))_ijc da     (trapezoid rule, ``steps`` intervals)
    M_ij = sum_c IG_ijc  (signed; the picture shows its magnitude)

Completeness: sum IG = S(x) - S(x'); its relative error per image is returned as the diagnostic
``completeness_error`` (the task logs it as a metric). Baselines x': ``black`` (zeros), ``blur`` (a Gaussian
blur of x, sigma ``blur_sigma`` pixels) or ``noise`` (uniform over x's range, seeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from runner.errors import ConvlabError
from runner.explain.base import InputGradient
from runner.validation import bounded


class Baseline(str, Enum):
    black = "black"
    blur = "blur"
    noise = "noise"

    def __str__(self) -> str:  # the value, as configs and MLflow params show it
        return self.value


@dataclass
class IntegratedGradients(InputGradient):
    name = "integrated_gradients"
    steps: int = bounded(32, ge=1)
    baseline: Baseline = Baseline.black
    blur_sigma: float = 10.0  # pixels, for baseline=blur
    seed: int = 0  # baseline=noise

    def validate(self):
        if self.steps < 1:
            raise ConvlabError(f"task.method.steps={self.steps}: the path integral needs at least one step",
                               fix="use task.method.steps=32 (the paper: 20 to 300)")

    def compute(self, engine, images, requested):
        import tensorflow as tf

        probabilities, targets, scores = self.first_pass(engine, images, requested)
        start = self.baseline_of(images)
        delta = images - start
        total = tf.zeros_like(images)
        for step in tf.range(self.steps + 1):
            fraction = tf.cast(step, tf.float32) / self.steps
            gradients, _ = engine.input_gradients(start + fraction * delta, targets)
            weight = tf.where((step == 0) | (step == self.steps), 0.5, 1.0)
            total += weight * gradients
        attributions = delta * total / self.steps
        _, baseline_scores = engine.input_gradients(start, targets)
        expected = scores - baseline_scores
        summed = tf.reduce_sum(attributions, axis=(1, 2, 3))
        error = tf.abs(summed - expected) / tf.maximum(tf.abs(expected), 1e-12)
        signed = tf.reduce_sum(attributions, axis=-1)
        return {"raw": signed, "signed": signed, "probabilities": probabilities, "targets": targets,
                "scores": scores, "completeness_error": error, "score_difference": expected}

    def baseline_of(self, images):
        import tensorflow as tf

        baseline = Baseline(self.baseline)
        if baseline is Baseline.black:
            return tf.zeros_like(images)
        if baseline is Baseline.noise:
            low = tf.reduce_min(images, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(images, axis=(1, 2, 3), keepdims=True)
            uniform = tf.random.stateless_uniform(tf.shape(images), seed=(self.seed, 1))
            return low + uniform * (high - low)
        return gaussian_blur(images, self.blur_sigma)


def gaussian_blur(images, sigma: float):
    """Each channel convolved with a separable Gaussian of ``sigma`` pixels (edges mirrored)."""
    import numpy as np
    import tensorflow as tf

    radius = max(1, min(int(3 * sigma), images.shape[1], images.shape[2]))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = tf.constant(kernel / kernel.sum())
    channels = images.shape[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    rows = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), (1, 1, channels, 1))
    cols = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), (1, 1, channels, 1))
    blurred = tf.nn.depthwise_conv2d(padded, rows, (1, 1, 1, 1), "VALID")
    return tf.nn.depthwise_conv2d(blurred, cols, (1, 1, 1, 1), "VALID")


METHOD = IntegratedGradients
