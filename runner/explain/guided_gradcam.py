"""Guided Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391, section 3.1).

    G = guided backprop dx (images, H, W, C) * upsample(Grad-CAM)  (bilinear, at the input's size)
    M_ij = max_c |G_ijc|

Needs the Grad-CAM layer (``layer``); the guided gradients come from a clone (the model is not modified).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runner.explain.gradcam import GradCAM
from runner.explain.guided_backprop import GuidedBackprop


@dataclass
class GuidedGradCAM(GuidedBackprop):
    name = "guided_gradcam"
    space: ClassVar[str] = "layer"  # needs Grad-CAM's layer; the map itself is at the input's resolution

    def compute(self, engine, images, requested):
        import tensorflow as tf

        cam = GradCAM().compute(engine, images, requested)
        gradients = self.guided_gradients(engine, images, cam["targets"])
        upsampled = tf.image.resize(tf.nn.relu(cam["raw"])[..., None], images.shape[1:3], method="bilinear")
        guided = gradients * upsampled
        return {**cam, "raw": tf.reduce_max(tf.abs(guided), axis=-1), "signed": tf.reduce_sum(guided, axis=-1)}


METHOD = GuidedGradCAM
