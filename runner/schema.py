"""Structured-config schemas: one dataclass per config-group entry, registered in Hydra's ConfigStore.

Each ``conf/<group>/<name>.yaml`` lists ``/schema/<group>/<name>@_here_`` first in its defaults, so an
unknown key, a wrong type or a value outside an Enum fails when Hydra composes the config, before
TensorFlow is imported. The schemas live in their own ``schema/<group>`` groups so Hydra does not list
them among a group's options. Numeric ranges (:func:`runner.validation.bounded`) are checked right
after composition, by :func:`runner.validation.check_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.validation import bounded

# ---------------------------------------------------------------------------------- fixed value sets


class ColorMode(StrEnum):
    rgb = "rgb"
    grayscale = "grayscale"


class BadFiles(StrEnum):
    error = "error"  # stop, naming the files
    skip = "skip"  # leave them out, with a warning and a list in the run


class MnistSource(StrEnum):
    npm = "npm"
    keras = "keras"


class PhotoName(StrEnum):
    """scikit-image's samples that ship in its wheel (others are downloaded on first use and fail offline)."""

    chelsea = "chelsea"
    coffee = "coffee"
    astronaut = "astronaut"
    rocket = "rocket"


class Split(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


class Optimizer(StrEnum):
    """The optimizers ``keras.optimizers.get`` knows by name."""

    adadelta = "adadelta"
    adafactor = "adafactor"
    adagrad = "adagrad"
    adam = "adam"
    adamax = "adamax"
    adamw = "adamw"
    ftrl = "ftrl"
    lion = "lion"
    nadam = "nadam"
    rmsprop = "rmsprop"
    sgd = "sgd"


class Flip(StrEnum):
    horizontal = "horizontal"
    vertical = "vertical"
    horizontal_and_vertical = "horizontal_and_vertical"


class FillMode(StrEnum):
    nearest = "nearest"
    reflect = "reflect"
    wrap = "wrap"
    constant = "constant"


class FinetuneMode(StrEnum):
    features = "features"
    frozen = "frozen"
    finetune = "finetune"


class Pooling(StrEnum):
    flatten = "flatten"
    avg = "avg"


# --------------------------------------------------------------------------------------------- models


@dataclass
class SmallConvnetConfig:
    _target_: str = "runner.models.small_convnet.SmallConvnet"
    dropout: float = bounded(0.5, ge=0, lt=1)


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
    image_size: int = bounded(150, ge=1)
    batch_size: int = bounded(32, ge=1)
    color_mode: ColorMode = ColorMode.rgb
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = bounded(None, ge=1)
    bad_files: BadFiles = BadFiles.error


@dataclass
class CatsVsDogsConfig:
    _target_: str = "runner.data.cats_vs_dogs.CatsVsDogs"
    image_size: int = bounded(64, ge=1)
    batch_size: int = bounded(32, ge=1)
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = bounded(None, ge=1)
    bad_files: BadFiles = BadFiles.error
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING
    split_seed: int = 1337
    split_sizes: list[int] = bounded(factory=lambda: [1000, 500, 500], ge=1)


@dataclass
class MnistConfig:
    _target_: str = "runner.data.mnist.Mnist"
    batch_size: int = bounded(128, ge=1)
    validation_size: int = bounded(5000, ge=1, le=59999)
    seed: int = "${seed}"  # type: ignore[assignment]
    limit: Optional[int] = bounded(None, ge=1)
    source: MnistSource = MnistSource.npm
    cache_dir: Optional[str] = "${cache_dir}"
    sha256: str = MISSING


@dataclass
class PhotosConfig:
    _target_: str = "runner.data.photos.Photos"
    names: list[PhotoName] = field(default_factory=lambda: [PhotoName.chelsea])
    paths: list[str] = field(default_factory=list)
    folder: Optional[str] = None
    bad_files: BadFiles = BadFiles.error


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class AugmentationConfig:
    """The book's ImageDataGenerator settings, as Keras preprocessing layers (in Keras units)."""

    flip: Optional[Flip] = Flip.horizontal
    rotation: float = bounded(0.111, ge=0)  # fraction of a full turn: 40 degrees
    zoom: float = bounded(0.2, ge=0, lt=1)
    translation: float = bounded(0.2, ge=0, le=1)
    shear: float = bounded(0.0035, ge=0, le=1)  # tan(shear angle): the book's shear_range=0.2 is 0.2 degrees
    fill_mode: FillMode = FillMode.nearest


@dataclass
class ProbesConfig:
    """``task.probes`` of train/finetune: Grad-CAM of fixed images every few epochs, logged as the image
    timelines ``probe/<image>`` (step = epoch); runner/probes.py."""

    enabled: bool = True
    every: int = bounded(1, ge=1)  # epochs between probes
    images: int = bounded(4, ge=1)  # the first images of the split
    split: Split = Split.test
    layer: Optional[str] = None  # None: the last 4-D non-pooling layer (runner.layers.pick_layer)


@dataclass
class TrainConfig:
    _target_: str = "tasks.train.run"
    _partial_: bool = True
    epochs: int = bounded(15, ge=1)
    optimizer: Optimizer = Optimizer.rmsprop
    learning_rate: float = bounded(1e-3, gt=0)
    loss: str = "auto"
    augment: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    steps_per_epoch: Optional[int] = bounded(100, ge=1)
    augmentation_samples: int = bounded(9, ge=1)
    checkpoint: bool = False  # save the model after every epoch, so `resume=true` continues a killed run
    probes: ProbesConfig = field(default_factory=ProbesConfig)


@dataclass
class ActivationsConfig:
    _target_: str = "tasks.activations.run"
    _partial_: bool = True
    layers: Optional[list[str]] = None  # None: every Conv/Pool layer
    images_per_row: int = bounded(16, ge=1)
    images: int = bounded(1, ge=1)  # images taken from a dataset split (dataset=photos: every photo)
    split: Split = Split.test
    max_channels_drawn: Optional[int] = 64  # a grid draws the most varying ones; None: all (the .npz has all)


class FiltersInit(str, Enum):
    book = "book"  # pixels 128+20u+ImageNet mean: the book's caffe-space uniform*20+128
    gray = "gray"  # pixels 128+20u (models that take plain pixels, e.g. small_convnet)
    keras_io = "keras_io"  # its [-1, 1] (u-0.5)*0.25 = pixels 127.5*(1+(u-0.5)/4)


class GradientNormalization(str, Enum):
    rms = "rms"  # grads / (RMS + 1e-5), per image (book)
    l2 = "l2"  # grads / L2 norm, per image (keras.io)


# task=filters' pieces, one group each (conf/task/<group>/<option>.yaml), mirroring runner/featurevis/;
# each instantiates the piece itself (``_target_``), its fields the piece's settings.


@dataclass
class ChannelObjectiveConfig:
    """The filter's mean over the map, ``border`` positions left out at each side (keras.io: 2)."""

    _target_: str = "runner.featurevis.objectives.Channel"
    border: int = 0


@dataclass
class NeuronObjectiveConfig:
    """The filter at the map's centre."""

    _target_: str = "runner.featurevis.objectives.Neuron"


@dataclass
class LayerObjectiveConfig:
    """DeepDream: the mean square of the whole layer."""

    _target_: str = "runner.featurevis.objectives.Layer"


@dataclass
class PixelParamConfig:
    """The ascent moves the pixels (book, keras.io), started as ``start``."""

    _target_: str = "runner.featurevis.params.Pixels"
    start: FiltersInit = FiltersInit.book


@dataclass
class FourierParamConfig:
    """Lucid's 1/f-scaled spectrum through a sigmoid, colours decorrelated (ImageNet's) or not."""

    _target_: str = "runner.featurevis.params.Fourier"
    decorrelate: bool = True
    sd: float = bounded(0.01, gt=0)  # the spectrum's starting standard deviation
    decay_power: float = bounded(1.0, ge=0)  # 1: a 1/f amplitude spectrum


@dataclass
class TransformsConfig:
    """Random transforms at every step, in Lucid's order; 0 / null leaves a piece out (task/transforms=none:
    all out). Lucid's standard_transforms: pad 12, jitter 8, scale [0.9, 1.1], rotate 10, final_jitter 4.
    tasks/filters.py checks the values against the image size."""

    _target_: str = "runner.featurevis.transforms.Standard"
    pad: int = 0  # gray pixels added at each side
    jitter: int = 0  # random crop of up to this many pixels less - 1
    scale: Optional[list[float]] = None  # [low, high] zoom factor about the centre
    rotate: float = 0.0  # degrees, drawn from [-rotate, rotate]
    final_jitter: int = 0


@dataclass
class AscentStepConfig:
    """``variables += step_size * normalized gradient`` (book: rms, 1; keras.io: l2, 1275 = its 10 in [-1, 1])."""

    _target_: str = "runner.featurevis.steps.NormalizedAscent"
    step_size: float = bounded(1.0, gt=0)  # input pixels ([0, 255]) per step
    normalization: GradientNormalization = GradientNormalization.rms


@dataclass
class AdamStepConfig:
    """Adam ascent (Lucid: 0.05)."""

    _target_: str = "runner.featurevis.steps.Adam"
    learning_rate: float = bounded(0.05, gt=0)
    beta_1: float = bounded(0.9, ge=0, lt=1)
    beta_2: float = bounded(0.999, ge=0, lt=1)
    epsilon: float = bounded(1e-8, gt=0)


@dataclass
class RegularizersConfig:
    """Penalties on the pixels (in [0, 1] units, means), subtracted with these weights; 0 leaves one out."""

    _target_: str = "runner.featurevis.regularizers.penalty"
    l1_weight: float = bounded(0.0, ge=0)  # mean |x - l1_center| (Lucid's L1)
    l1_center: float = bounded(0.5, ge=0, le=1)
    total_variation_weight: float = bounded(0.0, ge=0)  # mean |neighbour differences|
    blur_weight: float = bounded(0.0, ge=0)  # Lucid's blur_input_each_step


@dataclass
class FiltersConfig:
    """Feature visualization by an ascent in input space: the pieces are groups (task/objective, task/param,
    task/transforms, task/step), set together by task/recipe (book: the book's 5.4.2, the default; keras_io;
    lucid)."""

    _target_: str = "tasks.filters.run"
    _partial_: bool = True
    layers: list[str] = field(default_factory=lambda: ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"])
    filters: Optional[list[int]] = None  # None: the first num_filters
    num_filters: int = 64
    image_size: int = 64
    steps: int = 40
    objective: Any = MISSING  # task/objective: channel | neuron | layer
    param: Any = MISSING  # task/param: pixel | fourier
    transforms: Any = MISSING  # task/transforms: none | standard
    step: Any = MISSING  # task/step: ascent | adam
    regularizers: RegularizersConfig = field(default_factory=RegularizersConfig)
    preactivation: bool = False  # the layer's linear part (its conv without the ReLU, or an activation's input)
    redirected_relu_steps: int = 0  # Lucid's redirected ReLU gradient for the first steps (16)
    chunk: int = bounded(0, ge=0)  # images per pass of the model inside a step (0: the whole batch; lucid: 4)
    diversity: float = 0.0  # weight of the diversity term (Olah 2017); 0: none
    deprocess_std: Optional[float] = 0.1  # keras.io: 0.15; None: the pixels as they are
    deprocess_crop: int = 0  # keras.io: 25
    grid_columns: int = 8
    margin: int = 5
    quality_metrics: bool = True  # log activation, robust_activation, high_frequency_energy per layer


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

    pooling: Pooling = Pooling.flatten  # flatten (book) | avg (global average pooling)
    units: int = bounded(256, ge=0)  # the hidden Dense layer (relu); 0 leaves it out
    dropout: float = bounded(0.5, ge=0, lt=1)  # 0 leaves the Dropout out
    optimizer: Optimizer = Optimizer.rmsprop
    learning_rate: float = bounded(2e-5, gt=0)  # book: RMSprop(2e-5)
    epochs: int = bounded(30, ge=1)


@dataclass
class FinetunePhaseConfig:
    """Training after unfreezing the top of the base (mode=finetune)."""

    optimizer: Optimizer = Optimizer.rmsprop
    learning_rate: float = bounded(1e-5, gt=0)  # book: RMSprop(1e-5)
    epochs: int = bounded(100, ge=1)


@dataclass
class FinetuneConfig:
    """Transfer learning from a pretrained conv base (book 5.3): mode features | frozen | finetune."""

    _target_: str = "tasks.finetune.run"
    _partial_: bool = True
    mode: FinetuneMode = FinetuneMode.features
    cut_layer: Optional[str] = None  # None: the base's last 4-D feature map (out_relu, block5_pool)
    head: FinetuneHeadConfig = field(default_factory=FinetuneHeadConfig)
    unfreeze_from: Optional[str] = None  # None: block5_conv1 (VGG16), block_16_expand (MobileNetV2), ...
    finetune: FinetunePhaseConfig = field(default_factory=FinetunePhaseConfig)
    loss: str = "auto"
    augment: Optional[bool] = None  # None: false for mode=features, else true
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    augmentation_samples: int = bounded(9, ge=1)
    steps_per_epoch: Optional[int] = bounded(None, ge=1)
    feature_cache: bool = True  # mode=features: reuse the base's outputs from <cache>/features
    feature_cache_max_gb: Optional[float] = 20.0  # least recently used files deleted beyond it; None: no cap
    cache_dir: Optional[str] = "${cache_dir}"
    probes: ProbesConfig = field(default_factory=ProbesConfig)


# ----------------------------------------------------------------------------------------- tracking


@dataclass
class TrackingConfig:
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}"
    experiment: str = "${hydra:runtime.choices.task}"
    run_name: Optional[str] = None
    heartbeat_s: float = 60.0  # how often a running job refreshes its run's convlab.heartbeat tag
    # a RUNNING run from another host with no heartbeat for this long counts as vanished (docs/reliability.md)
    stale_after_s: float = 900.0
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
    # the metric a job returns to Hydra's sweeper (hydra/sweeper=optuna optimizes it); None: the job returns nothing
    optimized_metric: Optional[str] = None


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
    "task/objective": {"channel": ChannelObjectiveConfig, "neuron": NeuronObjectiveConfig,
                       "layer": LayerObjectiveConfig},
    "task/param": {"pixel": PixelParamConfig, "fourier": FourierParamConfig},
    "task/transforms": {"none": TransformsConfig, "standard": TransformsConfig},
    "task/step": {"ascent": AscentStepConfig, "adam": AdamStepConfig},
    "tracking": {"local": TrackingConfig, "server": ServerTrackingConfig},
}

# task=explain and its task/method group: schemas derived from runner.explain's methods (no TensorFlow)
from runner.explain.schema import explain_schemas  # noqa: E402

for _group, _entries in explain_schemas().items():
    SCHEMAS.setdefault(_group, {}).update(_entries)


def quick_or_full(quick_value: Any, full_value: Any, *, _root_: Any) -> Any:
    """``${quick:1,30}``: 1 when the top-level ``quick=true``, else 30 (presets shrink to CI size)."""
    return quick_value if _root_.get("quick") else full_value


#: the group holding the schemas, apart from the options they validate
SCHEMA_GROUP = "schema"


def register_configs() -> None:
    OmegaConf.register_new_resolver("quick", quick_or_full, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="convlab_schema", node=ConvlabConfig)
    for group, entries in SCHEMAS.items():
        for name, node in entries.items():
            # conf/<group>/<name>.yaml extends it with `- /schema/<group>/<name>@_here_`
            cs.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)
