"""Guided Backpropagation (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net",
arXiv:1412.6806).

    dx = backprop of dS through the network, where every ReLU passes back f'(x) * max(dy, 0)
    M_ij = max_c |dx_ijc|

The ReLU gradient is overridden on a clone (:func:`runner.explain.surgery.guided_clone`): the user's model
is never modified. Beware (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): the pictures depend
little on the model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.explain.base import InputGradient


@dataclass
class GuidedBackprop(InputGradient):
    name = "guided_backprop"

    def setup(self, engine):
        from runner.explain.surgery import guided_clone
        from runner.layers import feature_model

        replace = {engine.head.path: engine.head.replacement} if engine.head else None
        taps = [engine.head.path] if engine.head else []
        self.guided = feature_model(guided_clone(engine.model), taps, include_output=True, replace=replace)

    def guided_gradients(self, engine, images, targets):
        gradients, _ = engine.input_gradients(images, targets, model=self.guided)
        return gradients

    def compute(self, engine, images, requested):
        import tensorflow as tf

        # the guided clone computes the same outputs (only its gradients differ): one pass gives both
        gradients, probabilities, targets, scores = engine.input_pass(images, requested, model=self.guided)
        return {"raw": tf.reduce_max(tf.abs(gradients), axis=-1), "signed": tf.reduce_sum(gradients, axis=-1),
                "probabilities": probabilities, "targets": targets, "scores": scores}


METHOD = GuidedBackprop
