"""Structured-config schemas: one dataclass per config-group entry, registered in Hydra's ConfigStore.

Each ``conf/<group>/<name>.yaml`` lists ``<name>_schema`` first in its defaults, so an unknown key or a
wrong type fails when Hydra composes the config, before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

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
class ResNet50V2Config:
    _target_: str = "runner.models.resnet50v2.ResNet50V2"
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
    """The book's ImageDataGenerator settings, as Keras preprocessing layers (in Keras units)."""

    flip: Optional[str] = "horizontal"
    rotation: float = 0.111  # fraction of a full turn: 40 degrees
    zoom: float = 0.2
    translation: float = 0.2
    shear: float = 0.0035  # tan(shear angle): the book's shear_range=0.2 is 0.2 degrees
    fill_mode: str = "nearest"  # nearest | reflect | wrap | constant


@dataclass
class TrainConfig:
    _target_: str = "tasks.train.run"
    _partial_: bool = True
    epochs: int = 15
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-3
    loss: str = "auto"
    augment: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    steps_per_epoch: Optional[int] = 100
    augmentation_samples: int = 9
    checkpoint: bool = False  # save the model after every epoch, so `resume=true` continues a killed run


@dataclass
class ActivationsConfig:
    _target_: str = "tasks.activations.run"
    _partial_: bool = True
    layers: Optional[list[str]] = None  # None: every Conv/Pool layer
    images_per_row: int = 16
    images: int = 1  # images taken from a dataset split (dataset=photos: every photo)
    split: str = "test"


@dataclass
class FiltersConfig:
    """Gradient ascent in input space; the defaults are the book's recipe (5.4.2)."""

    _target_: str = "tasks.filters.run"
    _partial_: bool = True
    layers: list[str] = field(default_factory=lambda: ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"])
    filters: Optional[list[int]] = None  # None: the first num_filters
    num_filters: int = 64
    image_size: int = 64
    steps: int = 40
    step_size: float = 1.0  # input pixels ([0, 255]) per step; keras.io: 1275 (its 10 in ResNet50V2's [-1, 1])
    gradient_normalization: str = "rms"  # rms (book) | l2 (keras.io), per image
    init: str = "book"  # book: pixels 128+20u+ImageNet mean (its caffe-space start) | gray: 128+20u | keras_io: 127.5*(1+(u-0.5)/4)
    loss_border: int = 0  # keras.io: 2 (activations near the border excluded from the loss)
    deprocess_std: float = 0.1  # keras.io: 0.15
    deprocess_crop: int = 0  # keras.io: 25
    grid_columns: int = 8
    margin: int = 5


@dataclass
class GradcamConfig:
    _target_: str = "tasks.gradcam.run"
    _partial_: bool = True
    layer: Optional[str] = None  # None: the last 4-D, non-pooling layer
    class_index: Optional[int] = None  # None: each image's top-1 class
    score: str = "probability"  # probability (book) | logit (Grad-CAM paper)
    alpha: float = 0.4
    top: int = 3
    images: int = 4  # images taken from a dataset split (dataset=photos: every photo)
    split: str = "test"


@dataclass
class FinetuneHeadConfig:
    """The classifier on the conv base (book 5.3) and how it is trained on the frozen base."""

    pooling: str = "flatten"  # flatten (book) | avg (global average pooling)
    units: int = 256  # the hidden Dense layer (relu); 0 leaves it out
    dropout: float = 0.5  # 0 leaves the Dropout out
    optimizer: str = "rmsprop"
    learning_rate: float = 2e-5  # book: RMSprop(2e-5)
    epochs: int = 30


@dataclass
class FinetunePhaseConfig:
    """Training after unfreezing the top of the base (mode=finetune)."""

    optimizer: str = "rmsprop"
    learning_rate: float = 1e-5  # book: RMSprop(1e-5)
    epochs: int = 100


@dataclass
class FinetuneConfig:
    """Transfer learning from a pretrained conv base (book 5.3): mode features | frozen | finetune."""

    _target_: str = "tasks.finetune.run"
    _partial_: bool = True
    mode: str = "features"
    cut_layer: Optional[str] = None  # None: the base's last 4-D feature map (out_relu, block5_pool)
    head: FinetuneHeadConfig = field(default_factory=FinetuneHeadConfig)
    unfreeze_from: Optional[str] = None  # None: block5_conv1 (VGG16), block_16_expand (MobileNetV2), ...
    finetune: FinetunePhaseConfig = field(default_factory=FinetunePhaseConfig)
    loss: str = "auto"
    augment: Optional[bool] = None  # None: false for mode=features, else true
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    augmentation_samples: int = 9
    steps_per_epoch: Optional[int] = None
    feature_cache: bool = True  # mode=features: reuse the base's outputs from <cache>/features
    cache_dir: Optional[str] = "${cache_dir}"


# ----------------------------------------------------------------------------------------- tracking


@dataclass
class TrackingConfig:
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}"
    experiment: str = "${hydra:runtime.choices.task}"
    run_name: Optional[str] = None
    #: register the job's logged model under this name in MLflow's model registry
    register_model: Optional[str] = None


@dataclass
class ServerTrackingConfig(TrackingConfig):
    """An MLflow tracking server over HTTP (``make server`` starts one here); credentials come from the
    environment (MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN), never from the config."""

    uri: str = "${oc.env:MLFLOW_TRACKING_URI,http://127.0.0.1:5000}"


# --------------------------------------------------------------------------------------------- root


@dataclass
class ConvlabConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    task: Any = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 42
    deterministic: bool = False
    resume: bool = False  # skip jobs whose config already has a FINISHED run; continue checkpointed ones
    rerun_of: Optional[str] = None  # set by convlab-rerun: the run this one reproduces
    strict: bool = False  # rerun: a changed commit, package version or input hash is an error
    quick: bool = False  # presets: ${quick:<small>,<full>} picks the small value (CI-sized runs)
    cache_dir: Optional[str] = None  # None: $CONVLAB_CACHE, else ~/.cache/convlab


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {
        "small_convnet": SmallConvnetConfig,
        "mnist_convnet": MnistConvnetConfig,
        "mobilenet_v2": MobileNetV2Config,
        "efficientnet_lite0": EfficientNetLite0Config,
        "vgg16": VGG16Config,
        "vgg16_hed": VGG16HedConfig,
        "resnet50v2": ResNet50V2Config,
        "from_run": FromRunConfig,
    },
    "dataset": {
        "folder": FolderConfig,
        "cats_vs_dogs": CatsVsDogsConfig,
        "mnist": MnistConfig,
        "photos": PhotosConfig,
    },
    "task": {
        "train": TrainConfig,
        "activations": ActivationsConfig,
        "filters": FiltersConfig,
        "gradcam": GradcamConfig,
        "finetune": FinetuneConfig,
    },
    "tracking": {"local": TrackingConfig, "server": ServerTrackingConfig},
}


def quick_or_full(quick_value: Any, full_value: Any, *, _root_: Any) -> Any:
    """``${quick:1,30}``: 1 when the top-level ``quick=true``, else 30 (presets shrink to CI size)."""
    return quick_value if _root_.get("quick") else full_value


def register_configs() -> None:
    OmegaConf.register_new_resolver("quick", quick_or_full, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="convlab_schema", node=ConvlabConfig)
    for group, entries in SCHEMAS.items():
        for name, node in entries.items():
            cs.store(group=group, name=f"{name}_schema", node=node)
