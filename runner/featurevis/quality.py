"""How good a visualization is, measured (issue 14): does the filter keep responding when the image is
moved a little (robust, natural patterns do; adversarial noise does not), and how much of the image's
energy is high-frequency noise."""

from __future__ import annotations

import numpy as np

#: robust_activation's draws: a shift of up to 8 px and a zoom of 0.9..1.1, 16 of them
ROBUST_SHIFT, ROBUST_SCALE, ROBUST_DRAWS = 8, (0.9, 1.1), 16


def own_channel_means(target, images: np.ndarray) -> np.ndarray:
    """Image i's mean activation of the target's channel i (the target gives the filters in order)."""
    activation = np.asarray(target(images, training=False))
    return np.diagonal(activation.mean(axis=(1, 2)))


def robust_activation(target, images: np.ndarray, seed: int = 0, draws: int = ROBUST_DRAWS) -> np.ndarray:
    """Per image, the mean over ``draws`` random shifts (±ROBUST_SHIFT px) and zooms (ROBUST_SCALE) of its
    own-channel activation, divided by the activation on the image itself (NaN where that is <= 0). The
    draws depend only on ``seed``, so every recipe is measured on the same ones."""
    import keras

    rng = np.random.default_rng(seed)
    base = own_channel_means(target, images)
    height, width = images.shape[1:3]
    moved = []
    for _ in range(draws):
        dx, dy = rng.uniform(-ROBUST_SHIFT, ROBUST_SHIFT, 2)
        scale = rng.uniform(*ROBUST_SCALE)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        matrix = np.array([1 / scale, 0, cx - (cx + dx) / scale, 0, 1 / scale, cy - (cy + dy) / scale, 0, 0],
                          np.float32)
        shifted = keras.ops.image.affine_transform(images, np.tile(matrix, (len(images), 1)),
                                                   interpolation="bilinear", fill_mode="nearest")
        moved.append(own_channel_means(target, np.asarray(shifted)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, np.mean(moved, axis=0) / base, np.nan)


def high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image, the share of its spectral energy (mean removed, all channels) at radial frequencies
    above half the Nyquist frequency (0.25 cycles per pixel)."""
    images = np.asarray(images, np.float64)
    height, width = images.shape[1:3]
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred, axes=(1, 2))) ** 2
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    high = np.sqrt(fx * fx + fy * fy) > 0.25
    total = power.sum(axis=(1, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, power[:, high].sum(axis=(1, 2)) / total, 0.0)


def dead(objectives: np.ndarray) -> np.ndarray:
    """Which images' objective never moved over the steps (a filter its ReLU zeroes from the start)."""
    return np.ptp(objectives, axis=1) == 0
