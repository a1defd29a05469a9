"""The shared training helpers: the book's augmentation as Keras preprocessing layers."""

from __future__ import annotations

import numpy as np
import pytest

from runner import training
from tests.conftest import compose_config


def _augmentation(task: str) -> dict:
    return dict(compose_config([f"task={task}"]).task.augmentation)


def _max_shift_of_an_edge(shear: float, size: int = 64) -> float:
    """How far (in pixels) a vertical edge moves at the top and bottom rows under the shear layer alone,
    over many random draws."""
    import tensorflow as tf

    image = np.zeros((1, size, size, 1), np.float32)
    image[:, :, size // 2:] = 1.0  # a vertical edge down the middle
    layer = training.augmentation_layers(flip=None, rotation=0, zoom=0, translation=0, shear=shear)
    images = tf.repeat(tf.constant(image), 64, axis=0)
    sheared = np.asarray(layer(images, training=True))
    # the edge's column in a row is the number of dark pixels left of it
    edge_columns = (sheared[..., 0] < 0.5).sum(axis=2)  # [draws, rows]
    return float(np.abs(edge_columns - size // 2).max())


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_default_shear_is_the_books_fraction_of_a_degree(task):
    """ImageDataGenerator(shear_range=0.2) shears by at most 0.2 *degrees*: over a 64-px image an edge
    moves by well under a pixel. Keras' RandomShear(0.2) would move it by up to ~6 px at the borders."""
    augmentation = _augmentation(task)
    assert _max_shift_of_an_edge(augmentation["shear"]) <= 1
    assert _max_shift_of_an_edge(0.2) >= 3  # the check can tell the two apart


@pytest.mark.parametrize("task", ["train", "finetune"])
def test_default_augmentation_fills_like_the_book(task):
    """The book passes fill_mode="nearest"; Keras' layers default to "reflect"."""
    stack = training.augmentation_layers(**_augmentation(task))
    spatial = [layer for layer in stack.layers if hasattr(layer, "fill_mode")]
    assert {type(layer).__name__ for layer in spatial} == {"RandomRotation", "RandomTranslation", "RandomShear",
                                                          "RandomZoom"}
    assert {layer.fill_mode for layer in spatial} == {"nearest"}
