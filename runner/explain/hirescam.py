"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of
convolutional neural networks", arXiv:2011.08891).

    L_ij = ReLU(sum_c dS/dA_ijc * A_ijc)

The gradient multiplies the activations cell by cell instead of being averaged first: for a model whose
head is global average pooling + linear it is exactly the score's decomposition over cells (times HW).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import GradientCam


@dataclass
class HiResCAM(GradientCam):
    name = "hirescam"

    def combine(self, features, gradients):
        import tensorflow as tf

        return tf.reduce_sum(features * gradients, axis=-1)


METHOD = HiResCAM
