"""Sanity checks by model-parameter randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
arXiv:1810.03292): a map that explains the model must change when the model's weights are destroyed.

*Cascading*: re-initialize the weighted blocks top-down (output first), one more block at each depth,
recomputing the map each time; *independent*: one block at a time, the others intact. Each map is compared
with the original one by Spearman rank correlation and SSIM (both at the input's size, maps in [0, 1]).
A faithful method's similarity falls towards 0; Adebayo found Guided Backprop's stays high.

Everything runs on a clone: the caller's model is never modified. A block is the layers sharing a
``block_<n>`` / ``block<n>`` name prefix (MobileNetV2, VGG, ResNet), else one layer and its batch norm.
Weights are re-drawn from each layer's own initializers (batch norm: reset), seeded.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError
from runner.faithfulness.core import input_maps
from runner.layers import rebuilt

if TYPE_CHECKING:
    import keras

    from runner.explain.base import Method


@dataclass
class Sanity:
    """``blocks``: names, top-down; arrays are (depth, images); ``cascading_maps`` (depth, images, h, w)."""

    blocks: list[str]
    cascading_spearman: np.ndarray
    cascading_ssim: np.ndarray
    independent_spearman: np.ndarray
    independent_ssim: np.ndarray
    original_maps: np.ndarray
    cascading_maps: np.ndarray


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 where one is constant (no ranking to agree with)."""
    from scipy.stats import spearmanr

    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 1.0 if np.array_equal(first, second) else 0.0
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """Structural similarity of two maps in [0, 1]."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(first, second, data_range=1.0, win_size=min(7, *_odd_sides(first))))


def _odd_sides(picture: np.ndarray) -> list[int]:
    return [side if side % 2 else side - 1 for side in picture.shape[:2]]


def weighted_blocks(model: "keras.Model") -> list[tuple[str, list]]:
    """(name, layers) of the blocks with weights, top-down (the output's first)."""
    blocks: dict[str, list] = {}
    for layer in _weighted_layers(model):
        blocks.setdefault(block_name(layer.name), []).append(layer)
    return list(reversed(blocks.items()))


def block_name(layer_name: str) -> str:
    found = re.match(r"(.*?block_?\d+)", layer_name, re.IGNORECASE)
    return found.group(1) if found else re.sub(r"(^bn_|_bn$)", "", layer_name, flags=re.IGNORECASE)


def _weighted_layers(model) -> list:
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def clone(model: "keras.Model") -> "keras.Model":
    """A copy whose weighted layers are new (same weights); weightless ones (a Lambda too) are shared."""
    import keras

    def copied(layer):
        if isinstance(layer, keras.Model):
            return clone(layer)
        if not layer.weights:
            return layer
        return rebuilt(layer)

    return keras.models.clone_model(model, clone_function=copied)


def randomize(layers: list, rng: np.random.Generator) -> None:
    """Re-draw each weight of ``layers`` from its layer's initializer (seeded from ``rng``)."""
    import keras

    for layer in layers:
        for variable in layer.weights:
            name = variable.path.split("/")[-1]
            initializer = getattr(layer, f"{name}_initializer", None)
            if initializer is None:  # no initializer known: a normal draw of the weight's own scale
                value = rng.normal(0.0, float(np.std(variable.numpy())) or 1.0, variable.shape)
            else:
                config = keras.initializers.serialize(keras.initializers.get(initializer))
                fresh = keras.initializers.deserialize(config)
                if hasattr(fresh, "seed"):
                    fresh.seed = int(rng.integers(2 ** 31))
                value = fresh(variable.shape, dtype=variable.dtype)
            variable.assign(np.asarray(value, dtype=variable.dtype))


def sanity_check(model: "keras.Model", images: np.ndarray, method: "Method | str" = "gradcam",
                 layer: str | None = None, score: str = "probability", targets=None, *, seed: int = 0,
                 max_blocks: int | None = None, independent: bool = True) -> Sanity:
    """Cascading (and independent) randomization of ``model``'s blocks, top-down, explaining the same
    classes as the original model does (see the module's docstring)."""
    from runner.explain import Explainer
    from runner.explain import method as named_method

    chosen = named_method(method) if isinstance(method, str) else method
    images = np.asarray(images, np.float32)
    height, width = images.shape[1:3]
    blocks = weighted_blocks(model)
    if not blocks:
        raise ConvlabError(f"{model.name!r} has no layer weights to randomize: a sanity check compares the map "
                           "before and after its weights are destroyed", fix="use a model with weights, or "
                           "task.sanity=false")
    blocks = blocks[:max_blocks]
    original = Explainer(model, dataclasses.replace(chosen), layer, score)(images, targets)
    reference = input_maps(original.maps, height, width)

    def compared(network) -> tuple[np.ndarray, list[float], list[float]]:
        maps = input_maps(Explainer(network, dataclasses.replace(chosen), layer, score)(images, original.targets).maps,
                          height, width)
        return maps, [spearman(a, b) for a, b in zip(reference, maps)], [ssim(a, b) for a, b in zip(reference, maps)]

    rng = np.random.default_rng(seed)
    copy, cascading = clone(model), []
    for _, layers in blocks:
        randomize([_twin(copy, layer) for layer in layers], rng)
        cascading.append(compared(copy))
    alone = []
    if independent:
        for _, layers in blocks:
            copy = clone(model)
            randomize([_twin(copy, layer) for layer in layers], rng)
            alone.append(compared(copy))
    empty = np.zeros((0, len(images)), np.float32)
    return Sanity([name for name, _ in blocks], np.array([c[1] for c in cascading]), np.array([c[2] for c in cascading]),
                  np.array([a[1] for a in alone]) if alone else empty, np.array([a[2] for a in alone]) if alone else empty,
                  reference, np.stack([c[0] for c in cascading]))


def _twin(copy: "keras.Model", layer) -> object:
    """The clone's layer that copies ``layer`` (same name, searched through nested models)."""
    return next(candidate for candidate in _weighted_layers(copy) if candidate.name == layer.name)
