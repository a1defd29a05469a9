"""What the visualization tasks share: a built model and the images to show it, each with the region
of the original photo that the model actually sees."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.data.base import ImageDataset
from runner.data.images import warn_small
from runner.errors import ConvlabError
from runner.models.base import CropBox, ModelSpec

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


@dataclass
class VisualInput:
    name: str
    original: np.ndarray  # uint8 HxWxC, as loaded
    model_input: np.ndarray  # float32 [0, 255] at the model's input size
    crop: CropBox  # region of ``original`` that ``model_input`` shows


def build_model(spec: ModelSpec, dataset) -> "keras.Model":
    """The model as the spec builds it on its own (pretrained, or loaded from a run); a model that needs
    a dataset's shape (small_convnet) is built for that dataset, with a warning: its weights are random."""
    try:
        return spec.build()
    except ConvlabError:
        if not isinstance(dataset, ImageDataset):
            raise
    log.warning("%s has no trained weights here: visualizing a randomly initialized network "
                "(train it first, then use model=from_run model.run_id=<id>)", spec.name)
    return spec.build(dataset.input_shape, dataset.num_classes)


def load_inputs(spec: ModelSpec, model, dataset, count: int, split: str) -> list[VisualInput]:
    """Photos (``dataset=photos``) or the first ``count`` images of a dataset split, prepared for ``model``."""
    height, width, channels = model.input_shape[1:]
    if hasattr(dataset, "images"):
        photos = dataset.images()
    elif isinstance(dataset, ImageDataset):
        photos = _split_images(dataset, count, split)
    else:
        raise ConvlabError(f"dataset {type(dataset).__name__} gives no images to visualize",
                           fix="use dataset=photos or an image dataset with splits")
    warn_small([(name, image.shape[:2]) for name, image in photos], (height, width), f"{model.name}'s input")
    inputs = []
    for name, image in photos:
        image = _match_channels(image, channels)
        model_input, crop = spec.preprocess(image, size=(height, width))
        inputs.append(VisualInput(name, image, _match_channels(model_input, channels).astype(np.float32), crop))
    return inputs


def _split_images(dataset: ImageDataset, count: int, split: str) -> list[tuple[str, np.ndarray]]:
    photos = []
    for index, (image, label) in enumerate(dataset.split(split).unbatch().take(count).as_numpy_iterator()):
        photos.append((f"{split}_{index}_{dataset.class_names[int(label)]}", np.clip(image, 0, 255).astype(np.uint8)))
    if not photos:
        raise ConvlabError(f"the {split} split of {dataset.name} is empty")
    return photos


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image[..., :1], channels, axis=-1)
