"""Transforms: ``transform(images, seed) -> images``, random, differentiable changes of a batch of pixel
images at every step (Lucid's transformation robustness), drawn with stateless random ops from ``seed``
(a ``[2]`` int tensor), so a compiled loop replays the same draws for the same seeds.

One draw per call is shared by the whole batch (as in Lucid): an image's transforms do not depend on
the other images, so a batch still climbs as its images would alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Transform = Callable  # (images [b, h, w, c], seed [2]) -> images

#: Lucid's standard_transforms: pad 12 (gray), jitter 8, scale 0.9..1.1, rotate -10..10 degrees, jitter 4
GRAY = 127.5


def pad(width: int, value: float = GRAY) -> Transform:
    """``width`` pixels of ``value`` on every side (Lucid pads with 0.5 of its [0, 1] range: gray)."""
    import tensorflow as tf

    def transform(images, seed):
        return tf.pad(images, [[0, 0], [width, width], [width, width], [0, 0]], constant_values=value)

    return transform


def jitter(pixels: int) -> Transform:
    """Lucid's jitter: a random crop ``pixels - 1`` smaller on each axis (an offset of 0..pixels-1)."""
    import tensorflow as tf

    def transform(images, seed):
        height, width = images.shape[1] - pixels + 1, images.shape[2] - pixels + 1
        offset = _offset(seed, pixels)
        return tf.slice(images, tf.stack([0, offset[0], offset[1], 0]), [-1, height, width, -1])

    return transform


def _offset(seed, pixels: int):
    """jitter's draw: the crop's (row, column) offset, each in 0..pixels-1."""
    import tensorflow as tf

    return tf.random.stateless_uniform([2], seed, 0, pixels, dtype=tf.int32)


def _factor(seed, low: float, high: float):
    """random_scale's draw: the zoom factor."""
    import tensorflow as tf

    return tf.random.stateless_uniform([], seed, low, high)


def _angle(seed, degrees: float):
    """random_rotate's draw: the angle in radians."""
    import tensorflow as tf

    return tf.random.stateless_uniform([], seed, -degrees, degrees) * (math.pi / 180)


def random_scale(low: float, high: float) -> Transform:
    """A zoom about the centre by a factor drawn uniformly from [low, high], keeping the size (edge pixels
    repeated where it zooms out)."""
    import tensorflow as tf

    def transform(images, seed):
        return scaled_and_rotated(images, _factor(seed, low, high), tf.constant(0.0))

    return transform


def random_rotate(degrees: float) -> Transform:
    """A rotation about the centre by an angle drawn uniformly from [-degrees, degrees], keeping the size."""
    import tensorflow as tf

    def transform(images, seed):
        return scaled_and_rotated(images, tf.constant(1.0), _angle(seed, degrees))

    return transform


def scaled_and_rotated(images, scale, angle, crop: int = 0, offset=None, size: Sequence[int] | None = None):
    """The image scaled by ``scale`` and rotated by ``angle`` (radians) about its centre, bilinear, edge
    pixels repeated outside; then ``crop`` pixels fewer on each axis from ``offset`` (row, column), as
    ``jitter`` crops, but sampled in the same warp (a crop of a warp is the warp of shifted pixels); then,
    with ``size`` (height, width), resized to it as ``tf.image.resize`` would (half-pixel centres), again in
    the same warp."""
    import tensorflow as tf

    height, width = images.shape[1:3]
    out_height, out_width = (height - crop, width - crop) if size is None else size
    # an output pixel (u, v) is pixel (stretch * u + start) of the cropped warp before the resize
    stretch_x, stretch_y = (width - crop) / out_width, (height - crop) / out_height
    start_x, start_y = (stretch_x - 1) / 2, (stretch_y - 1) / 2
    center_x, center_y = (width - 1) / 2, (height - 1) / 2
    shift_y, shift_x = (0.0, 0.0) if offset is None else tf.unstack(tf.cast(offset, tf.float32))
    # the transform maps each output pixel to the input pixel it samples: the inverse rotation and zoom
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    from_x, from_y = shift_x + start_x - center_x, shift_y + start_y - center_y  # output (0, 0) from the centre
    matrix = tf.stack([cos * stretch_x, -sin * stretch_y, center_x + cos * from_x - sin * from_y,
                       sin * stretch_x, cos * stretch_y, center_y + sin * from_x + cos * from_y, 0.0, 0.0])
    matrix = tf.tile(matrix[None], [tf.shape(images)[0], 1])
    warped = tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=matrix,
                                                   output_shape=[out_height, out_width], fill_value=0.0,
                                                   interpolation="BILINEAR", fill_mode="NEAREST")
    return tf.ensure_shape(warped, [images.shape[0], out_height, out_width, images.shape[3]])


