"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", arXiv:1610.02391; the book's section 5.4.3).

    w_c = mean_ij dS/dA_ijc        L = ReLU(sum_c w_c A_c)

The gradient of the class score S over the layer's activations A, averaged over space, weights the channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import GradientCam


@dataclass
class GradCAM(GradientCam):
    name = "gradcam"

    def combine(self, features, gradients):
        import tensorflow as tf

        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        return tf.einsum("bhwc,bc->bhw", features, channel_weights)


METHOD = GradCAM
