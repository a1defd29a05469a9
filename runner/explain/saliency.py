"""Vanilla saliency (Simonyan et al. 2014, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", arXiv:1312.6034).

    M_ij = max_c |dS/dx_ijc|

Shown as a gray magnitude; ``signed`` keeps sum_c dS/dx_ijc for a diverging colormap.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import InputGradient


@dataclass
class Saliency(InputGradient):
    name = "saliency"

    def compute(self, engine, images, requested):
        import tensorflow as tf

        gradients, probabilities, targets, scores = engine.input_pass(images, requested)
        return {"raw": tf.reduce_max(tf.abs(gradients), axis=-1), "signed": tf.reduce_sum(gradients, axis=-1),
                "probabilities": probabilities, "targets": targets, "scores": scores}


METHOD = Saliency
