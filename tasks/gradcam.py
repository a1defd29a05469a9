"""Task `gradcam`: class activation heatmaps over the photo (book 5.4.3, Selvaraju et al. 2017).

Predict, log the top classes, then explain one class per image: the gradient of its score with respect to
a convolutional layer's output, averaged over space, weights that layer's channels; their ReLU'd sum,
normalized to [0, 1], is the heatmap. All images go through one compiled pass of a gradient model built
once per run. The heatmap covers the region of the photo the model saw (its crop box), not the whole photo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
import numpy as np

from runner.errors import ConvlabError
from runner.layers import feature_model, find_layer, is_spatial, layer_paths
from runner.models.base import CropBox, ModelSpec
from runner.tracking import log_npz
from runner.visual import VisualInput, build_model, load_inputs

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

SCORES = ("probability", "logit")
HEAD_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class _GradcamBatch:
    heatmaps: np.ndarray  # (images, height, width) channel-weighted sums at the target layer, before ReLU
    probabilities: np.ndarray  # (images, classes); a sigmoid output p becomes [1 - p, p]
    targets: np.ndarray  # (images,) the class explained in each image
    scores: np.ndarray  # (images,) the differentiated score of that class


def run(
    *,
    model: ModelSpec,
    dataset,
    layer: str | None,
    class_index: int | None,
    score: str,
    alpha: float,
    top: int,
    images: int,
    split: str,
) -> None:
    _check_options(score, alpha, top)
    network = build_model(model, dataset)
    target_layer = _target_layer(network, layer)
    class_names = _class_names(model, dataset, _class_count(network))
    _check_class_index(class_index, class_names)
    inputs = load_inputs(model, network, dataset, images, split)

    gradcam, class_score = _gradcam_function(network, target_layer, score, class_index)
    batch = gradcam(np.stack([item.model_input for item in inputs]))
    mlflow.set_tags({"gradcam.layer": target_layer, "gradcam.class_score": class_score})

    predictions = []
    for index, item in enumerate(inputs):
        heatmap = _normalized(batch.heatmaps[index], item.name)
        ranked = _top_classes(batch.probabilities[index], class_names, top)
        target = int(batch.targets[index])
        _log_image_results(item, heatmap, target, batch.probabilities[index], alpha)
        mlflow.log_metric("top1_prob", ranked[0]["probability"], step=index)
        predictions.append({"image": item.name, "top": ranked, "explained_class": target,
                            "explained_class_name": class_names[target], "crop_box": _box_list(item.crop)})
        print(f"[convlab] {item.name}: " + ", ".join(f"{c['name']} {c['probability']:.3f}" for c in ranked)
              + f"; heatmap of {class_names[target]!r} at {target_layer}")
    mlflow.set_tag("predicted_class", predictions[0]["top"][0]["name"])
    mlflow.log_dict({"layer": target_layer, "class_score": class_score, "images": predictions},
                    "gradcam/predictions.json")


# --------------------------------------------------------------------------------------------- checks


def _check_options(score: str, alpha: float, top: int) -> None:
    if score not in SCORES:
        raise ConvlabError(f"task.score={score!r} is not one of {', '.join(SCORES)}",
                           fix="task.score=probability (the book: the softmax output) or task.score=logit "
                               "(the Grad-CAM paper: the score before the softmax)")
    if not 0.0 <= alpha <= 1.0:
        raise ConvlabError(f"task.alpha={alpha} is outside [0, 1]",
                           fix="use e.g. task.alpha=0.4 (the heatmap's weight in the overlay)")
    if top < 1:
        raise ConvlabError(f"task.top={top} shows no class", fix="use task.top=1 or more")


def _check_class_index(class_index: int | None, class_names: list[str]) -> None:
    if class_index is not None and not 0 <= class_index < len(class_names):
        raise ConvlabError(f"task.class_index={class_index} is out of range: the model has {len(class_names)} "
                           f"classes (0..{len(class_names) - 1})",
                           fix="pick an index in that range, or task.class_index=null for each image's top-1 class")


def _target_layer(network: "keras.Model", layer: str | None) -> str:
    """``layer`` checked to be a spatial feature map; by default the last non-pooling one."""
    candidates = [path for path in layer_paths(network) if _is_feature_map(find_layer(network, path))]
    if not candidates:
        raise ConvlabError(f"model {network.name!r} has no layer with a (batch, height, width, channels) output",
                           fix="Grad-CAM needs a convolutional model")
    if layer is None:
        return candidates[-1]
    found = find_layer(network, layer)
    if not is_spatial(found):
        raise ConvlabError(
            f"layer {layer!r} outputs shape {tuple(found.output.shape)}, not a (batch, height, width, channels) "
            "feature map: Grad-CAM weights the channels of a spatial layer",
            fix=f"pick a convolutional layer such as {', '.join(candidates[-3:])} (default: {candidates[-1]})",
        )
    return layer


def _is_feature_map(layer: "keras.layers.Layer") -> bool:
    import keras

    if isinstance(layer, (keras.Model, keras.layers.InputLayer)) or "Pooling" in type(layer).__name__:
        return False
    return is_spatial(layer)


# -------------------------------------------------------------------------------------------- classes


def _class_count(network: "keras.Model") -> int:
    units = network.output_shape[-1]
    return 2 if units == 1 else units  # one sigmoid unit: the book's binary head


def _class_names(spec: ModelSpec, dataset, count: int) -> list[str]:
    """The model's names (ImageNet, a trained run's), else the dataset's, else ``class <i>``."""
    for names in (spec.class_names, getattr(dataset, "class_names", None)):
        if names and len(names) == count:
            return list(names)
    return [f"class {index}" for index in range(count)]


