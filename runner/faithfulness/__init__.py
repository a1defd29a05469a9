"""How faithful is an attribution map to the model? Perturbation metrics, without Hydra or MLflow.

    from runner.faithfulness import evaluate
    scores = evaluate(model, images, maps, targets, steps=112, substrate="zero")
    scores.deletion_auc, scores.insertion_auc          # (images,): lower / higher is better
    scores.average_drop, scores.average_increase       # (images,): lower / higher is better
    scores.deletion_curves, scores.fractions           # the curves behind the AUCs
    evaluate(..., road_percentiles=[10, 20, ..., 90]).road   # ROAD: .morf (low), .lerf (high), .combined

``images``: what the model takes (float, [0, 255] for convlab's models), ``maps``: (images, h, w) in
[0, 1] at any resolution (upsampled bilinearly to the input), ``targets``: the class explained in each
image. Each metric is a module here (deletion, insertion, confidence, road, sanity) over :mod:`.core`, whose
compiled pass runs all the steps of an image as batched forward passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.faithfulness.confidence import confidence_change
from runner.faithfulness.core import ClassProbability, auc, input_maps, per_step_curve, pixel_ranks, step_counts
from runner.faithfulness.deletion import Substrate, as_substrate, deletion_curve, substrate
from runner.faithfulness.insertion import blurred, insertion_curve
from runner.faithfulness.road import Road, check_percentiles, noisy_linear_imputation, road, road_images

if TYPE_CHECKING:
    import keras

__all__ = ["ClassProbability", "Faithfulness", "Road", "Substrate", "as_substrate", "auc", "blurred",
           "confidence_change", "deletion_curve", "evaluate", "insertion_curve", "noisy_linear_imputation",
           "per_step_curve", "pixel_ranks", "road", "road_images", "step_counts", "substrate"]

DEFAULT_STEPS = 112  # RISE at 224 px: 448 pixels a step
MEANS = ("deletion_auc", "insertion_auc", "average_drop", "average_increase")


@dataclass
class Faithfulness:
    """Per-image scores of one batch of maps; ``fractions`` (steps + 1,) is the curves' x axis."""

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    average_drop: np.ndarray
    average_increase: np.ndarray
    deletion_curves: np.ndarray  # (images, steps + 1)
    insertion_curves: np.ndarray
    fractions: np.ndarray
    seconds: float = 0.0
    road: Road | None = None  # when asked for (``road_percentiles``)

    def per_metric(self) -> dict[str, np.ndarray]:
        """Each metric's per-image values, by name (``road_*`` when ROAD was measured)."""
        values = {name: getattr(self, name) for name in MEANS}
        if self.road is not None:
            values.update(road_morf=self.road.morf, road_lerf=self.road.lerf, road_combined=self.road.combined)
        return values

    def means(self) -> dict[str, float]:
        """The metrics averaged over the images, by name."""
        return {name: float(np.mean(values)) for name, values in self.per_metric().items()}

    def per_image(self, names: list[str]) -> list[dict]:
        values = self.per_metric()
        images = [{"image": name, **{key: float(value[index]) for key, value in values.items()},
                   "deletion_curve": self.deletion_curves[index].round(6).tolist(),
                   "insertion_curve": self.insertion_curves[index].round(6).tolist()}
                  for index, name in enumerate(names)]
        if self.road is not None:
            for index, image in enumerate(images):
                image.update(road_morf_curve=self.road.morf_curves[index].round(6).tolist(),
                             road_lerf_curve=self.road.lerf_curves[index].round(6).tolist())
        return images


def evaluate(model: "keras.Model", images: np.ndarray, maps: np.ndarray, targets, *, steps: int = DEFAULT_STEPS,
             substrate: Substrate | str = Substrate.zero, batch_size: int = 32,
             probability: ClassProbability | None = None, road_percentiles=None) -> Faithfulness:
    """Deletion / insertion AUC and Average Drop / Increase of ``maps`` (see the module's docstring), and ROAD
    at ``road_percentiles`` (percent of the pixels removed; None: not measured, it costs a sparse solve per
    percentage and order). ``probability``: a :class:`ClassProbability` of ``model`` to reuse across calls."""
    start = time.perf_counter()
    images = np.asarray(images, np.float32)
    targets = np.broadcast_to(np.asarray(targets, np.int32), (len(images),))
    height, width = images.shape[1:3]
    counts = step_counts(height * width, steps)
    substrate = as_substrate(substrate)
    if road_percentiles is not None:
        check_percentiles(road_percentiles)  # before the curves, not after them
    probability = probability or ClassProbability(model, batch_size)
    maps = input_maps(maps, height, width)
    deletion = np.stack([deletion_curve(probability, image, saliency, target, counts, substrate)
                         for image, saliency, target in zip(images, maps, targets)])
    insertion = np.stack([insertion_curve(probability, image, saliency, target, counts)
                          for image, saliency, target in zip(images, maps, targets)])
    fractions = counts / (height * width)
    drop, increase = confidence_change(probability, images, maps, targets)
    removal = None if road_percentiles is None else road(probability, images, maps, targets, road_percentiles)
    return Faithfulness(np.array([auc(c, fractions) for c in deletion]), np.array([auc(c, fractions) for c in insertion]),
                        drop, increase, deletion, insertion, fractions, time.perf_counter() - start, removal)

