"""Baseline ``random``: a seeded uniform map over the input, the floor any attribution must beat
(e.g. in deletion/insertion or pointing-game benchmarks).

    M_ij ~ U(0, 1)   (the same seed gives the same map)
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import InputGradient


@dataclass
class RandomMap(InputGradient):
    name = "random"
    seed: int = 0

    def compute(self, engine, images, requested):
        import tensorflow as tf

        probabilities, targets, scores = self.first_pass(engine, images, requested)
        uniform = tf.random.stateless_uniform(tf.shape(images)[:3], seed=(self.seed, 0))
        return {"raw": uniform, "probabilities": probabilities, "targets": targets, "scores": scores}


METHOD = RandomMap
