"""Structured-config schemas: one dataclass per config-group entry, registered in Hydra's ConfigStore.

Each ``conf/<group>/<name>.yaml`` lists ``<name>_schema`` first in its defaults, so an unknown key or a
wrong type fails when Hydra composes the config, before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------------------------- models


@dataclass
class SmallConvnetConfig:
    _target_: str = "runner.models.small_convnet.SmallConvnet"
    dropout: float = 0.5


@dataclass
class MnistConvnetConfig:
    _target_: str = "runner.models.mnist_convnet.MnistConvnet"


@dataclass
class MobileNetV2Config:
    _target_: str = "runner.models.mobilenet_v2.MobileNetV2"
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING


@dataclass
class EfficientNetLite0Config:
    _target_: str = "runner.models.efficientnet_lite0.EfficientNetLite0"
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING


@dataclass
class VGG16Config:
    _target_: str = "runner.models.vgg16.VGG16"
    weights: Optional[str] = "imagenet"
    include_top: bool = True


@dataclass
class VGG16HedConfig:
    _target_: str = "runner.models.vgg16_hed.VGG16Hed"
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING


@dataclass
class FromRunConfig:
    _target_: str = "runner.models.from_run.FromRun"
    run_id: Optional[str] = None
    uri: Optional[str] = None


# ------------------------------------------------------------------------------------------- datasets


@dataclass
class FolderConfig:
    _target_: str = "runner.data.folder.Folder"
    path: str = MISSING
    image_size: int = 150
    batch_size: int = 32
    color_mode: str = "rgb"
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = None
    bad_files: str = "error"


@dataclass
class CatsVsDogsConfig:
    _target_: str = "runner.data.cats_vs_dogs.CatsVsDogs"
    image_size: int = 64
    batch_size: int = 32
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = None
    bad_files: str = "error"
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING
    split_seed: int = 1337
    split_sizes: list[int] = field(default_factory=lambda: [1000, 500, 500])


@dataclass
class MnistConfig:
    _target_: str = "runner.data.mnist.Mnist"
    batch_size: int = 128
    validation_size: int = 5000
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = None
    source: str = "npm"
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING


@dataclass
class PhotosConfig:
    _target_: str = "runner.data.photos.Photos"
    names: list[str] = field(default_factory=lambda: ["chelsea"])
    paths: list[str] = field(default_factory=list)
    folder: Optional[str] = None


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class AugmentationConfig:
    """The book's ImageDataGenerator settings, as Keras preprocessing layers (factors are fractions)."""

    flip: Optional[str] = "horizontal"
    rotation: float = 0.111  # 40 degrees
    zoom: float = 0.2
    translation: float = 0.2
    shear: float = 0.2


@dataclass
class TrainConfig:
    _target_: str = "tasks.train.run"
    _partial_: bool = True
    epochs: int = 15
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-4
    loss: str = "auto"
    augment: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    steps_per_epoch: Optional[int] = None
    augmentation_samples: int = 9


# ----------------------------------------------------------------------------------------- tracking


@dataclass
class TrackingConfig:
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}"
    experiment: str = "${hydra:runtime.choices.task}"
    run_name: Optional[str] = None


# --------------------------------------------------------------------------------------------- root


@dataclass
class ConvlabConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    task: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 42
    deterministic: bool = False
    cache_dir: Optional[str] = None  # None: $CONVLAB_CACHE, else ~/.cache/convlab


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {
        "small_convnet": SmallConvnetConfig,
        "mnist_convnet": MnistConvnetConfig,
        "mobilenet_v2": MobileNetV2Config,
        "efficientnet_lite0": EfficientNetLite0Config,
        "vgg16": VGG16Config,
        "vgg16_hed": VGG16HedConfig,
        "from_run": FromRunConfig,
    },
    "dataset": {
        "folder": FolderConfig,
        "cats_vs_dogs": CatsVsDogsConfig,
        "mnist": MnistConfig,
        "photos": PhotosConfig,
    },
    "task": {"train": TrainConfig},
    "tracking": {"local": TrackingConfig},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="convlab_schema", node=ConvlabConfig)
    for group, entries in SCHEMAS.items():
        for name, node in entries.items():
            cs.store(group=group, name=f"{name}_schema", node=node)
