"""LayerCAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
IEEE TIP 30).

    L_ij = ReLU(sum_c ReLU(dS/dA_ijc) * A_ijc)

Only the positive gradients weight each cell, so the map stays meaningful at shallow layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import GradientCam


@dataclass
class LayerCAM(GradientCam):
    name = "layercam"

    def combine(self, features, gradients):
        import tensorflow as tf

        return tf.reduce_sum(tf.nn.relu(gradients) * features, axis=-1)


METHOD = LayerCAM
