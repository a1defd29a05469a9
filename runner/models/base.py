"""The contract every model spec meets (what ``instantiate(cfg.model)`` returns).

Every built ``keras.Model`` takes float32 RGB (or grayscale) pixel values in [0, 255] at its input size:
normalization lives inside the model as standard Keras layers, so a saved ``.keras`` file is
self-contained and a dataset batch can be fed to any model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class CropBox:
    """The region of the original image (pixels, end-exclusive) that the model actually sees."""

    top: int
    left: int
    bottom: int
    right: int


class ModelSpec:
    """Base class of model specs. Subclasses set ``name`` and implement ``build``."""

    name: str = "model"
    #: fixed (height, width) of a pretrained model; None when the input size comes from the dataset
    input_size: tuple[int, int] | None = None
    #: names of the output classes where the model knows them (ImageNet models); None otherwise
    class_names: list[str] | None = None

    def build(self, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> "keras.Model":
        raise NotImplementedError

    def preprocess(self, image: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropBox]:
        """Resize one uint8 HxWxC photo to the model input: float32 in [0, 255], plus the crop box.

        Default: resize the whole image (the book's recipe), so the crop box is the whole image.
        """
        import cv2

        height, width = size or self.input_size or image.shape[:2]
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if resized.ndim == 2:
            resized = resized[..., None]
        return resized.astype(np.float32), CropBox(0, 0, image.shape[0], image.shape[1])

    def weights_sha256(self) -> str | None:
        """sha256 of the weights file the model was built from (None for random initialization)."""
        return None
