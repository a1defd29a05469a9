"""Deletion (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
arXiv:1806.07421): remove the pixels most salient first, onto a substrate, and follow the class
probability. A faithful map makes it fall fast: a low area under the curve is good.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from runner.faithfulness.core import ClassProbability, pixel_ranks


class Substrate(StrEnum):
    """What a deleted pixel becomes: black (``zero``, RISE) or the image's mean colour (``mean``)."""

    zero = "zero"
    mean = "mean"


def as_substrate(kind: Substrate | str) -> Substrate:
    from runner.errors import ConvlabError

    try:
        return Substrate(kind)
    except ValueError:
        raise ConvlabError(f"unknown substrate {kind!r}",
                           fix=f"use task.faithfulness.substrate= one of {', '.join(Substrate)}") from None


def substrate(image: np.ndarray, kind: Substrate | str) -> np.ndarray:
    if as_substrate(kind) is Substrate.zero:
        return np.zeros_like(image, np.float32)
    return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).astype(np.float32)


def deletion_curve(probability: ClassProbability, image: np.ndarray, saliency: np.ndarray, target: int,
                   counts: np.ndarray, kind: Substrate | str = Substrate.zero) -> np.ndarray:
    """(len(counts),) the target's probability as the ``counts[k]`` most salient pixels are deleted."""
    return probability.progressive(image, substrate(image, kind), pixel_ranks(saliency), counts, target)
