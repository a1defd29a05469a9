"""Task `finetune`: transfer learning from a pretrained conv base, the three modes of the book's section 5.3.

The conv base is the model the runner builds (``model=mobilenet_v2``, ``vgg16``, ``vgg16_hed``, ...) cut
at ``task.cut_layer`` (default: its last 4-D feature map, ``out_relu`` for MobileNetV2, ``block5_pool``
for VGG16), as a nested ``keras.Model`` named after the base. The classifier is::

    image (the dataset's size, float32 [0, 255])
      -> [gray_to_rgb] -> [resize: bilinear to the base's fixed input size]
      -> <base> (called with training=False: BatchNorm stays in inference mode, also when unfrozen)
      -> head_flatten | head_avg_pool -> head_dense (relu) -> head_dropout -> predictions

``predictions`` is Dense(1, sigmoid) for two classes, else Dense(n, softmax). The saved model takes the
dataset's images directly, and Grad-CAM addresses the base's layers as ``<base>/<layer>``.

Modes (``task.mode``):

* ``features``: run the conv base once over every split (no augmentation), train only the head on the
  stored features. The features are cached on disk, ``<cache>/features/<key>.npz``, keyed by the base
  (name, a digest of its weights, the cut layer, its input/output shapes), the dataset (name, content
  hash, split, image size, channels) and the preprocessing in front of the base; later runs (a sweep over
  head hyper-parameters) load them instead of running the base again. The run's tag ``feature_cache`` is
  ``hit``, ``miss``, ``partial`` (some splits) or ``off``. Features are stored as float16 (half the size;
  a run that computes them trains on the same rounded values a later run loads), and the folder is kept
  under ``task.feature_cache_max_gb`` by deleting the least recently used files.
* ``frozen``: the base frozen inside the model, trained end to end with augmentation.
* ``finetune``: train the head on the frozen base (phase ``head``; skipped when ``model=from_run`` gives a
  classifier this task logged), then unfreeze the base's layers from ``task.unfreeze_from`` on (book:
  ``block5_conv1``) and train with a low learning rate (phase ``finetune``; book: RMSprop 1e-5).

Every mode logs what ``train`` logs: per-epoch accuracy/loss/val_accuracy/val_loss (the phases of
``finetune`` numbered on in one curve), ``plots/accuracy.png``, ``plots/loss.png``, ``test_loss``,
``test_accuracy`` and the model at ``model/``; plus the metrics ``<phase>_trainable_params`` and
``<phase>_non_trainable_params`` of each phase.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np

from runner import plots, terminal, training
from runner.data.base import SPLITS, ImageDataset
from runner.errors import ConvlabError
from runner.fetch import cache_root
from runner.explain.targets import is_binary, output_units
from runner.layers import feature_map_paths, is_spatial, pick_layer, unknown_layer
from runner.models.base import ModelSpec
from runner.schema import FinetuneMode, Pooling
from runner.tracking import final_metrics, log_keras_model

if TYPE_CHECKING:
    import keras

MODES = tuple(FinetuneMode)
POOLINGS = tuple(Pooling)
#: where ``task.unfreeze_from=null`` unfreezes, per base: the book's block5_conv1 for VGG16, the first
#: whole block of the last resolution stage for the others (7x7 at 224 px), as block5 is VGG16's. For
#: MobileNetV2 that is block_14_expand (blocks 14-16 and Conv_1): 0.892 test here where block_16_expand
#: alone gave 0.868 (README, results); for EfficientNet-Lite0 block6b_expand_conv (6b-6d, 7a; by the same
#: rule, not measured)
DEFAULT_UNFREEZE_FROM = {
    "vgg16": "block5_conv1",
    "vgg16_hed": "block5_conv1",
    "mobilenet_v2": "block_14_expand",
    "efficientnet_lite0": "block6b_expand_conv",
}
#: part of every feature cache key: bump it whenever the way features are computed or stored changes
FEATURE_CACHE_VERSION = 2  # 2: float16
#: float16's largest finite value; features beyond it are stored as float32
FLOAT16_MAX = float(np.finfo(np.float16).max)
CACHE_TAG = "feature_cache"


def run(
    *,
    model: ModelSpec,
    dataset: ImageDataset,
    mode: str,
    cut_layer: str | None,
    head: Mapping[str, Any],
    unfreeze_from: str | None,
    finetune: Mapping[str, Any],
    loss: str,
    augment: bool | None,
    augmentation: Mapping[str, Any],
    augmentation_samples: int,
    steps_per_epoch: int | None,
    feature_cache: bool,
    cache_dir: str | None,
    feature_cache_max_gb: float | None = 20.0,
    probes: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    head, finetune = dict(head), dict(finetune)
    augment = check_options(mode, head, augment)
    parts = build_parts(model, dataset, cut_layer=cut_layer, head=head,
                        reuse_classifier=mode == "finetune" and cut_layer is None)
    mlflow.set_tags({"finetune.base": parts.base.name, "finetune.cut_layer": parts.cut_layer,
                     "finetune.preprocessing": parts.preprocessing})

    if mode == "features":
        network = _train_on_features(parts, dataset, head, loss, steps_per_epoch, feature_cache, cache_dir,
                                     feature_cache_max_gb, probes)
    else:
        train = dataset.split("train")
        if augment:
            augmenter = training.augmentation_layer(**augmentation)
            mlflow.log_figure(plots.augmentation_grid(train, augmenter, augmentation_samples),
                              "plots/augmentation.png")
            train = training.augmented(train, augmenter)
        network = parts.network
        phases = []
        probe = _probes(probes, network, dataset, 0)  # one callback for both phases: its pass is traced once
        if parts.reused:
            mlflow.set_tag("finetune.head_phase", "skipped: the model from model=from_run has a trained head")
            print("[convlab] head already trained (model=from_run): fine-tuning only")
        else:
            parts.base.trainable = False
            phases.append(_fit_phase(network, "head", head, loss, train, dataset, steps_per_epoch, first_epoch=0,
                                     probe=probe))
        if mode == "finetune":
            layer = unfreeze(parts.base, unfreeze_from or _default_unfreeze_from(parts.base))
            mlflow.set_tag("finetune.unfreeze_from", layer)
            first_epoch = len(phases[0].get("loss", [])) if phases else 0
            phases.append(_fit_phase(network, "finetune", finetune, loss, train, dataset, steps_per_epoch,
                                     first_epoch=first_epoch, probe=probe))
        history = training.merge_histories(*phases)
        starts = [len(phases[0].get("loss", []))] if len(phases) == 2 else []
        training.log_curves(history, phase_starts=starts)
        training.log_test_metrics(network, dataset.split("test"))

    log_keras_model(network, dataset.class_names, dataset.split("test"))
    return final_metrics()


def check_options(mode: str, head: dict[str, Any], augment: bool | None) -> bool:
    """Whether the job augments (``augment=None``: every mode but ``features``), after refusing a mode,
    pooling or dropout it cannot use, and augmentation in ``features`` mode (the base runs once)."""
    if mode not in MODES:
        raise ConvlabError(f"unknown task.mode={mode!r}", fix=f"use one of {', '.join(MODES)}")
    if head["pooling"] not in POOLINGS:
        raise ConvlabError(f"unknown task.head.pooling={head['pooling']!r}", fix=f"use one of {', '.join(POOLINGS)}")
    if not 0 <= head["dropout"] < 1:
        raise ConvlabError(f"task.head.dropout={head['dropout']} is not a fraction in [0, 1)",
                           fix="set task.head.dropout to e.g. 0.5 (the book), or 0 for no dropout")
    if mode == "features" and augment:
        raise ConvlabError(
            "task.mode=features cannot augment: the conv base runs once over the stored images",
            fix="drop task.augment=true, or use task.mode=frozen (the base inside the model, with augmentation)",
        )
    return mode != "features" if augment is None else augment


# ------------------------------------------------------------------------------------------- the model


@dataclass
class Parts:
    """The classifier and its pieces: ``features`` is the base's output tensor in the classifier's graph."""

    network: "keras.Model"
    base: "keras.Model"
    inputs: Any
    features: Any
    cut_layer: str
    preprocessing: str
    reused: bool = False  # the whole classifier came from model=from_run (its head is trained)


def build_parts(spec: ModelSpec, dataset: ImageDataset, *, cut_layer: str | None, head: Mapping[str, Any],
                reuse_classifier: bool = False) -> Parts:
    """The conv base cut at ``cut_layer`` inside a classifier for ``dataset`` with a new head.

    A model that holds exactly one nested model (a classifier this task logged, via ``model=from_run``)
    gives its nested base; with ``reuse_classifier`` it is kept whole, head included.
    """
    import keras

    pretrained = spec.build()
    nested = [layer for layer in pretrained.layers if isinstance(layer, keras.Model)]
    if len(nested) == 1 and reuse_classifier:
        return _reused_classifier(pretrained, nested[0], dataset)
    source = nested[0] if len(nested) == 1 else pretrained
    base = cut(source, cut_layer, name=source.name if nested or source.name != "functional" else spec.name)
    inputs, x, preprocessing = _input_pipeline(base, dataset)
    features = base(x, training=False)
    outputs = apply_layers(head_layers(head, dataset.num_classes), features)
    network = keras.Model(inputs, outputs, name=f"{base.name}_classifier")
    return Parts(network, base, inputs, features, base.layers[-1].name, preprocessing)


def _reused_classifier(network: "keras.Model", base: "keras.Model", dataset: ImageDataset) -> Parts:
    if tuple(network.input_shape[1:]) != tuple(dataset.input_shape):
        raise ConvlabError(
            f"the model from model=from_run takes images of shape {tuple(network.input_shape[1:])}, "
            f"the dataset gives {tuple(dataset.input_shape)}",
            fix="set dataset.image_size to the size that run used",
        )
    outputs = network.output_shape[-1]
    if outputs != output_units(dataset.num_classes):
        raise ConvlabError(
            f"the model from model=from_run has {outputs} output(s), the dataset has {dataset.num_classes} classes",
            fix="fine-tune it on the dataset it was trained on, or set task.cut_layer to put a new head on its base",
        )
    preprocessing = ",".join(layer.name for layer in network.layers if layer.name in ("gray_to_rgb", "resize"))
    return Parts(network, base, network.inputs, base.output, base.layers[-1].name, preprocessing or "none",
                 reused=True)


def last_feature_map(model: "keras.Model") -> str:
    """The name of the last layer with a 4-D (batch, height, width, channels) output, pooling included
    (VGG16's block5_pool): runner.layers.pick_layer's rule, on ``model``'s own layers."""
    if not feature_map_paths(model, pooling=True, nested=False):
        raise ConvlabError(f"model {model.name!r} has no layer with a 4-D feature map to use as a conv base",
                           fix="pick a convolutional model: model=mobilenet_v2, model=vgg16, model=vgg16_hed, ...")
    return pick_layer(model, None, pooling=True, nested=False)


def cut(model: "keras.Model", layer_name: str | None, name: str) -> "keras.Model":
    """``model`` from its input to ``layer_name`` (None: its last 4-D feature map), as a model called ``name``."""
    import keras

    layer_name = layer_name or last_feature_map(model)
    if layer_name.startswith(f"{model.name}/"):
        layer_name = layer_name[len(model.name) + 1:]
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        spatial = [layer.name for layer in model.layers if is_spatial(layer)]
        raise unknown_layer(f"model {model.name!r} has no layer {layer_name!r} to cut at", layer_name, spatial,
                            fix="set task.cut_layer to one of those, or null", kind="feature maps") from None
    if not is_spatial(layer):
        raise ConvlabError(f"layer {layer_name!r} of {model.name!r} is not a 4-D feature map",
                           fix="set task.cut_layer to a convolution, activation or pooling layer, or null")
    return keras.Model(model.inputs, layer.output, name=name)


def _input_pipeline(base: "keras.Model", dataset: ImageDataset):
    """The classifier's input and what turns the dataset's images into the base's input, described."""
    import keras

    inputs = keras.Input(dataset.input_shape, name="image")
    x, steps = inputs, []
    base_channels = base.input_shape[-1]
    if dataset.channels != base_channels:
        if (dataset.channels, base_channels) != (1, 3):
            raise ConvlabError(f"the base {base.name!r} takes {base_channels}-channel images, the dataset has "
                               f"{dataset.channels}", fix="use an RGB (or grayscale) dataset")
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
        steps.append("gray_to_rgb")
    target = tuple(base.input_shape[1:3])
    if None not in target and target != tuple(dataset.image_size):
        x = keras.layers.Resizing(*target, interpolation="bilinear", name="resize")(x)
        steps.append(f"resize_bilinear_{target[0]}x{target[1]}")
    return inputs, x, ",".join(steps) or "none"


def head_layers(head: Mapping[str, Any], num_classes: int) -> list["keras.layers.Layer"]:
    """The book's head: Flatten (or global average pooling) -> Dense relu -> Dropout -> the classifier.
    ``units=0`` leaves out the hidden Dense layer, ``dropout=0`` the Dropout."""
    from keras import layers

    stack = [layers.Flatten(name="head_flatten") if head["pooling"] == "flatten"
             else layers.GlobalAveragePooling2D(name="head_avg_pool")]
    if head["units"]:
        stack.append(layers.Dense(head["units"], activation="relu", name="head_dense"))
        if head["dropout"]:
            stack.append(layers.Dropout(head["dropout"], name="head_dropout"))
    if is_binary(output_units(num_classes)):
        stack.append(layers.Dense(1, activation="sigmoid", name="predictions"))
    else:
        stack.append(layers.Dense(num_classes, activation="softmax", name="predictions"))
    return stack


def apply_layers(stack: list, x):
    for layer in stack:
        x = layer(x)
    return x


def unfreeze(base: "keras.Model", layer_name: str) -> str:
    """Make the layers of ``base`` from ``layer_name`` on trainable and the ones before it frozen (the
    book's loop over ``conv_base.layers``); ``layer_name`` may carry the ``<base>/`` prefix."""
    if layer_name.startswith(f"{base.name}/"):
        layer_name = layer_name[len(base.name) + 1:]
    names = [layer.name for layer in base.layers]
    if layer_name not in names:
        raise unknown_layer(f"the conv base {base.name!r} has no layer {layer_name!r} to unfreeze from", layer_name,
                            names, fix="set task.unfreeze_from to one of those")
    base.trainable = True
    trainable = False
    for layer in base.layers:
        trainable = trainable or layer.name == layer_name
        layer.trainable = trainable
    return layer_name


def _default_unfreeze_from(base: "keras.Model") -> str:
    if base.name in DEFAULT_UNFREEZE_FROM:
        return DEFAULT_UNFREEZE_FROM[base.name]
    raise ConvlabError(f"no default layer to unfreeze from for the conv base {base.name!r}",
                       fix="set task.unfreeze_from=<layer> (book: block5_conv1 for VGG16)")


# ------------------------------------------------------------------------------------------ training


def _compile(network: "keras.Model", settings: Mapping[str, Any], loss: str, steps_per_execution: int = 1) -> None:
    network.compile(optimizer=training.optimizer(settings["optimizer"], settings["learning_rate"]),
                    loss=training.loss_for(loss, network), metrics=["accuracy"],
                    steps_per_execution=steps_per_execution)


def _fit_phase(network, phase: str, settings: Mapping[str, Any], loss: str, train, dataset: ImageDataset,
               steps_per_epoch: int | None, first_epoch: int,
               probe: list | None = None) -> dict[str, list[float]]:
    for callback in probe or []:
        callback.first_epoch = first_epoch
    _compile(network, settings, loss)  # after the trainable flags change: Keras reads them at compile
    training.log_parameter_counts(network, phase)
    network.summary()
    history = network.fit(train, validation_data=dataset.split("validation"), epochs=settings["epochs"],
                          steps_per_epoch=steps_per_epoch,
                          callbacks=[training.epoch_metrics_callback(first_epoch, phase),
                                     *(probe or [])], verbose=terminal.fit_verbosity())
    return history.history


def _train_on_features(parts: Parts, dataset: ImageDataset, head: Mapping[str, Any], loss: str,
                       steps_per_epoch: int | None, use_cache: bool, cache_dir: str | None,
                       cache_max_gb: float | None = None, probes: Mapping[str, Any] | None = None) -> "keras.Model":
    """Mode ``features``: the base's outputs of every split (cached), the head trained on them, then the
    trained head put on the frozen base in one classifier that takes images.

    The head's first layer (Flatten or global average pooling) has no weights, so it is applied once to
    the stored features and the rest of the head is trained on its output: the same result, without
    moving the whole feature maps through every step of every epoch.
    """
    import keras

    started = time.perf_counter()
    stored, state = split_features(parts, dataset, cache_dir if use_cache else None, use_cache, cache_max_gb)
    seconds = time.perf_counter() - started
    mlflow.set_tag(CACHE_TAG, state)
    mlflow.log_metric("feature_extraction_seconds", seconds)
    print(f"[convlab] feature cache: {state} ({seconds:.1f} s)", file=sys.stderr)

    pooling, *trained = head_layers(head, dataset.num_classes)
    pooled = {split: (_apply_in_chunks(pooling, features), labels) for split, (features, labels) in stored.items()}
    head_input = keras.Input(pooled["train"][0].shape[1:], name="pooled_features")
    head_model = keras.Model(head_input, apply_layers(trained, head_input), name="head")
    batch_size = getattr(dataset, "batch_size", 32)
    steps = steps_per_epoch or -(-len(pooled["train"][1]) // batch_size)
    # a small head on CPU: one compiled call per up to 32 batches instead of one per batch (same updates)
    _compile(head_model, head, loss, steps_per_execution=min(32, steps))
    parts.base.trainable = False
    training.log_parameter_counts(parts.network, "head")  # the classifier as saved: the base frozen
    history = head_model.fit(_batches(*pooled["train"], batch_size, shuffle=True), epochs=head["epochs"],
                             steps_per_epoch=steps_per_epoch,
                             validation_data=_batches(*pooled["validation"], batch_size),
                             callbacks=[training.epoch_metrics_callback(0, "head"),
                                        *_probes(probes, parts.network, dataset, 0,
                                                 lambda: _copy_head(head_model, parts.network))], verbose=terminal.fit_verbosity())
    training.log_curves(history.history)
    training.log_test_metrics(head_model, _batches(*pooled["test"], batch_size))

    network = parts.network
    _copy_head(head_model, network)
    _compile(network, head, loss)  # logged without optimizer slots (log_keras_model); loads compiled
    return network


def _copy_head(head_model: "keras.Model", network: "keras.Model") -> None:
    """The weights of the head trained on stored features, into the classifier's head (same layer names)."""
    for layer in head_model.layers[1:]:
        network.get_layer(layer.name).set_weights(layer.get_weights())


def _probes(probes: Mapping[str, Any] | None, network: "keras.Model", dataset: ImageDataset, first_epoch: int,
            before_probe=None) -> list:
    """``task.probes``' callback for one fit (none without the setting: a direct call of ``run``)."""
    if not probes:
        return []
    from runner.probes import probe_callbacks

    return probe_callbacks(network, dataset, probes, first_epoch=first_epoch, before_probe=before_probe)


def _apply_in_chunks(layer, features: np.ndarray, chunk: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(layer(features[i:i + chunk])) for i in range(0, len(features), chunk)])


def _batches(features: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        data = data.shuffle(len(labels))  # reshuffled every epoch; seeded by the run's global seed
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------- feature cache


def split_features(parts: Parts, dataset: ImageDataset, cache_dir: str | None, use_cache: bool = True,
                   max_gb: float | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """``{split: (features, labels)}`` for every split, from the cache where it holds them, and the cache
    state: ``hit`` (every split loaded), ``miss`` (none), ``partial`` or ``off`` (``use_cache=False``).
    With the cache, the features are float16-rounded whether loaded or computed, and the cache folder is
    then pruned to ``max_gb`` (None: no cap), least recently used files first, never this run's."""
    import keras

    extractor = keras.Model(parts.inputs, parts.features, name="feature_extractor")
    base_id = base_identity(parts.base, parts.cut_layer) if use_cache else None
    stored, hits, used = {}, 0, []
    for split in SPLITS:
        path = meta = None
        if use_cache:
            meta = cache_meta(base_id, dataset_identity(dataset, split), parts.preprocessing)
            path = feature_cache_path(cache_key(meta), cache_dir)
            used.append(path)
            stored[split] = _load_cached(path, meta)
            if stored[split] is not None:
                hits += 1
                os.utime(path)  # its modification time is when it was last used, for the LRU clean-up
                print(f"[convlab] feature cache hit: {split} from {path}", file=sys.stderr)
                continue
        stored[split] = extract(extractor, dataset.split(split))
        if use_cache:
            features, labels = stored[split]
            _save_atomically(path, meta, storable(features), labels)
            stored[split] = (storable(features).astype(np.float32), labels)
            print(f"[convlab] feature cache miss: {split} written to {path}", file=sys.stderr)
    if use_cache and max_gb is not None:
        prune_cache(feature_cache_dir(cache_dir), max_gb, keep=used)
    state = "off" if not use_cache else "hit" if hits == len(SPLITS) else "miss" if hits == 0 else "partial"
    return stored, state


def storable(features: np.ndarray) -> np.ndarray:
    """``features`` as the cache stores them: float16, unless some value is beyond float16's range."""
    return features.astype(np.float16) if np.abs(features).max(initial=0) <= FLOAT16_MAX else features


def prune_cache(folder: Path, max_gb: float, keep: list[Path]) -> list[Path]:
    """Delete the least recently used (oldest modification time) ``.npz`` files of ``folder`` until the
    rest take at most ``max_gb``, never one of ``keep``; returns the deleted files."""
    files = sorted(folder.glob("*.npz"), key=lambda path: path.stat().st_mtime)
    total = sum(path.stat().st_size for path in files)
    deleted = []
    for path in files:
        if total <= max_gb * 1e9:
            break
        if path in keep:
            continue
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        deleted.append(path)
    if deleted:
        print(f"[convlab] feature cache: deleted {len(deleted)} least recently used file(s) to stay under "
              f"{max_gb} GB", file=sys.stderr)
    return deleted


def extract(extractor: "keras.Model", split) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's outputs over one pass of ``split`` and the labels in the same order."""
    features, labels = [], []
    batches = int(split.cardinality())
    for images, batch_labels in terminal.progress(split, batches if batches >= 0 else None, "batch"):
        features.append(np.asarray(extractor.predict_on_batch(images), dtype=np.float32))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(features), np.concatenate(labels)


def weights_digest(model: "keras.Model") -> str:
    """sha256 over the shapes and values of every weight of ``model``, in order."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{value.dtype}{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def base_identity(base: "keras.Model", cut_layer: str) -> dict[str, Any]:
    return {"name": base.name, "weights_sha256": weights_digest(base), "cut_layer": cut_layer,
            "input_shape": list(base.input_shape[1:]), "output_shape": list(base.output_shape[1:])}


def dataset_identity(dataset: ImageDataset, split: str) -> dict[str, Any]:
    return {"name": dataset.name, "loader": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
            "content_sha256": dataset.content_hash(), "split": split,
            "image_size": list(dataset.image_size), "channels": dataset.channels}


def cache_meta(base: dict[str, Any], data: dict[str, Any], preprocessing: str) -> dict[str, Any]:
    """Everything the stored features depend on."""
    return {"version": FEATURE_CACHE_VERSION, "base": base, "dataset": data, "preprocessing": preprocessing}


def cache_key(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]


def feature_cache_dir(cache_dir: str | None) -> Path:
    return cache_root(cache_dir) / "features"


def feature_cache_path(key: str, cache_dir: str | None) -> Path:
    return feature_cache_dir(cache_dir) / f"{key}.npz"


def _load_cached(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if json.loads(str(stored["meta"])) != meta:
                raise ValueError("its metadata does not match the key")
            return stored["features"].astype(np.float32), stored["labels"]
    except (OSError, ValueError, KeyError) as error:
        print(f"[convlab] ignoring the unreadable feature cache file {path}: {error}", file=sys.stderr)
        return None


def _save_atomically(path: Path, meta: dict[str, Any], features: np.ndarray, labels: np.ndarray) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}.npz")
    try:
        with open(partial, "wb") as f:
            np.savez(f, features=features, labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
