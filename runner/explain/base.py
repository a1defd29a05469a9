"""The hooks a method implements, and the two families the engine runs.

A method is a small dataclass (its settings are its fields, the same as its config schema) with:

* ``space``: ``"layer"`` (a map over a feature map's cells, needs a spatial layer) or ``"input"`` (a map over
  the input pixels; a layer would be ignored, so giving one is an error);
* ``compute(engine, images, requested)``: the tensors of one batch, traced once into the engine's single
  ``tf.function``. It returns ``raw`` (images, height, width), ``probabilities``, ``targets``, ``scores``
  and optional ``signed`` (input space: the signed map before taking magnitudes) and diagnostics;
* ``validate()``: settings wrong whatever the model (0 samples); ``check(engine)``: settings that only
  the model can judge (e.g. more channels than the layer has).

:class:`GradientCam` needs only ``combine(features, gradients)``: pytorch-grad-cam's ``get_cam_weights``
override, as one function of both tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from runner.explain.targets import chosen_targets

if TYPE_CHECKING:
    from runner.explain.engine import Engine


@dataclass
class Method:
    name: ClassVar[str]
    space: ClassVar[str] = "layer"
    #: how a raw map becomes a [0, 1] picture: "relu" (CAMs: max(raw, 0) / peak) or "magnitude" (|raw| / peak)
    normalization: ClassVar[str] = "relu"

    def validate(self) -> None:
        """Raise ConvlabError for settings wrong whatever the model (before any model is built)."""

    def check(self, engine: "Engine") -> None:
        """Raise ConvlabError for settings the model rules out."""

    def setup(self, engine: "Engine") -> None:
        """Build what the method needs besides the engine's gradient model (once, before tracing)."""

    def compute(self, engine: "Engine", images, requested) -> dict:
        raise NotImplementedError


@dataclass
class GradientCam(Method):
    """A CAM from the layer's features and the gradient of each image's score with respect to them."""

    def compute(self, engine, images, requested):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            features, probabilities, class_scores = engine.forward(images)
            targets = chosen_targets(requested, probabilities)
            scores = tf.gather(class_scores, targets, batch_dims=1)
            # each image's score depends on its own features only: one gradient of the sum serves them all
            total = tf.reduce_sum(scores)
        gradients = tape.gradient(total, features)
        return {"raw": self.combine(features, gradients), "probabilities": probabilities,
                "targets": targets, "scores": scores}

    def combine(self, features, gradients):
        """(images, height, width) from features and gradients, both (images, height, width, channels)."""
        raise NotImplementedError


@dataclass
class InputGradient(Method):
    """A map over the input pixels from gradients of the score with respect to the input."""

    space: ClassVar[str] = "input"
    normalization: ClassVar[str] = "magnitude"

    def first_pass(self, engine, images, requested):
        """Probabilities, targets and scores of the clean images (the targets stay fixed for later passes)."""
        import tensorflow as tf

        _, probabilities, class_scores = engine.forward(images)
        targets = chosen_targets(requested, probabilities)
        return probabilities, targets, tf.gather(class_scores, targets, batch_dims=1)
