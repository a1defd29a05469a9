"""The shared core of the perturbation metrics: a class's probability over batches of images (one compiled
pass, fixed batch shape), pixels ranked by a map, the pixel counts of each step, and the AUC.

A *progressive* curve starts from one image and, step by step, takes the most salient pixels from
another: deletion goes from the photo to a substrate, insertion from a blurred photo to the photo. All
the steps of one image are built inside the compiled pass and evaluated as batched forward passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError

if TYPE_CHECKING:
    import keras


class ClassProbability:
    """``model``'s probability of a class, over batches of images; batches are padded to ``batch_size`` so
    one traced graph serves every call (the last chunk of a curve included)."""

    def __init__(self, model: "keras.Model", batch_size: int = 32):
        import tensorflow as tf

        from runner.explain.targets import check_classifier, class_probabilities

        if batch_size < 1:
            raise ConvlabError(f"batch_size={batch_size} evaluates no image", fix="use a batch_size of 1 or more")
        check_classifier(model)  # the metrics follow a class's probability
        self.model, self.batch_size = model, batch_size

        def probabilities(images, targets):
            return tf.gather(class_probabilities(model(images, training=False)), targets, batch_dims=1)

        def progressive(start, end, ranks, counts, target):
            # image k takes the pixels ranked below counts[k] from `end`, the others from `start`
            taken = ranks[None, :, :, None] < counts[:, None, None, None]
            images = tf.where(taken, end[None], start[None])
            return probabilities(images, tf.fill(tf.shape(counts), target))

        self._probabilities = tf.function(probabilities, reduce_retracing=True)
        self._progressive = tf.function(progressive, reduce_retracing=True)

    def __call__(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(images,) the probability of each image's target class."""
        images, targets = np.asarray(images, np.float32), np.asarray(targets, np.int32)
        return np.concatenate([self._probabilities(*self._padded(chunk, targets[at:at + len(chunk)]))[:len(chunk)]
                               for at, chunk in self._chunks(images)])

    def progressive(self, start: np.ndarray, end: np.ndarray, ranks: np.ndarray, counts: np.ndarray,
                    target: int) -> np.ndarray:
        """(len(counts),) the target's probability as the ``counts[k]`` top-ranked pixels come from ``end``."""
        import tensorflow as tf

        start, end = tf.constant(start, tf.float32), tf.constant(end, tf.float32)
        ranks, target = tf.constant(ranks, tf.int32), tf.constant(int(target), tf.int32)
        counts = np.asarray(counts, np.int32)
        values = []
        for _, chunk in self._chunks(counts):
            padded = np.pad(chunk, (0, self.batch_size - len(chunk)), mode="edge")
            values.append(np.asarray(self._progressive(start, end, ranks, tf.constant(padded), target))[:len(chunk)])
        return np.concatenate(values)

    def _chunks(self, items: np.ndarray):
        for at in range(0, len(items), self.batch_size):
            yield at, items[at:at + self.batch_size]

    def _padded(self, images: np.ndarray, targets: np.ndarray):
        missing = self.batch_size - len(images)
        return (np.pad(images, [(0, missing)] + [(0, 0)] * (images.ndim - 1), mode="edge"),
                np.pad(targets, (0, missing), mode="edge"))


def per_step_curve(model: "keras.Model", start: np.ndarray, end: np.ndarray, ranks: np.ndarray,
                   counts: np.ndarray, target: int) -> np.ndarray:
    """The same curve as :meth:`ClassProbability.progressive`, one forward call per step (RISE's reference
    code does this): the baseline of the batched pass, in tests and ``bench/faithfulness.py``."""
    from runner.explain.targets import class_probabilities

    values = []
    for count in counts:
        image = np.where((ranks < count)[..., None], end, start).astype(np.float32)
        values.append(float(class_probabilities(model(image[None], training=False))[0, target]))
    return np.asarray(values, np.float32)


def pixel_ranks(saliency: np.ndarray) -> np.ndarray:
    """(h, w) int32: 0 for the most salient pixel, h*w - 1 for the least; ties in raster order."""
    order = np.argsort(-saliency.ravel(), kind="stable")
    ranks = np.empty(order.size, np.int32)
    ranks[order] = np.arange(order.size, dtype=np.int32)
    return ranks.reshape(saliency.shape)


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """(steps + 1,) how many pixels are moved after each step, 0 to all, evenly spread."""
    if steps < 1:
        raise ConvlabError(f"task.faithfulness.steps={steps} takes no step", fix="use 1 step or more (default 112)")
    if steps > pixels:
        raise ConvlabError(f"task.faithfulness.steps={steps} is more than the {pixels} pixels of the input",
                           fix=f"use task.faithfulness.steps<={pixels} (one pixel a step at most)")
    return np.round(np.linspace(0, pixels, steps + 1)).astype(np.int32)


def auc(curve: np.ndarray, fractions: np.ndarray) -> float:
    """The area under ``curve`` over ``fractions`` (of pixels, 0..1) by the trapezoid rule."""
    return float(np.trapezoid(curve, fractions))


def input_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(images, h, w) maps at the model's input size (bilinear), as the metrics rank pixels."""
    from runner.explain.engine import upsample

    maps = np.asarray(maps, np.float32)
    return maps if maps.shape[1:] == (height, width) else upsample(maps, height, width)
