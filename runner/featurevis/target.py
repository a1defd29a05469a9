"""The network cut at the layer being visualized: only the requested channels, in order, optionally
before its activation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.errors import ConvlabError
from runner.layers import feature_model, find_layer, is_spatial, rebuilt

if TYPE_CHECKING:
    import keras

#: the largest input side ``smallest_input_side`` tries
MAX_SIDE = 4096


def target_model(network: "keras.Model", layer: str, filters: list[int] | None,
                 preactivation: bool = False) -> "keras.Model":
    """``network`` cut at ``layer``, giving only ``filters``' channels in that order (channel i is image
    i's filter; ``None``: every channel), after checking that the layer has a channel axis holding them.

    A plain Conv2D target is replaced by a copy computing only those channels: the others would cost
    their share of the forward and backward pass of every step for nothing (3/4 of block3_conv1's for 64
    of its 256 filters). Other layers (an Add, an Activation) are computed whole and the channels taken.

    ``preactivation``: the layer's linear part, so a filter that a ReLU zeroes still has a gradient. For a
    Conv2D (or Dense-free linear layer) with a folded activation, the same layer without it; for an
    activation layer (ReLU, Activation), the layer feeding it.

    Each batch norm right after a convolution is folded into it (``surgery.folded_batch_norms``): the
    same activations in inference mode, one elementwise pass less per pair forward and backward
    (docs/featurevis.md, "Speed").
    """
    import keras

    from runner.explain.surgery import folded_batch_norms

    target = find_layer(network, layer)
    if not is_spatial(target):
        raise ConvlabError(f"layer {layer!r} ({type(target).__name__}) has no channel axis to visualize: its output "
                           f"shape is {tuple(target.output.shape)}",
                           fix="pick a convolution or pooling layer (4-D output: batch, height, width, channels)")
    channels = target.output.shape[-1]
    if filters is not None:
        out_of_range = [index for index in filters if not 0 <= index < channels]
        if out_of_range:
            raise ConvlabError(f"layer {layer!r} has {channels} filters (0..{channels - 1}); asked for {out_of_range}",
                               fix=f"use filter indices below {channels} (task.filters / task.num_filters <= {channels})")
    if preactivation:
        layer, target, linear = _linear_part(network, layer, target)
    else:
        linear = False
    sliced = _conv_with_channels(target, filters if filters is not None else list(range(channels)), linear)
    features = feature_model(network, [layer], replace={layer: sliced} if sliced else None)
    output = features.outputs[0]
    if sliced is None and filters is not None:
        output = keras.ops.take(output, filters, axis=-1)
    # one tensor, not a list; the batch norms folded into their convolutions: the climb runs in inference mode
    return folded_batch_norms(keras.Model(features.inputs[0], output, name=features.name))


def _linear_part(network, layer: str, target) -> tuple[str, "keras.layers.Layer", bool]:
    """``(path, layer, drop_activation)`` of ``layer``'s pre-activation output, or a ConvlabError."""
    import keras

    if isinstance(target, keras.layers.Conv2D) and target.activation is not keras.activations.linear:
        return layer, target, True
    if isinstance(target, (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ELU)):
        producer = target.input._keras_history.operation
        prefix = layer.rsplit("/", 1)[0] + "/" if "/" in layer else ""
        return prefix + producer.name, producer, False
    raise ConvlabError(f"layer {layer!r} ({type(target).__name__}) has no linear part before an activation for a "
                       "pre-activation objective",
                       fix="set task.preactivation=false, or pick a convolution with an activation, or an "
                           "activation layer (ReLU, Activation)")


def _conv_with_channels(conv, channels: list[int], drop_activation: bool):
    """A copy of a plain channels-last Conv2D computing only ``channels`` (in that order), without its
    activation when ``drop_activation``; or None for other layers."""
    import keras

    if type(conv) is not keras.layers.Conv2D or conv.groups != 1 or conv.data_format != "channels_last":
        return None
    kernel, *bias = conv.get_weights()
    # an initializer holding the full kernel (Constant) would give its shape to the copy: zeros, then the weights
    return rebuilt(conv, [kernel[..., channels], *(b[channels] for b in bias)], filters=len(channels),
                   kernel_initializer="zeros", bias_initializer="zeros",
                   **({"activation": "linear"} if drop_activation else {}))


def at_input_size(network: "keras.Model", side: int) -> "keras.Model":
    """``network``'s layers rebuilt on a ``side``-px square input, with its weights (a ValueError where a
    weight's shape depends on the input size, e.g. a Dense after a Flatten)."""
    import keras

    clone = keras.models.clone_model(network, input_tensors=keras.Input((side, side, network.input_shape[-1])))
    clone.set_weights(network.get_weights())
    return clone


def map_size(model: "keras.Model", side: int) -> tuple[int, int] | None:
    """The (height, width) of ``model``'s output for a ``side``-px square input, or None where a layer
    cannot take it (a map shrunk to nothing). Computed symbolically, whatever input size ``model`` was
    built for."""
    import keras

    channels = model.input_shape[-1]
    try:
        output = model._run_through_graph(keras.KerasTensor((1, side, side, channels)), operation_fn=lambda op: op)
    except ValueError:
        return None
    output = output[0] if isinstance(output, (list, tuple)) else output
    height, width = output.shape[1:3]
    return (height, width) if height and width and height > 0 and width > 0 else None


def smallest_input_side(model: "keras.Model", minimum_map: int, start: int) -> int | None:
    """The smallest square input side (>= 1) whose output map is at least ``minimum_map`` on each side,
    searched upward from ``start`` by doubling, then bisected; None if none up to ``MAX_SIDE``."""
    def works(side):
        size = map_size(model, side)
        return size is not None and min(size) >= minimum_map

    high = max(start, 1)
    while not works(high):
        high *= 2
        if high > MAX_SIDE:
            return None
    low = 0  # the map of a 0-px input is nothing
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle, high)
    return high
