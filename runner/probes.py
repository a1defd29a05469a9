"""Watch a model learn to look: ``task.probes`` of ``train`` and ``finetune``.

Every ``every`` epochs, Grad-CAM (``runner.explain``) of a few fixed images of a split is logged as the
image timelines ``probe/<image>`` with step = the epoch (numbered as the epoch metrics), so the run page's
step slider shows the attention forming over training. The gradient model and its compiled pass are
built once, traced when training begins (not inside the first epoch, whose time it would add to); they
share the trained model's weights, so each probe reads the weights of that epoch. The seconds each probe
took are the metric ``probe/seconds``; the tracing's, ``probe/trace_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import mlflow
import numpy as np

from runner.data.base import ImageDataset
from runner.explain import Explainer
from runner.mlflow_images import log_picture
from runner.models.base import CropBox
from runner.visual import overlay, split_image_name

log = logging.getLogger(__name__)

#: the heatmap's weight in a probe's overlay (task=explain's default)
ALPHA = 0.4


class ProbeCallback(keras.callbacks.Callback):
    """Grad-CAM of ``images`` on ``network`` after every ``every``-th epoch, logged as ``probe/<name>``.

    ``network`` may be another model than the one being fitted (mode=features fits the head alone):
    ``before_probe`` then brings the fitted weights into it. ``first_epoch``: the number of this fit's
    first epoch in the run; set it anew to reuse the callback (and its traced pass) in a later phase."""

    def __init__(self, network: keras.Model, names: list[str], images: np.ndarray, *, every: int = 1,
                 layer: str | None = None, first_epoch: int = 0, before_probe: Callable[[], None] | None = None):
        super().__init__()
        self.network, self.names, self.images = network, names, np.asarray(images, np.float32)
        self.every, self.layer, self.first_epoch, self.before_probe = every, layer, first_epoch, before_probe
        self.originals = np.clip(self.images, 0, 255).astype(np.uint8)
        self.explainer = Explainer(network, "gradcam", layer)  # here: a wrong task.probes.layer fails before training
        self.traced = False

    def on_train_begin(self, logs=None) -> None:
        """Trace the compiled pass (on the probe images: the same shapes, so it is not traced again) once,
        before the first epoch; a later phase's fit reuses it."""
        if self.traced:
            return
        started = time.perf_counter()
        self.explainer(self.images)
        self.traced = True
        mlflow.log_metric("probe/trace_seconds", time.perf_counter() - started, step=self.first_epoch)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        step = self.first_epoch + epoch
        if (step + 1) % self.every == 0:
            self.probe(step)

    def probe(self, step: int) -> float:
        """Explain the images with the weights as they are and log them at ``step``; returns the seconds."""
        started = time.perf_counter()
        if self.before_probe is not None:
            self.before_probe()
        explained = self.explainer(self.images)
        whole = CropBox(0, 0, *self.images.shape[1:3])
        for name, original, heatmap in zip(self.names, self.originals, explained.maps):
            log_picture(overlay(original, heatmap, whole, ALPHA), key=f"probe/{name}", step=step)
        seconds = time.perf_counter() - started
        mlflow.log_metric("probe/seconds", seconds, step=step)
        return seconds


def probe_images(dataset: ImageDataset, count: int, split: str) -> tuple[list[str], np.ndarray]:
    """The first ``count`` images of ``split`` as the model takes them, with their names."""
    names, images = [], []
    for index, (image, label) in enumerate(dataset.split(split).unbatch().take(count).as_numpy_iterator()):
        names.append(split_image_name(split, index, dataset.class_names[int(label)]))
        images.append(image)
    return names, np.stack(images) if images else np.zeros((0, *dataset.input_shape), np.float32)


def probe_callbacks(network: keras.Model, dataset: ImageDataset, probes: Mapping[str, Any], *,
                    first_epoch: int = 0, before_probe: Callable[[], None] | None = None) -> list[keras.callbacks.Callback]:
    """``[ProbeCallback]`` as ``task.probes`` sets it, or ``[]`` when it is off (or the split is empty)."""
    if not probes["enabled"]:
        return []
    names, images = probe_images(dataset, probes["images"], str(probes["split"]))
    if not names:
        log.warning("task.probes: the %s split of %s is empty: no probes", probes["split"], dataset.name)
        return []
    return [ProbeCallback(network, names, images, every=probes["every"], layer=probes["layer"],
                          first_epoch=first_epoch, before_probe=before_probe)]
