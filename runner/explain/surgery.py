"""Model surgery for attribution, on copies or new graphs only: the user's model is never modified.

* :func:`logit_head`: the output layer's linear part (the logits), tapped in place of the output layer by
  ``runner.layers.feature_model(replace=...)`` on the inputs the output layer receives. No private
  ``_keras_history`` access: the replacement is called on whatever tensor the model feeds its head.
* :func:`guided_clone`: a clone whose ReLUs pass back only positive gradients (guided backpropagation).
* :func:`folded_batch_norms`: a clone with each inference-mode batch norm folded into the convolution before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import keras
import tensorflow as tf

from runner.errors import ConvlabError
from runner.layers import fresh_inputs, rebuilt

HEAD_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class LogitHead:
    path: str  # the output layer
    replacement: keras.layers.Layer  # computes the logits from the output layer's input
    description: str


def activation_name(layer: keras.layers.Layer) -> str | None:
    return getattr(getattr(layer, "activation", None), "__name__", None)


def output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that computes the model's output."""
    return model.layers[-1]


def logit_head(model: keras.Model) -> LogitHead:
    """A separate softmax/sigmoid Activation gets the logits as input (MobileNetV2's ``logits``): an identity
    in its place taps them; a Dense with the activation folded in gets its linear part, with its weights."""
    head = output_layer(model)
    if activation_name(head) not in HEAD_ACTIVATIONS or not isinstance(head, (keras.layers.Activation,
                                                                            keras.layers.Dense)):
        raise ConvlabError(
            f"task.score=logit needs a softmax or sigmoid output layer; {model.name!r} ends with "
            f"{type(head).__name__} {head.name!r} (activation {activation_name(head)})",
            fix="use task.score=probability",
        )
    if isinstance(head, keras.layers.Dense):
        return LogitHead(head.name, LinearPart(head),
                         f"logit: linear part of {head.name!r} (its input @ kernel + bias)")
    return LogitHead(head.name, keras.layers.Identity(name=f"{head.name}_input"),
                     f"logit: input of {head.name!r} ({activation_name(head)})")


class LinearPart(keras.layers.Layer):
    """``x @ kernel + bias`` of a Dense layer, sharing its weights (its activation left out)."""

    def __init__(self, dense: keras.layers.Dense):
        super().__init__(name=f"{dense.name}_linear")
        self.dense = dense

    def call(self, x):
        z = keras.ops.matmul(x, self.dense.kernel)
        return z if self.dense.bias is None else z + self.dense.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dense.units)


# ----------------------------------------------------------------------------------- guided backprop


