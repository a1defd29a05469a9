"""ROAD, RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", arXiv:2202.00449): remove a percentage of the pixels, most relevant first (MoRF) or least relevant
first (LeRF), and fill them by *noisy linear imputation* instead of a fixed colour, so the removed region's
shape does not leak the ranking to the model; follow the explained class's probability.

Imputation (the authors' ``NoisyLinearImputer``, also pytorch-grad-cam's ``metrics/road.py``): each removed
pixel is the weighted mean of its 8 neighbours inside the image (1/6 for the 4 direct ones, 1/12 for the
diagonals, renormalized at the border), removed neighbours included, so all removed pixels are solved at
once from one sparse linear system (scipy's ``spsolve``), one right-hand side per channel; then Gaussian
noise is added to them (std 0.01 of the [0, 1] pixel range in the authors' code, where images are imputed
before normalization: 2.55 on convlab's [0, 255] inputs).

Scores, per image: the probability averaged over the percentages (default 10, 20, ..., 90). A low MoRF and
a high LeRF are good; ``combined = (LeRF - MoRF) / 2`` is pytorch-grad-cam's ``ROADCombined`` (higher is
better; its per-order scores are differences to the unperturbed probability, which cancel in it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError
from runner.faithfulness.core import input_maps, pixel_ranks
from runner.validation import Bounds, range_problem

if TYPE_CHECKING:
    from runner.faithfulness.core import ClassProbability

DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # percent of the pixels removed
PERCENTILES = Bounds(gt=0, lt=100, increasing=True)  # task.faithfulness.road_percentiles' rule
NOISE = 0.01 * 255  # imputation noise std in input units: the authors' 0.01 on [0, 1] pixels
DIRECT, DIAGONAL = 1 / 6, 1 / 12
NEIGHBOURS = tuple(((row, col), DIAGONAL if row and col else DIRECT)
                   for row in (-1, 0, 1) for col in (-1, 0, 1) if row or col)


@dataclass
class Road:
    """Per-image ROAD scores; ``morf_curves``/``lerf_curves`` (images, len(percentiles)) are the probabilities
    at each percentage removed."""

    percentiles: np.ndarray
    morf_curves: np.ndarray
    lerf_curves: np.ndarray
    seconds: float = 0.0

    @property
    def morf(self) -> np.ndarray:
        return self.morf_curves.mean(axis=1)

    @property
    def lerf(self) -> np.ndarray:
        return self.lerf_curves.mean(axis=1)

    @property
    def combined(self) -> np.ndarray:
        return (self.lerf - self.morf) / 2


def check_percentiles(percentiles) -> list[float]:
    """The percentages as floats, or ConvlabError naming the fix (the same rule as the config's check)."""
    values = [float(p) for p in percentiles]
    problem = range_problem("task.faithfulness.road_percentiles", values, PERCENTILES)
    if problem:
        raise ConvlabError(problem[0], fix=problem[1])
    return values


def removal_masks(saliency: np.ndarray, percentiles, most_relevant_first: bool) -> np.ndarray:
    """(len(percentiles), h, w) bool, True where a pixel is removed: the floor of p % of the pixels, the
    most (MoRF) or least (LeRF) salient ones; ties in raster order (:func:`pixel_ranks`)."""
    ranks = pixel_ranks(saliency)
    counts = np.floor(ranks.size * np.asarray(check_percentiles(percentiles)) / 100).astype(np.int64)
    if most_relevant_first:
        return ranks[None] < counts[:, None, None]
    return ranks[None] >= ranks.size - counts[:, None, None]


def imputation_system(image: np.ndarray, removed: np.ndarray):
    """``(A, B, unknown)``: the sparse system ``A x = B`` that makes each removed pixel the weighted mean of its
    neighbours; ``unknown`` the removed pixels' flat indices (raster order), ``B`` (n, channels)."""
    from scipy import sparse

    height, width = removed.shape
    pixels = image.reshape(removed.size, -1).astype(np.float64)
    unknown = np.flatnonzero(removed)
    variable = np.full(removed.size, -1, np.int64)
    variable[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    diagonal = np.zeros(unknown.size)
    known_terms = np.zeros((unknown.size, pixels.shape[1]))
    equations, variables, weights = [np.arange(unknown.size)], [np.arange(unknown.size)], []
    for (row_step, col_step), weight in NEIGHBOURS:
        row, col = rows + row_step, cols + col_step
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        equation, neighbour = np.flatnonzero(inside), row[inside] * width + col[inside]
        diagonal[equation] += weight  # the weights of the neighbours inside the image: renormalized at the border
        solved = removed.ravel()[neighbour]
        equations.append(equation[solved])
        variables.append(variable[neighbour[solved]])
        weights.append(np.full(int(solved.sum()), -weight))
        known_terms[equation[~solved]] += weight * pixels[neighbour[~solved]]  # one neighbour per offset: no repeats
    matrix = sparse.csc_matrix((np.concatenate([diagonal, *weights]),
                                (np.concatenate(equations), np.concatenate(variables))), shape=(unknown.size,) * 2)
    return matrix, known_terms, unknown


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = NOISE,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """``image`` (h, w, c) with the ``removed`` (h, w) pixels solved from their neighbours, plus Gaussian noise
    of std ``noise`` on them (``noise=0``: the exact solution). At least one pixel must stay."""
    from scipy.sparse.linalg import spsolve

    image = np.asarray(image, np.float32)
    removed = np.asarray(removed, bool)
    if not removed.any():
        return image.copy()
    if removed.all():
        raise ConvlabError("ROAD removed every pixel: nothing is left to impute from",
                           fix="use task.faithfulness.road_percentiles below 100")
    matrix, known_terms, unknown = imputation_system(image, removed)
    solution = spsolve(matrix, known_terms).reshape(unknown.size, -1)
    if noise:
        solution = solution + (rng or np.random.default_rng(0)).normal(0.0, noise, solution.shape)
    filled = image.reshape(removed.size, -1).copy()
    filled[unknown] = solution
    return filled.reshape(image.shape)


def road_images(image: np.ndarray, saliency: np.ndarray, percentiles=DEFAULT_PERCENTILES, *,
                noise: float = NOISE, seed: int = 0) -> np.ndarray:
    """(2 * len(percentiles), h, w, c): the MoRF images, then the LeRF ones; the noise is drawn from
    ``seed`` (the same for every image, so an image's curves do not depend on the others in its batch)."""
    rng = np.random.default_rng(seed)
    masks = np.concatenate([removal_masks(saliency, percentiles, most_relevant_first=True),
                            removal_masks(saliency, percentiles, most_relevant_first=False)])
    return np.stack([noisy_linear_imputation(image, removed, noise, rng) for removed in masks])


def road(probability: "ClassProbability", images: np.ndarray, maps: np.ndarray, targets,
         percentiles=DEFAULT_PERCENTILES, *, noise: float = NOISE, seed: int = 0) -> Road:
    """MoRF and LeRF curves of ``maps`` (any resolution: upsampled to the images'); the imputed images of
    several photos go through ``probability``'s compiled pass together, in full batches."""
    start = time.perf_counter()
    percentiles = check_percentiles(percentiles)
    images = np.asarray(images, np.float32)
    maps = input_maps(maps, *images.shape[1:3])
    targets = np.broadcast_to(np.asarray(targets, np.int32), (len(images),))
    per_image = 2 * len(percentiles)
    group = max(1, -(-2 * probability.batch_size // per_image))  # photos whose images fill >= 2 batches
    curves = []
    for at in range(0, len(images), group):
        batch = np.concatenate([road_images(image, saliency, percentiles, noise=noise, seed=seed)
                                for image, saliency in zip(images[at:at + group], maps[at:at + group])])
        curves.append(probability(batch, np.repeat(targets[at:at + group], per_image)).reshape(-1, per_image))
    curves = np.concatenate(curves)
    return Road(np.asarray(percentiles), curves[:, :len(percentiles)], curves[:, len(percentiles):],
                time.perf_counter() - start)

