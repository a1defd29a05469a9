"""XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of
CNNs", BMVC, arXiv:2008.02312).

    w_c = sum_ij (A_ijc / sum_ab A_abc) dS/dA_ijc        L = ReLU(sum_c w_c A_c)

The gradients averaged with the activations' own spatial distribution as weights (sensitivity and
conservation axioms).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import GradientCam


@dataclass
class XGradCAM(GradientCam):
    name = "xgradcam"

    def combine(self, features, gradients):
        import tensorflow as tf

        share = tf.math.divide_no_nan(features, tf.reduce_sum(features, axis=(1, 2), keepdims=True))
        channel_weights = tf.reduce_sum(share * gradients, axis=(1, 2))
        return tf.einsum("bhwc,bc->bhw", features, channel_weights)


METHOD = XGradCAM