class GuidedActivation(keras.layers.Layer):
    """``activation(x)`` forward; backward, the activation's own gradient of the upstream gradient's positive
    part only (Springenberg et al. 2015): ``dx = f'(x) * max(dy, 0)``. Keeps the replaced layer's name."""

    def __init__(self, activation, name: str):
        super().__init__(name=name)
        self.activation = activation

    def call(self, x):
        @tf.custom_gradient
        def guided(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = self.activation(x)

            def gradient(dy):
                return tape.gradient(y, x, output_gradients=tf.nn.relu(dy))

            return y, gradient

        return guided(x)

    def compute_output_shape(self, input_shape):
        return input_shape


def _is_relu_layer(layer) -> bool:
    return isinstance(layer, keras.layers.ReLU) or (isinstance(layer, keras.layers.Activation)
                                                    and activation_name(layer) in ("relu", "relu6"))


def _has_folded_relu(layer) -> bool:
    return not isinstance(layer, keras.layers.Activation) and activation_name(layer) in ("relu", "relu6")


def _without_activation(layer):
    """A copy of ``layer`` with a linear activation, built with ``layer``'s weights (copied)."""
    return rebuilt(layer, activation="linear", name=f"{layer.name}_linear")


def guided_clone(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose ReLUs are guided; every other layer is ``model``'s own (weights shared)."""
    return clone_with_relus(model, GuidedActivation)


def clone_with_relus(model: keras.Model, wrap) -> keras.Model:
    """A copy of ``model`` whose ReLUs are ``wrap(activation, name)`` (a layer computing ``activation``
    with another gradient): ReLU layers, and the ReLUs folded into other layers (split off); nested
    models too. Every other layer is ``model``'s own (weights shared)."""
    def clone(layer):
        if isinstance(layer, keras.Model):
            return clone_with_relus(layer, wrap)
        if _is_relu_layer(layer):
            return wrap(layer, layer.name)
        if _has_folded_relu(layer):
            linear, relu = _without_activation(layer), layer.activation
            return _Sequenced(linear, wrap(relu, f"{layer.name}_relu"), layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=clone)


class _Sequenced(keras.layers.Layer):
    def __init__(self, first, second, name: str):
        super().__init__(name=name)
        self.first, self.second = first, second

    def call(self, x):
        return self.second(self.first(x))

    def compute_output_shape(self, input_shape):
        return self.first.compute_output_shape(input_shape)


# ------------------------------------------------------------------------------- batch-norm folding


def folded_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of ``model`` in which each BatchNormalization that directly follows a linear Conv2D or
    DepthwiseConv2D (whose output nothing else reads) is folded into that convolution's kernel and bias,
    as inference graphs are optimized: the same function in inference mode (``training=False``) up to float
    rounding, with one elementwise pass less, forward and backward, for every pair (MobileNetV2 has one per
    convolution). The batch norm's place keeps its name, as an identity, so its output can still be tapped.
    Every other layer is ``model``'s own (weights shared); without such a pair, or for a model that is not
    functional (a Sequential, a subclass), ``model`` itself."""
    if not hasattr(model, "_nodes_by_depth"):
        return model
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded_norms = {norm.name for norm in pairs.values()}

    def clone(layer):
        if layer.name in pairs:
            return _folded_convolution(layer, pairs[layer.name])
        if layer.name in folded_norms:
            return _FoldedAway(name=layer.name)
        return layer

    return keras.models.clone_model(model, input_tensors=fresh_inputs(model), clone_function=clone)


def _foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """``{convolution name: the batch norm after it}`` for the pairs :func:`folded_batch_norms` folds."""
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes]
    calls = Counter(id(node.operation) for node in nodes)
    readers = Counter(id(tensor) for node in nodes for tensor in node.input_tensors)
    readers.update(id(tensor) for tensor in model.outputs)
    pairs = {}
    for node in nodes:
        norm = node.operation
        if not isinstance(norm, keras.layers.BatchNormalization) or calls[id(norm)] != 1:
            continue
        if len(node.input_tensors) != 1 or norm.axis not in (-1, len(node.input_tensors[0].shape) - 1):
            continue
        tensor = node.input_tensors[0]
        conv = tensor._keras_history.operation
        if (type(conv) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D) and calls[id(conv)] == 1
                and readers[id(tensor)] == 1 and conv.data_format == "channels_last"
                and activation_name(conv) == "linear"):
            pairs[conv.name] = norm
    return pairs


def _folded_convolution(conv, norm: keras.layers.BatchNormalization):
    """``conv`` with ``norm``'s inference-mode scale and shift folded into its kernel and bias."""
    import numpy as np

    def values(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

    kernel, *bias = conv.get_weights()
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    # a depthwise kernel is [h, w, in, multiplier]: output channel c * multiplier + m is kernel[..., c, m]
    per_output = kernel.shape[2:] if depthwise else kernel.shape[3:]
    channels = int(np.prod(per_output))
    gamma = values(norm.gamma) if norm.scale else np.ones(channels)
    beta = values(norm.beta) if norm.center else np.zeros(channels)
    scale = gamma / np.sqrt(values(norm.moving_variance) + norm.epsilon)
    shift = ((bias[0] if bias else 0.0) - values(norm.moving_mean)) * scale + beta
    return rebuilt(conv, [(kernel * scale.reshape(per_output)).astype(kernel.dtype), shift.astype(kernel.dtype)],
                   use_bias=True, bias_initializer="zeros")


class _FoldedAway(keras.layers.Layer):
    """The identity left where a batch norm was folded into the convolution before it."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
