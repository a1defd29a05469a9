"""Parameterizations: the variables an ascent moves, and the pixels they stand for.

A parameterization has ``initial(count, size, channels) -> np.ndarray`` (the starting variables, drawn
from NumPy's global generator, so a run's seed fixes them) and ``image(variables) -> pixels`` (a
differentiable TF function; pixels are the models' [0, 255] input).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from runner.models.vgg16 import CAFFE_MEAN_BGR

CAFFE_MEAN_RGB = np.asarray(CAFFE_MEAN_BGR[::-1], dtype=np.float32)
#: ResNet50V2's input is pixel / PIXELS_PER_UNIT - 1 ("tf" preprocessing)
PIXELS_PER_UNIT = 127.5
PIXEL_MAX = 255.0

#: Lucid's square root of ImageNet's colour covariance (its SVD's U * sqrt(S)), columns scaled to a
#: largest norm of 1: decorrelated variables times its transpose are RGB.
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
#: Lucid divides the inverse FFT by 4 ("reduces saturation")
FOURIER_MAGIC = 4.0


def book_start(count: int, size: int, channels: int) -> np.ndarray:
    """The book's ``uniform*20 + 128`` in VGG16's caffe space, as pixels (a gray model gets the channels'
    average mean)."""
    mean = CAFFE_MEAN_RGB if channels == 3 else np.full(channels, CAFFE_MEAN_RGB.mean(), np.float32)
    return (np.random.random((count, size, size, channels)) * 20 + 128 + mean).astype(np.float32)


def gray_start(count: int, size: int, channels: int) -> np.ndarray:
    """``uniform*20 + 128`` in pixels: the book's gray image with a little noise, for models that take
    pixels (convlab's own convnets rescale by 1/255 inside), where caffe space means nothing."""
    return (np.random.random((count, size, size, channels)) * 20 + 128).astype(np.float32)


def keras_io_start(count: int, size: int, channels: int) -> np.ndarray:
    """keras.io's ``(uniform - 0.5) * 0.25`` in ResNet50V2's [-1, 1] input space, as pixels."""
    noise = (np.random.random((count, size, size, channels)) - 0.5) * 0.25
    return ((noise + 1) * PIXELS_PER_UNIT).astype(np.float32)


PIXEL_STARTS = {"book": book_start, "gray": gray_start, "keras_io": keras_io_start}


@dataclass(frozen=True)
class Pixels:
    """The variables are the pixels (the book's and keras.io's ascent), started as ``PIXEL_STARTS[start]``."""

    start: str = "book"

    def initial(self, count: int, size: int, channels: int) -> np.ndarray:
        return PIXEL_STARTS[self.start](count, size, channels)

    def image(self, variables):
        return variables


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """Lucid's ``1 / max(f, 1 / max(h, w)) ** decay_power`` over ``rfft2d``'s frequencies ``[h, w//2+1]``
    (cycles per pixel): unit-variance variables give an image with a 1/f amplitude spectrum, as natural
    images have, so each frequency band moves the image by the same amount per step."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(frequency, 1.0 / max(height, width)) ** decay_power).astype(np.float32)


@dataclass(frozen=True)
class Fourier:
    """Lucid's ``image(fft=True, decorrelate=...)``: the variables are the real and imaginary parts of the
    image's 2-D spectrum per channel, scaled by ``spectrum_scale``; the inverse FFT (orthonormal, / 4),
    optionally mixed by ``COLOR_CORRELATION`` (three channels), squashed by a sigmoid into [0, 255].

    Even and odd sizes both work (``irfft2d`` with ``fft_length``); the variables are
    ``[count, channels, size, size // 2 + 1, 2]``."""

    decorrelate: bool = True
    sd: float = 0.01
    decay_power: float = 1.0

    def initial(self, count: int, size: int, channels: int) -> np.ndarray:
        shape = (count, channels, size, size // 2 + 1, 2)
        return (np.random.standard_normal(shape) * self.sd).astype(np.float32)

    def image(self, variables):
        """Square images (``initial``'s): the width is the height, even or odd. Compiled by XLA (forward
        and gradient: fewer, fused passes over the spectrum and the pixels than TensorFlow's op-by-op
        kernels, about 2.5x faster here, ``bench.featurevis --pieces``), inside the climb's tf.function."""
        return _compiled_fourier_image()(variables, self.decorrelate, self.decay_power)


@functools.cache
def _compiled_fourier_image():
    import tensorflow as tf

    return tf.function(fourier_image, jit_compile=True)


def fourier_image(variables, decorrelate: bool = True, decay_power: float = 1.0):
    """``Fourier.image``'s computation, op by op (what XLA compiles)."""
    import tensorflow as tf

    height = width = variables.shape[2]
    scale = tf.constant(spectrum_scale(height, width, decay_power))
    spectrum = tf.complex(variables[..., 0] * scale, variables[..., 1] * scale)
    # orthonormal inverse (Lucid's): TF's irfft2d divides by h*w, the orthonormal one by sqrt(h*w)
    image = tf.signal.irfft2d(spectrum, fft_length=[height, width]) * np.sqrt(height * width)
    image = tf.transpose(image, [0, 2, 3, 1]) / FOURIER_MAGIC  # channels last
    return PIXEL_MAX * tf.sigmoid(decorrelate_colors(image) if decorrelate else image)


def decorrelate_colors(image):
    """Decorrelated variables -> (pre-sigmoid) RGB: ``image @ COLOR_CORRELATION.T`` per pixel; other
    channel counts are left as they are (no colour statistics for them)."""
    import tensorflow as tf

    if image.shape[-1] != 3:
        return image
    return tf.tensordot(image, tf.constant(COLOR_CORRELATION.T), axes=1)
