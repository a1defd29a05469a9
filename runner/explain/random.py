"""Baseline ``random``: a seeded uniform map, the floor any attribution must beat (e.g. in deletion/insertion
or pointing-game benchmarks).

    cells=None:  M_ij ~ U(0, 1), one value per pixel (Quantus' "Control Var. Random Uniform")
    cells=n:     an n x n grid of U(0, 1) values, upsampled bilinearly to the input, as a CAM of an n x n
                 layer is (pytorch-grad-cam's RandomCAM is also at the layer's resolution)

The same seed gives the same map. Which one is the fair floor depends on the map it is compared with: a
per-pixel map deletes scattered pixels, which wrecks a photo at once (docs/faithfulness.md, "the random
baseline"); a CAM deletes contiguous regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from runner.explain.base import InputGradient
from runner.validation import bounded


@dataclass
class RandomMap(InputGradient):
    name = "random"
    seed: int = 0
    cells: Optional[int] = bounded(None, ge=1)  # None: per pixel; n: an n x n grid (MobileNetV2's CAMs: 7)

    def compute(self, engine, images, requested):
        import tensorflow as tf

        probabilities, targets, scores = self.first_pass(engine, images, requested)
        if self.cells is None:
            uniform = tf.random.stateless_uniform(tf.shape(images)[:3], seed=(self.seed, 0))
        else:
            grid = tf.random.stateless_uniform((tf.shape(images)[0], self.cells, self.cells, 1), seed=(self.seed, 0))
            uniform = tf.image.resize(grid, tf.shape(images)[1:3], method="bilinear")[..., 0]
        return {"raw": uniform, "probabilities": probabilities, "targets": targets, "scores": scores}


METHOD = RandomMap
