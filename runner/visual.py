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
        photos.append((split_image_name(split, index, dataset.class_names[int(label)]),
                       np.clip(image, 0, 255).astype(np.uint8)))
    if not photos:
        raise ConvlabError(f"the {split} split of {dataset.name} is empty")
    return photos


def split_image_name(split: str, index: int, class_name: str) -> str:
    """The name of a split's ``index``-th image in artifacts and image keys: ``test_0_cat``."""
    return f"{split}_{index}_{class_name}"


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image[..., :1], channels, axis=-1)


# ------------------------------------------------------------------------------------- pictures of maps


def tile(pictures: np.ndarray, columns: int, gap: int = 0, fill=0) -> np.ndarray:
    """Pictures (count, height, width[, channels]) in one grid: picture k at row k // columns, column
    k % columns (reading order), ``gap`` pixels between them (not around); the gaps and the empty slots of
    the last row are ``fill``. A grid never has more columns than pictures."""
    count, height, width = pictures.shape[:3]
    columns = min(columns, count)
    rows = -(-count // columns)
    slots = np.full((rows * columns, height + gap, width + gap, *pictures.shape[3:]), fill, dtype=pictures.dtype)
    slots[:count, :height, :width] = pictures
    grid = slots.reshape(rows, columns, height + gap, width + gap, *pictures.shape[3:]).swapaxes(1, 2)
    grid = grid.reshape(rows * (height + gap), columns * (width + gap), *pictures.shape[3:])
    return grid[:rows * (height + gap) - gap, :columns * (width + gap) - gap]


def class_names(spec: ModelSpec, dataset, count: int) -> list[str]:
    """The model's names (ImageNet, a trained run's), else the dataset's, else ``class <i>``."""
    for names in (spec.class_names, getattr(dataset, "class_names", None)):
        if names and len(names) == count:
            return list(names)
    return [f"class {index}" for index in range(count)]


def rgb(image: np.ndarray) -> np.ndarray:
    """An image as 3 channels (gray repeated; an alpha channel dropped)."""
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def jet(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] map in the JET colormap, uint8 RGB."""
    import cv2

    colored = cv2.applyColorMap(np.uint8(np.round(255 * np.clip(heatmap, 0.0, 1.0))), cv2.COLORMAP_JET)
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)


def overlay(original: np.ndarray, heatmap: np.ndarray, crop: CropBox, alpha: float) -> np.ndarray:
    """The book's picture at the original resolution: the JET heatmap blended at ``alpha`` over the region
    the model saw (outlined when that is not the whole photo)."""
    import cv2

    picture = rgb(original).copy()
    height, width = crop.bottom - crop.top, crop.right - crop.left
    colored = jet(cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR))
    region = picture[crop.top:crop.bottom, crop.left:crop.right]
    picture[crop.top:crop.bottom, crop.left:crop.right] = cv2.addWeighted(colored, alpha, region, 1.0 - alpha, 0.0)
    if (crop.top, crop.left, crop.bottom, crop.right) != (0, 0, *original.shape[:2]):
        thickness = max(1, round(min(original.shape[:2]) / 150))
        cv2.rectangle(picture, (crop.left, crop.top), (crop.right - 1, crop.bottom - 1), (255, 255, 255), thickness)
    return picture


def map_picture(heatmap: np.ndarray, crop: CropBox, colormap: str = "jet") -> np.ndarray:
    """A map's cells (as the book's matshow) at the size of the crop box: JET colours, or ``gray``
    (an input-space magnitude, as the saliency papers show it)."""
    import cv2

    size = (crop.right - crop.left, crop.bottom - crop.top)
    resized = cv2.resize(heatmap, size, interpolation=cv2.INTER_NEAREST)
    return jet(resized) if colormap == "jet" else np.uint8(np.round(255 * np.clip(resized, 0.0, 1.0)))


def diverging_picture(signed: np.ndarray, crop: CropBox) -> np.ndarray:
    """A signed map at the crop box's size, blue (negative) - white (0) - red (positive), scaled by its peak
    magnitude."""
    import cv2
    from matplotlib import colormaps

    peak = float(np.abs(signed).max())
    scaled = 0.5 + 0.5 * signed / peak if peak > 0 else np.full_like(signed, 0.5)
    size = (crop.right - crop.left, crop.bottom - crop.top)
    resized = cv2.resize(scaled.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    return np.uint8(np.round(255 * colormaps["bwr"](resized)[..., :3]))


def box_list(crop: CropBox) -> list[int]:
    return [crop.top, crop.left, crop.bottom, crop.right]
