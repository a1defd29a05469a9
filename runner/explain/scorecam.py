"""Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
Networks", CVPR workshops, arXiv:1910.01279), and Faster Score-CAM (tabayashi0117, as tf-keras-vis).

    M_c = norm(upsample(A_c))          (min-max to [0, 1] per channel, at the input's size)
    s_c = S(x * M_c)                   (one forward pass per channel, the masked image)
    w   = softmax_c(s)                 L = ReLU(sum_c w_c A_c)

Gradient-free. The masked passes run batched, ``batch_size`` masked images at a time, inside the engine's
one compiled pass; at a terminal a progress bar counts the masked images
(``runner.terminal.CompiledProgress``). ``max_channels`` keeps, per image, the channels of largest spatial
variance (Faster Score-CAM); None keeps all. The paper's baseline term S(x_b) is the same for every channel, so the softmax
leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from runner.errors import ConvlabError
from runner.explain.base import Method
from runner.explain.targets import chosen_targets
from runner.terminal import CompiledProgress
from runner.validation import bounded


@dataclass
class ScoreCAM(Method):
    name = "scorecam"
    batch_size: int = bounded(32, ge=1)  # masked images per forward pass
    max_channels: Optional[int] = bounded(None, ge=1)  # Faster Score-CAM: the channels of largest variance; None: all

    def validate(self):
        if self.batch_size < 1:
            raise ConvlabError(f"task.method.batch_size={self.batch_size}: Score-CAM needs at least one "
                               "masked image per pass", fix="use task.method.batch_size=32")
        if self.max_channels is not None and self.max_channels < 1:
            raise ConvlabError(f"task.method.max_channels={self.max_channels}: Score-CAM needs one channel or "
                               "more", fix="use task.method.max_channels=null for all, or a positive count")

    def check(self, engine):
        channels = engine.feature_shape()[-1]
        if self.max_channels is not None and not 1 <= self.max_channels <= channels:
            raise ConvlabError(f"task.method.max_channels={self.max_channels} is outside 1..{channels}: layer "
                               f"{engine.layer!r} has {channels} channels",
                               fix=f"use task.method.max_channels between 1 and {channels}, or null for all")

    def setup(self, engine):
        self.progress = CompiledProgress("mask")  # not a setting: no dataclass field

    def compute(self, engine, images, requested):
        import tensorflow as tf

        features, probabilities, class_scores = engine.forward(images)
        targets = chosen_targets(requested, probabilities)
        scores = tf.gather(class_scores, targets, batch_dims=1)
        selected = self.selected_channels(features)
        channel_scores = self.masked_scores(engine, images, selected, targets)
        weights = tf.nn.softmax(channel_scores, axis=-1)
        return {"raw": tf.einsum("bhwc,bc->bhw", selected, weights), "probabilities": probabilities,
                "targets": targets, "scores": scores, "channel_weights_max": tf.reduce_max(weights, axis=-1)}

    def selected_channels(self, features):
        """(images, h, w, k): every channel, or per image the ``max_channels`` of largest spatial std."""
        import tensorflow as tf

        if self.max_channels is None or self.max_channels >= features.shape[-1]:
            return features
        _, best = tf.math.top_k(tf.math.reduce_std(features, axis=(1, 2)), self.max_channels)
        return tf.gather(features, best, axis=3, batch_dims=1)

    def masked_scores(self, engine, images, selected, targets):
        """(images, k) the target's score of each image masked by each of its upsampled, normalized channels."""
        import tensorflow as tf

        height, width = images.shape[1], images.shape[2]
        channels = selected.shape[-1]
        per_channel = tf.reshape(tf.transpose(selected, (0, 3, 1, 2)), (-1, *selected.shape[1:3], 1))
        pairs = tf.shape(per_channel)[0]
        collected = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        for start in tf.range(0, pairs, self.batch_size):
            index = tf.range(start, tf.minimum(start + self.batch_size, pairs))
            image_index = index // channels
            masks = tf.image.resize(tf.gather(per_channel, index), (height, width), method="bilinear")
            low = tf.reduce_min(masks, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(masks, axis=(1, 2, 3), keepdims=True)
            masks = tf.math.divide_no_nan(masks - low, high - low)
            _, _, masked_scores = engine.forward(tf.gather(images, image_index) * masks)
            batch_scores = tf.gather(masked_scores, tf.gather(targets, image_index), batch_dims=1)
            collected = collected.write(collected.size(), batch_scores)
            self.progress.advance(tf.size(index), pairs, after=batch_scores)
        return tf.reshape(collected.concat(), (-1, channels))


METHOD = ScoreCAM
