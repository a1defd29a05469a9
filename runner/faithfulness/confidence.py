"""Average Drop and Average Increase in Confidence (Chattopadhyay et al. 2018, "Grad-CAM++",
arXiv:1710.11063): show the model only what the map keeps (the image times the map, in [0, 1]).

    drop_i = max(0, Y_i - O_i) / Y_i        increase_i = 1 if O_i > Y_i else 0

``Y_i``: the class's probability on the image, ``O_i`` on the masked image. Averaged over images (the
paper reports them in percent: x 100). A low drop and a high increase are good.
"""

from __future__ import annotations

import numpy as np

from runner.faithfulness.core import ClassProbability


def confidence_change(probability: ClassProbability, images: np.ndarray, maps: np.ndarray,
                      targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drop, increase) per image; ``maps`` in [0, 1] at the images' size."""
    original = probability(images, targets)
    masked = probability(images * np.clip(maps, 0.0, 1.0)[..., None], targets)
    drop = np.maximum(0.0, original - masked) / np.maximum(original, 1e-12)
    return drop.astype(np.float32), (masked > original).astype(np.float32)
