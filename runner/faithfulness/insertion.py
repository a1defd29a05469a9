"""Insertion (Petsiuk et al. 2018, RISE): start from a blurred photo and put back the pixels most salient
first, following the class probability. A faithful map makes it rise fast: a high area is good. The blur
is RISE's: a Gaussian kernel of 11 pixels, sigma 5, zero padding at the borders.
"""

from __future__ import annotations

import numpy as np

from runner.faithfulness.core import ClassProbability, pixel_ranks

KERNEL, SIGMA = 11, 5.0


def blurred(image: np.ndarray, kernel: int = KERNEL, sigma: float = SIGMA) -> np.ndarray:
    import cv2

    axis = np.arange(kernel, dtype=np.float64) - kernel // 2
    line = np.exp(-axis ** 2 / (2 * sigma ** 2))
    weights = np.outer(line, line) / np.outer(line, line).sum()
    return cv2.filter2D(np.asarray(image, np.float32), -1, weights.astype(np.float32),
                        borderType=cv2.BORDER_CONSTANT).reshape(image.shape)


def insertion_curve(probability: ClassProbability, image: np.ndarray, saliency: np.ndarray, target: int,
                    counts: np.ndarray) -> np.ndarray:
    """(len(counts),) the target's probability as the ``counts[k]`` most salient pixels are put back."""
    return probability.progressive(blurred(image), image, pixel_ranks(saliency), counts, target)
