"""One compiled engine for every attribution method.

The gradient model is built once per (model, layer, score) with ``runner.layers.feature_model`` (so nested
``base/layer`` paths work): it returns the layer's features, the logits when the score is the logit (the
output layer's linear part, :func:`runner.explain.surgery.logit_head`) and the model's output. Each method's
``compute`` is traced into one ``tf.function``; every batch of images is one call of it. Normalization
(ReLU or magnitude, then / peak) and upsampling are done here for every method.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from runner.explain.base import Method
from runner.explain.targets import Score, class_count, class_logits, class_probabilities, requested_targets

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """One batch explained. ``raw``: (images, h, w) the method's map before normalization (a CAM at the
    layer's resolution, an input-space map at the input's); ``maps``: the same in [0, 1]."""

    method: str
    layer: str | None
    score: str  # what was differentiated, described
    raw: np.ndarray
    maps: np.ndarray
    probabilities: np.ndarray  # (images, classes); one sigmoid unit p becomes [1 - p, p]
    targets: np.ndarray  # (images,) the class explained in each image
    scores: np.ndarray  # (images,) that class's score
    signed: np.ndarray | None = None  # input space: the signed map, for a diverging colormap
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)  # per-image values, e.g. IG completeness
    seconds: float = 0.0  # wall time of the batch

    def upsampled(self, height: int, width: int) -> np.ndarray:
        """``maps`` resized (bilinear) to ``height`` x ``width``."""
        return upsample(self.maps, height, width)


class Engine:
    """``method`` on ``model`` at ``layer`` (a path; None for input-space methods), differentiating ``score``."""

    def __init__(self, model: "keras.Model", method: Method, layer: str | None, score: Score | str):
        from runner.layers import feature_model

        self.model, self.method, self.layer = model, method, layer
        self.score = Score(score)
        self.classes = class_count(model.output_shape[-1])  # Explainer checked it is a classifier
        self.head = self._head(model)
        replace = {self.head.path: self.head.replacement} if self.head else None
        taps = ([layer] if layer else []) + ([self.head.path] if self.head else [])
        self.gradient_model = feature_model(model, taps, include_output=True, replace=replace)
        method.check(self)
        method.setup(self)
        self._compiled = None

    def _head(self, model):
        from runner.explain import surgery

        return surgery.logit_head(model) if self.score is Score.logit else None  # a classifier's probabilities

    def describe_score(self) -> str:
        from runner.explain import surgery

        if self.head:
            return self.head.description
        head = surgery.output_layer(self.model)
        return f"probability: output of {head.name!r} ({surgery.activation_name(head)})"

    # ------------------------------------------------------------------------- pieces methods trace

    def forward(self, images, model=None):
        """(features or None, probabilities, class scores) of a batch, in a compiled pass."""
        outputs = (model or self.gradient_model)(images, training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        features = outputs[0] if self.layer else None
        probabilities = class_probabilities(outputs[-1])
        class_scores = class_logits(outputs[-2]) if self.head else probabilities
        return features, probabilities, class_scores

    def input_gradients(self, images, targets, model=None):
        """d score(target) / d images, and the scores, for a batch whose targets are fixed."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(images)
            _, _, class_scores = self.forward(images, model)
            scores = tf.gather(class_scores, targets, batch_dims=1)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, images), scores

    def input_pass(self, images, requested, model=None):
        """Gradients of each image's chosen class score over the images, with the probabilities, targets and
        scores, from one forward and one backward pass (the targets chosen from that same forward pass)."""
        import tensorflow as tf

        from runner.explain.targets import chosen_targets

        with tf.GradientTape() as tape:
            tape.watch(images)
            _, probabilities, class_scores = self.forward(images, model)
            targets = chosen_targets(requested, probabilities)
            scores = tf.gather(class_scores, targets, batch_dims=1)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, images), probabilities, targets, scores

    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.gradient_model.outputs[0].shape[1:])

    # ------------------------------------------------------------------------------------ a batch

    def __call__(self, images: np.ndarray, targets=None) -> Explanation:
        import tensorflow as tf

        images = np.asarray(images, np.float32)
        requested = requested_targets(targets, len(images), self.classes)
        if self._compiled is None:
            self._compiled = tf.function(lambda x, r: self.method.compute(self, x, r))
        start = time.perf_counter()
        result = {key: np.asarray(value) for key, value in
                  self._compiled(tf.constant(images), tf.constant(requested)).items()}
        seconds = time.perf_counter() - start
        raw, signed = result.pop("raw"), result.pop("signed", None)
        probabilities, chosen, scores = (result.pop(key) for key in ("probabilities", "targets", "scores"))
        maps = normalized(raw, self.method.normalization, self.method.name)
        return Explanation(self.method.name, self.layer, self.describe_score(), raw, maps, probabilities,
                           chosen, scores, signed, result, seconds)


# ---------------------------------------------------------------------------------- map arithmetic


def normalized(raw: np.ndarray, normalization: str = "relu", method: str = "gradcam") -> np.ndarray:
    """Each map to [0, 1]: ReLU (or the magnitude), divided by its peak; all zeros, with a warning, when
    nothing speaks for the class."""
    positive = np.maximum(raw, 0.0) if normalization == "relu" else np.abs(raw)
    peaks = positive.reshape(len(positive), -1).max(axis=1)
    for index in np.flatnonzero(~(peaks > 0.0)):
        log.warning("image %d: the %s map is <= 0 everywhere (no region raises the class score): "
                    "the map is all zeros", index, method)
    safe = np.where(peaks > 0.0, peaks, 1.0).reshape(-1, *([1] * (positive.ndim - 1)))
    return np.where(peaks.reshape(safe.shape) > 0.0, positive / safe, 0.0).astype(np.float32)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(images, h, w) maps resized bilinearly to (images, height, width)."""
    import cv2

    return np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
                     for m in maps])