def at_size(transform: Transform | None, images, seed, size: Sequence[int | None]):
    """``transform(images, seed)`` brought to ``size`` (height, width; a model's fixed input size, None where
    it takes any) as lucent's ``fixed_image_size`` does: a transform that can (``Standard``) samples its
    warp at that size, the others are resized after (bilinear)."""
    if None in tuple(size):
        return transform(images, seed) if transform is not None else images
    if isinstance(transform, Standard):
        return transform(images, seed, size=tuple(size))
    return _resized(transform(images, seed) if transform is not None else images, size)


def _resized(images, size: Sequence[int] | None):
    """``images`` resized (bilinear) to ``size`` (height, width) where they have another size."""
    import tensorflow as tf

    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    return tf.image.resize(images, tuple(size))


def compose(transforms: Sequence[Transform]) -> Transform:
    """The transforms in order, each with its own seed derived from ``seed``."""
    import tensorflow as tf

    def transform(images, seed):
        seeds = tf.random.experimental.stateless_split(seed, max(len(transforms), 1))
        for k, piece in enumerate(transforms):
            images = piece(images, seeds[k])
        return images

    return transform


@dataclass(frozen=True)
class Standard:
    """Lucid's ``standard_transforms`` in its order (pad, jitter, scale, rotate, final jitter), each piece
    left out at 0 (``scale=None``); the defaults are Lucid's. Called as a transform; with every piece out,
    ``engine.Recipe`` gets ``None`` (``or_none``), so the pixels go to the model untouched."""

    pad: int = 12
    jitter: int = 8
    scale: Sequence[float] | None = (0.9, 1.1)
    rotate: float = 10.0
    final_jitter: int = 4

    def pieces(self) -> list[Transform]:
        """The pieces that are switched on, in order."""
        chosen = []
        if self.pad:
            chosen.append(pad(self.pad))
        if self.jitter > 1:
            chosen.append(jitter(self.jitter))
        if self._scales():
            chosen.append(random_scale(*self.scale))
        if self.rotate:
            chosen.append(random_rotate(self.rotate))
        if self.final_jitter > 1:
            chosen.append(jitter(self.final_jitter))
        return chosen

    def __call__(self, images, seed, size: Sequence[int] | None = None):
        """``compose(self.pieces())``'s geometric map and random draws (the same seeds), with the scale,
        the rotation and the final jitter sampled in ONE bilinear warp instead of two warps and a crop:
        one interpolation blurs less and costs a third of the three (``bench.featurevis --pieces``).
        ``size`` (height, width): the result resized to it, in that same warp when there is one."""
        import tensorflow as tf

        seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, max(len(self.pieces()), 1))))
        if self.pad:
            images = pad(self.pad)(images, next(seeds))
        if self.jitter > 1:
            images = jitter(self.jitter)(images, next(seeds))
        factor = _factor(next(seeds), *self.scale) if self._scales() else None
        angle = _angle(next(seeds), self.rotate) if self.rotate else None
        if factor is None and angle is None:
            return _resized(jitter(self.final_jitter)(images, next(seeds)) if self.final_jitter > 1 else images, size)
        crop = max(self.final_jitter - 1, 0)
        return scaled_and_rotated(images, tf.constant(1.0) if factor is None else factor,
                                  tf.constant(0.0) if angle is None else angle, crop,
                                  _offset(next(seeds), self.final_jitter) if crop else None, size)

    def _scales(self) -> bool:
        return self.scale is not None and tuple(self.scale) != (1.0, 1.0)

    def or_none(self) -> "Standard | None":
        return self if self.pieces() else None

    def size_change(self) -> int:
        """How many pixels the transforms add to each side length (pad twice, each jitter crops pixels - 1)."""
        return 2 * self.pad - max(self.jitter - 1, 0) - max(self.final_jitter - 1, 0)
