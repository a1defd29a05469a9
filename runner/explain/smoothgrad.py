"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise", arXiv:1706.03825).

    M_ij = max_c (1/n) sum_k |dS/dx (x + e_k)|_ijc,    e_k ~ N(0, (noise * (max x - min x))^2)

``samples`` noisy copies (seeded), the noise's sigma a fraction of each image's value range; the targets
are the clean images'. With noise 0 it is vanilla saliency.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.errors import ConvlabError
from runner.explain.base import InputGradient
from runner.validation import bounded


@dataclass
class SmoothGrad(InputGradient):
    name = "smoothgrad"
    samples: int = bounded(25, ge=1)
    noise: float = 0.15  # sigma as a fraction of each image's value range (the paper: 10-20 %)
    seed: int = 0

    def validate(self):
        if self.samples < 1:
            raise ConvlabError(f"task.method.samples={self.samples}: SmoothGrad averages at least one sample",
                               fix="use task.method.samples=25 (the paper: 50; 1 with noise=0 is saliency)")
        if self.noise < 0:
            raise ConvlabError(f"task.method.noise={self.noise} is negative",
                               fix="use task.method.noise=0.15 (a fraction of the image's value range)")

    def compute(self, engine, images, requested):
        import tensorflow as tf

        probabilities, targets, scores = self.first_pass(engine, images, requested)
        spread = tf.reduce_max(images, axis=(1, 2, 3), keepdims=True) - tf.reduce_min(images, axis=(1, 2, 3),
                                                                                       keepdims=True)
        magnitude, signed = tf.zeros_like(images), tf.zeros_like(images)
        for sample in tf.range(self.samples):
            noise = tf.random.stateless_normal(tf.shape(images), seed=tf.stack([self.seed, sample]))
            gradients, _ = engine.input_gradients(images + noise * self.noise * spread, targets)
            magnitude += tf.abs(gradients)
            signed += gradients
        return {"raw": tf.reduce_max(magnitude, axis=-1) / self.samples,
                "signed": tf.reduce_sum(signed, axis=-1) / self.samples,
                "probabilities": probabilities, "targets": targets, "scores": scores}


METHOD = SmoothGrad
