"""Find layers by name (``block5_conv3``) or by path into nested sub-models (``vgg16/block5_conv3``),
and build feature models that expose their outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from runner.errors import ConvlabError

if TYPE_CHECKING:
    import keras

SEPARATOR = "/"
#: a model with more layers than this gets the closest names in the message; all of them go to the traceback
LISTED_LAYERS = 20


def layer_paths(model: "keras.Model") -> list[str]:
    """Every layer's path in call order, descending into nested models (``vgg16/block1_conv1``)."""
    import keras

    paths: list[str] = []
    for layer in model.layers:
        paths.append(layer.name)
        if isinstance(layer, keras.Model):
            paths += [f"{layer.name}{SEPARATOR}{inner}" for inner in layer_paths(layer)]
    return paths


def find_layer(model: "keras.Model", path: str) -> "keras.layers.Layer":
    """The layer at ``path``; an unknown path raises an error that lists the valid ones."""
    current = model
    for part in path.split(SEPARATOR):
        try:
            current = current.get_layer(part)
        except (ValueError, AttributeError):
            raise unknown_layer(f"model {model.name!r} has no layer {path!r}", path, layer_paths(model),
                                fix="pick one of those names (use <submodel>/<layer> for a layer inside a nested "
                                    "model)") from None
    return current


def is_spatial(layer: "keras.layers.Layer") -> bool:
    """True for a layer whose output is a 4-D (batch, height, width, channels) feature map."""
    try:
        output = layer.output
    except (AttributeError, ValueError):  # not called yet, or called on several inputs
        return False
    return output is not None and len(output.shape) == 4


def is_feature_map(layer: "keras.layers.Layer", pooling: bool = False) -> bool:
    """A spatial layer that computes features: not an input, not a nested model, and (unless ``pooling``)
    not a pooling layer, whose output only resamples the features before it."""
    import keras

    if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
        return False
    return is_spatial(layer) and (pooling or "Pooling" not in type(layer).__name__)


def feature_map_paths(model: "keras.Model", pooling: bool = False, nested: bool = True) -> list[str]:
    """The paths of ``model``'s feature-map layers in call order (nested models descended into unless not
    ``nested``)."""
    paths = layer_paths(model) if nested else [layer.name for layer in model.layers]
    return [path for path in paths if is_feature_map(find_layer(model, path), pooling)]


def pick_layer(model: "keras.Model", path: str | None = None, *, pooling: bool = False, nested: bool = True,
               purpose: str = "the attribution weights the channels of a spatial layer",
               option: str = "task.layer") -> str:
    """The one rule for choosing a feature map: ``path`` checked to be one, else the last one
    (spatial, non-pooling unless ``pooling``, inside nested models unless not ``nested``)."""
    candidates = feature_map_paths(model, pooling, nested)
    if not candidates:
        raise ConvlabError(f"model {model.name!r} has no layer with a (batch, height, width, channels) output",
                           fix="pick a convolutional model")
    if path is None:
        return candidates[-1]
    found = find_layer(model, path)
    if not is_spatial(found):
        output = getattr(found, "output", None)
        shape = None if output is None else tuple(output.shape)
        shown = ", ".join(candidates) if len(candidates) <= LISTED_LAYERS else closest(path, candidates, "4-D layers")
        error = ConvlabError(
            f"layer {path!r} outputs shape {shape}, not a (batch, height, width, channels) feature map: {purpose}",
            fix=f"pick a layer with a 4-D output: {shown} (in {option}; the default is the last one, "
                f"{candidates[-1]})",
        )
        error.add_note(f"all {len(candidates)} layers with a 4-D output: {', '.join(candidates)}")
        raise error
    return path


def feature_model(model: "keras.Model", paths: list[str], include_output: bool = False,
                  replace: Mapping[str, "keras.layers.Layer"] | None = None) -> "keras.Model":
    """A model from ``model``'s inputs to the outputs of the layers at ``paths`` (plus the model's own
    output last when ``include_output``), sharing ``model``'s weights. Like any Keras model it returns
    a list for several outputs and a single array for one. ``replace`` maps some of ``paths`` to layers
    whose output is tapped instead (called on the same inputs), e.g. a convolution computing fewer channels.

    ``keras.Model(model.inputs, model.get_layer("vgg16").get_layer("block5_conv3").output)`` fails with
    "Graph disconnected": that tensor lives in the sub-model's own graph, fed by the sub-model's Input,
    not by the outer model's. Here the outer graph is replayed on fresh Inputs, and every nested model
    holding a requested layer is replayed in turn on the tensor it receives, so each requested output
    is a tensor of one connected graph.
    """
    import keras

    for path in paths:
        find_layer(model, path)
    inputs = fresh_inputs(model)
    outputs, taps = _replay(model, inputs, list(paths), dict(replace or {}))
    missing = [path for path in paths if path not in taps]
    if missing:
        raise ConvlabError(f"layer(s) {', '.join(missing)} of {model.name!r} are not computed from its inputs "
                           "(an input layer, or a branch the outputs do not use)",
                           fix="pick a layer between the model's input and its output")
    features = [taps[path] for path in paths]
    return keras.Model(inputs, features + ([outputs] if include_output else []), name=f"{model.name}_features")