def _top_classes(probabilities: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    best = np.argsort(probabilities)[::-1][:top]
    return [{"index": int(i), "name": class_names[i], "probability": float(probabilities[i])} for i in best]


# ----------------------------------------------------------------------------------------- Grad-CAM


def _gradcam_function(network: "keras.Model", layer: str, score: str,
                      class_index: int | None) -> tuple[Callable[[np.ndarray], _GradcamBatch], str]:
    """A compiled batch Grad-CAM for ``network`` at ``layer``, and a description of the score it differentiates.

    The gradient model is built here, once; the returned function runs one pass per batch of images.
    """
    import tensorflow as tf

    head = network.layers[-1]  # the layer that computes the model's output
    logit_source, dense = _logit_source(network, head) if score == "logit" else (None, None)
    gradient_model = feature_model(network, [layer] + ([logit_source] if logit_source else []), include_output=True)
    binary = network.output_shape[-1] == 1  # one sigmoid unit p: the classes' probabilities are [1 - p, p]

    @tf.function
    def compute(images):
        with tf.GradientTape() as tape:
            features, *rest = gradient_model(images, training=False)
            outputs = rest[-1]
            probabilities = tf.concat([1.0 - outputs, outputs], axis=-1) if binary else outputs
            if logit_source is None:
                class_scores = probabilities
            else:
                logits = rest[0] if dense is None else tf.matmul(rest[0], dense.kernel) + dense.bias
                class_scores = tf.concat([-logits, logits], axis=-1) if binary else logits
            targets = (tf.fill(tf.shape(images)[:1], class_index) if class_index is not None
                       else tf.argmax(probabilities, axis=-1, output_type=tf.int32))
            scores = tf.gather(class_scores, targets, batch_dims=1)
            # each image's score depends on its own features only: one gradient of the sum serves them all
            total = tf.reduce_sum(scores)
        gradients = tape.gradient(total, features)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        heatmaps = tf.einsum("bhwc,bc->bhw", features, channel_weights)
        return heatmaps, probabilities, targets, scores

    def gradcam(images: np.ndarray) -> _GradcamBatch:
        return _GradcamBatch(*(np.asarray(t) for t in compute(tf.constant(images, tf.float32))))

    return gradcam, _describe_score(score, head, logit_source, dense)


def _activation_of(layer: "keras.layers.Layer") -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def _logit_source(network: "keras.Model", head: "keras.layers.Layer") -> tuple[str, "keras.layers.Dense | None"]:
    """The layer whose output gives the logits, and the Dense to apply to it, if any: the layer feeding a
    separate softmax/sigmoid Activation is the logits (MobileNetV2's ``logits``); for a Dense with the
    activation folded in, the logits are its linear part, computed from its input and its weights."""
    import keras

    if _activation_of(head) not in HEAD_ACTIVATIONS or not isinstance(head, (keras.layers.Activation,
                                                                            keras.layers.Dense)):
        raise ConvlabError(
            f"task.score=logit needs a softmax or sigmoid output layer; {network.name!r} ends with "
            f"{type(head).__name__} {head.name!r} (activation {_activation_of(head)})",
            fix="use task.score=probability",
        )
    # the layer that produced the head's input tensor, as Keras records it on that tensor
    source = head.input._keras_history.operation.name
    return source, head if isinstance(head, keras.layers.Dense) else None


def _describe_score(score: str, head: "keras.layers.Layer", logit_source: str | None, dense) -> str:
    if score == "probability":
        return f"probability: output of {head.name!r} ({_activation_of(head)})"
    if dense is not None:
        return f"logit: linear part of {dense.name!r} (input {logit_source!r} @ kernel + bias)"
    return f"logit: output of {logit_source!r}"


def _normalized(heatmap: np.ndarray, name: str) -> np.ndarray:
    """ReLU, then scaled to [0, 1]; all zeros (with a warning) when nothing speaks for the class."""
    positive = np.maximum(heatmap, 0.0)
    peak = float(positive.max())
    if not peak > 0.0:
        log.warning("%s: the Grad-CAM map is <= 0 everywhere (no region raises the class score): "
                    "the heatmap is all zeros", name)
        return np.zeros_like(positive, dtype=np.float32)
    return (positive / peak).astype(np.float32)


# -------------------------------------------------------------------------------------------- images


def _log_image_results(item: VisualInput, heatmap: np.ndarray, target: int, probabilities: np.ndarray,
                       alpha: float) -> None:
    mlflow.log_image(_overlay(item.original, heatmap, item.crop, alpha), f"gradcam/{item.name}_overlay.png")
    mlflow.log_image(_heatmap_picture(heatmap, item.crop), f"gradcam/{item.name}_heatmap.png")
    log_npz(f"gradcam/{item.name}.npz", heatmap=heatmap, class_index=np.int64(target),
            probabilities=probabilities.astype(np.float32), crop_box=np.asarray(_box_list(item.crop)))


def _overlay(original: np.ndarray, heatmap: np.ndarray, crop: CropBox, alpha: float) -> np.ndarray:
    """The book's picture at the original resolution: the JET heatmap blended at ``alpha`` over the region
    the model saw (outlined when that is not the whole photo)."""
    import cv2

    picture = _rgb(original).copy()
    height, width = crop.bottom - crop.top, crop.right - crop.left
    colored = _jet(cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR))
    region = picture[crop.top:crop.bottom, crop.left:crop.right]
    picture[crop.top:crop.bottom, crop.left:crop.right] = cv2.addWeighted(colored, alpha, region, 1.0 - alpha, 0.0)
    if (crop.top, crop.left, crop.bottom, crop.right) != (0, 0, *original.shape[:2]):
        thickness = max(1, round(min(original.shape[:2]) / 150))
        cv2.rectangle(picture, (crop.left, crop.top), (crop.right - 1, crop.bottom - 1), (255, 255, 255), thickness)
    return picture


def _heatmap_picture(heatmap: np.ndarray, crop: CropBox) -> np.ndarray:
    """The heatmap's cells (as the book's matshow), in JET colours, at the size of the crop box."""
    import cv2

    size = (crop.right - crop.left, crop.bottom - crop.top)
    return _jet(cv2.resize(heatmap, size, interpolation=cv2.INTER_NEAREST))


def _jet(heatmap: np.ndarray) -> np.ndarray:
    import cv2

    colored = cv2.applyColorMap(np.uint8(np.round(255 * np.clip(heatmap, 0.0, 1.0))), cv2.COLORMAP_JET)
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def _box_list(crop: CropBox) -> list[int]:
    return [crop.top, crop.left, crop.bottom, crop.right]
