"""Classes, targets and scores: what an attribution differentiates, written once.

The binary rule: a model with one sigmoid unit ``p`` has two classes, with probabilities ``[1 - p, p]``
and logits ``[-z, z]`` (``z`` the unit's logit; ``-z`` is the logit of ``1 - p``). Every task that counts
a model's classes, builds a classifier head or reads its probabilities uses the functions here.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np


class Score(str, Enum):
    """The differentiated score of a class: its probability (the book) or its logit (the Grad-CAM paper)."""

    probability = "probability"
    logit = "logit"

    def __str__(self) -> str:  # the value, as configs and MLflow params show it
        return self.value


TOP1 = -1  # a requested target meaning "each image's most probable class"


def output_units(num_classes: int) -> int:
    """Units of a classifier's output layer: one sigmoid unit for two classes, else one per class."""
    return 1 if num_classes == 2 else num_classes


def class_count(units: int) -> int:
    """Classes of a classifier with ``units`` outputs (the inverse of :func:`output_units`)."""
    return 2 if units == 1 else units


def is_binary(units: int) -> bool:
    return units == 1


CLASSIFIER_FIX = ("explain a classifier: one ending in a softmax over its classes, or in one sigmoid unit for two "
                  "classes (task=train and task=finetune log such models); a model ending in logits: add "
                  "keras.layers.Activation('softmax') as its last layer")


def check_classifier(model) -> int:
    """The units of ``model``'s output if it is a classifier (one output, a vector per image, from a softmax
    over 2 or more units or from sigmoid units: one sigmoid unit is the binary rule above); else a
    ConvlabError naming what it is instead. Explanations and faithfulness metrics follow a class's
    probability, so nothing else can be explained."""
    from runner.errors import ConvlabError
    from runner.explain.surgery import HEAD_ACTIVATIONS, activation_name, output_layer

    if len(model.outputs) != 1:
        raise ConvlabError(f"{model.name!r} is not a classifier: it has {len(model.outputs)} outputs, a classifier "
                           "one (its class probabilities)", fix=CLASSIFIER_FIX)
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2:
        raise ConvlabError(f"{model.name!r} is not a classifier: its output has shape {shape}, not one vector of "
                           "class probabilities per image (batch, classes)", fix=CLASSIFIER_FIX)
    head = output_layer(model)
    activation = activation_name(head)
    if activation not in HEAD_ACTIVATIONS or (activation == "softmax" and shape[-1] == 1):
        what = ("a softmax over 1 unit, always 1" if activation == "softmax" else
                "so its outputs are not class probabilities (a regression head, or logits)")
        raise ConvlabError(f"{model.name!r} is not a classifier: its output layer {type(head).__name__} "
                           f"{head.name!r} has activation {activation}, {what}", fix=CLASSIFIER_FIX)
    return int(shape[-1])


def class_probabilities(outputs):
    """(images, classes) probabilities from a model's outputs (a tensor): ``[1 - p, p]`` for one unit."""
    import tensorflow as tf

    return tf.concat([1.0 - outputs, outputs], axis=-1) if outputs.shape[-1] == 1 else outputs


def class_logits(logits):
    """(images, classes) logits from the output layer's linear part: ``[-z, z]`` for one unit."""
    import tensorflow as tf

    return tf.concat([-logits, logits], axis=-1) if logits.shape[-1] == 1 else logits


def requested_targets(targets: int | Sequence[int] | None, images: int, classes: int) -> np.ndarray:
    """(images,) int32 class indices, ``TOP1`` where each image's top-1 class is wanted.

    ``None``: top-1 everywhere; an int: that class for every image; a sequence: one class per image.
    """
    from runner.errors import ConvlabError

    if targets is None:
        return np.full(images, TOP1, np.int32)
    wanted = np.full(images, int(targets), np.int32) if np.ndim(targets) == 0 else np.asarray(targets, np.int32)
    if wanted.shape != (images,):
        raise ConvlabError(f"{len(wanted)} targets for {images} images", fix="give one class per image, or one int")
    bad = wanted[(wanted < 0) | (wanted >= classes)]
    if bad.size:
        raise ConvlabError(f"class index {int(bad[0])} is out of range: the model has {classes} classes "
                           f"(0..{classes - 1})", fix="pick an index in that range, or None for each image's top-1")
    return wanted


def chosen_targets(requested, probabilities):
    """In a compiled pass: the requested class, or the most probable one where ``TOP1`` was requested."""
    import tensorflow as tf

    top1 = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.where(requested >= 0, requested, top1)


def top_classes(probabilities: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    best = np.argsort(probabilities)[::-1][:top]
    return [{"index": int(i), "name": class_names[i], "probability": float(probabilities[i])} for i in best]
