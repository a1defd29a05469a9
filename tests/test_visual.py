"""runner.visual's picture helpers: the one grid that activations and filters draw with."""

from __future__ import annotations

import numpy as np

from runner.visual import tile


def test_tile_puts_picture_k_at_row_k_div_columns_with_fill_between_and_in_the_empty_slots():
    patterns = np.stack([np.full((4, 3, 3), k + 1, np.uint8) for k in range(10)])  # picture k: all k + 1

    grid = tile(patterns, columns=8, gap=5)

    assert grid.shape == (2 * 4 + 5, 8 * 3 + 7 * 5, 3) and grid.dtype == np.uint8
    expected = np.zeros_like(grid)
    for k in range(10):
        top, left = (k // 8) * (4 + 5), (k % 8) * (3 + 5)
        expected[top:top + 4, left:left + 3] = k + 1
    np.testing.assert_array_equal(grid, expected)


def test_tile_never_has_more_columns_than_pictures_and_no_gap_around():
    pictures = np.ones((4, 2, 2), np.float32)
    assert tile(pictures, columns=8, gap=5).shape == (2, 4 * 2 + 3 * 5)
    assert tile(pictures, columns=2, gap=0).shape == (4, 4)
    assert tile(pictures[:1], columns=3, gap=2).shape == (2, 2)


def test_tile_fills_with_the_given_value_so_a_mask_can_be_tiled_alongside():
    pictures = np.zeros((3, 2, 2), np.float32)
    grid = tile(pictures, columns=2, gap=1, fill=np.nan)
    blank = tile(np.zeros(pictures.shape, bool), columns=2, gap=1, fill=True)
    np.testing.assert_array_equal(np.isnan(grid), blank)
    assert blank.sum() == grid.size - 3 * 4  # everything but the three pictures' pixels