def fresh_inputs(model: "keras.Model"):
    """New ``keras.Input`` tensors shaped, typed and named like ``model``'s, to replay its graph on: one
    tensor for a one-input model (a one-element list makes Keras warn on every call), else a list."""
    import keras

    inputs = [keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name) for tensor in model.inputs]
    return inputs if len(inputs) > 1 else inputs[0]


def rebuilt(layer: "keras.layers.Layer", weights: list | None = None, **config) -> "keras.layers.Layer":
    """A new layer of ``layer``'s class from its config with ``config``'s entries changed, built for
    ``layer``'s input shape and holding ``weights`` (default: a copy of ``layer``'s own)."""
    copy = type(layer).from_config({**layer.get_config(), **config})
    copy.build(layer.input.shape)
    copy.set_weights(layer.get_weights() if weights is None else weights)
    return copy


def _replay(model: "keras.Model", inputs, paths: list[str], replace: dict[str, "keras.layers.Layer"]):
    """Call ``model``'s layers on symbolic ``inputs``; returns its outputs and ``{path: output tensor}``
    (for a path in ``replace``, the output of its replacement)."""
    import keras

    wanted_here = {path for path in paths if SEPARATOR not in path}
    wanted_inside: dict[str, list[str]] = {}
    replace_inside: dict[str, dict[str, keras.layers.Layer]] = {}
    for path in paths:
        if SEPARATOR in path:
            outer, inner = path.split(SEPARATOR, 1)
            wanted_inside.setdefault(outer, []).append(inner)
    for path, layer in replace.items():
        if SEPARATOR in path:
            outer, inner = path.split(SEPARATOR, 1)
            replace_inside.setdefault(outer, {})[inner] = layer
            wanted_inside.setdefault(outer, [])
    taps = {}

    def tapped(layer):
        def call(*args, **kwargs):
            if layer.name in wanted_inside:
                outputs, inner_taps = _replay(layer, args[0], wanted_inside[layer.name],
                                              replace_inside.get(layer.name, {}))
                taps.update({f"{layer.name}{SEPARATOR}{path}": tensor for path, tensor in inner_taps.items()})
            else:
                outputs = layer(*args, **kwargs)
            if layer.name in wanted_here:
                # a replacement feeds only the tap: the layers after it still get what they expect (and the
                # feature model, built from the inputs to the taps, leaves out whatever the taps do not use)
                taps[layer.name] = replace[layer.name](*args, **kwargs) if layer.name in replace else outputs
            return outputs

        return call

    if isinstance(model, keras.Sequential):
        outputs = inputs
        for layer in model.layers:
            outputs = tapped(layer)(outputs)
    elif hasattr(model, "_run_through_graph"):  # a Functional model: replay its recorded graph node by node
        outputs = model._run_through_graph(inputs, operation_fn=tapped)
        outputs = outputs[0] if isinstance(outputs, list) and len(outputs) == 1 else outputs
    else:
        raise ConvlabError(f"cannot reach the layers inside {model.name!r}: it is a subclassed model, not a "
                           "Functional or Sequential one",
                           fix="rebuild it with the functional API, or pick a layer outside it")
    return outputs, taps


def unknown_layer(what: str, path: str, candidates: list[str], fix: str, kind: str = "layers") -> ConvlabError:
    """The error for a layer name that is not among ``candidates``: ``what`` then all of them when they are
    few, else the closest (difflib) and how many there are; the whole list is attached as a note, so it is
    in the run's traceback artifact but not in the one-line reason."""
    if len(candidates) <= LISTED_LAYERS:
        return ConvlabError(f"{what}; its {kind} are: {', '.join(candidates)}", fix=fix)
    error = ConvlabError(f"{what}; {closest(path, candidates, kind)}", fix=fix)
    error.add_note(f"all {len(candidates)} {kind}: {', '.join(candidates)}")
    return error


def closest(path: str, candidates: list[str], kind: str = "layers") -> str:
    """``closest of its 160 layers: a, b, c (all of them in the run's error/traceback.txt)`` (difflib)."""
    import difflib

    close = difflib.get_close_matches(path, candidates, n=5, cutoff=0.5) or candidates[-3:]
    return f"closest of its {len(candidates)} {kind}: {', '.join(close)} (all of them in the run's error/traceback.txt)"
