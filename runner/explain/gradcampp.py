"""Grad-CAM++ (Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
Networks", WACV, arXiv:1710.11063).

    a_ijc = g_ijc^2 / (2 g_ijc^2 + sum_ab A_abc g_ijc^3)     (0 where g = 0)
    w_c   = sum_ij (a_ijc / sum_ab a_abc) ReLU(g_ijc)          L = ReLU(sum_c w_c A_c)

with g = dS/dA (the paper's exp(S) factor cancels in a). The alphas are normalized to sum 1 over space,
as tf-keras-vis does, so that Grad-CAM++ equals Grad-CAM where the gradients are positive and constant over
space (the paper's reduction for a = 1/Z); pytorch-grad-cam leaves them unnormalized.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import GradientCam


@dataclass
class GradCAMPlusPlus(GradientCam):
    name = "gradcampp"

    def combine(self, features, gradients):
        import tensorflow as tf

        squared, cubed = gradients ** 2, gradients ** 3
        spatial_sum = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
        denominator = 2.0 * squared + spatial_sum * cubed
        alphas = tf.math.divide_no_nan(squared, denominator)
        alphas = tf.math.divide_no_nan(alphas, tf.reduce_sum(alphas, axis=(1, 2), keepdims=True))
        channel_weights = tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=(1, 2))
        return tf.einsum("bhwc,bc->bhw", features, channel_weights)


METHOD = GradCAMPlusPlus
