"""Task `filters`: the pattern each filter responds to, by an ascent in input space (book 5.4.2; Olah et
al., "Feature Visualization", Distill 2017). The engine and its pieces live in runner/featurevis; this
module gets the pieces instantiated from their config groups (conf/task/objective, param, transforms,
step; task.regularizers), checks the input, and logs.

Every requested filter of a layer climbs at once: image i of one batch maximizes filter i's objective, so
the summed objective gives each image the gradient of its own filter alone.

Recipes (conf/task/recipe): ``book`` (pixels from the book's start, 40 RMS-normalized steps of 1),
``keras_io`` (L2-normalized steps), ``lucid`` (decorrelated Fourier image, Lucid's standard transforms,
Adam 0.05 x 512 steps, pre-activation objective). Values are in the models' input pixels ([0, 255]);
runner/featurevis/params.py says how the book's and keras.io's starts map there.

Deprocessing (``deprocess_std``) normalizes the pixel image by its own mean and std, as the book did;
``null`` shows the pixels as they are (the Fourier parameterization's sigmoid keeps them in [0, 255]).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import mlflow
import numpy as np

from runner import terminal
from runner.errors import ConvlabError
from runner.featurevis import objectives, params, quality, steps as step_rules, transforms as transform_pieces
from runner.featurevis.engine import Recipe, climber
from runner.featurevis.target import at_input_size, map_size, smallest_input_side, target_model
from runner.mlflow_images import log_picture
from runner.models.base import ModelSpec
from runner.tracking import final_metrics, log_npz
from runner.visual import build_model, tile

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

#: what each piece group's instantiated value must be (a direct call may pass anything)
PIECES = {"objective": (objectives.Channel, objectives.Neuron, objectives.Layer),
          "param": (params.Pixels, params.Fourier), "transforms": (transform_pieces.Standard,),
          "step": (step_rules.NormalizedAscent, step_rules.Adam)}


def run(
    *,
    model: ModelSpec,
    dataset,
    layers: list[str],
    filters: list[int] | None,
    num_filters: int,
    image_size: int,
    steps: int,
    objective=objectives.Channel(),
    param=params.Pixels(),
    transforms=transform_pieces.Standard(0, 0, None, 0.0, 0),
    step=step_rules.NormalizedAscent(),
    regularizers=None,
    preactivation: bool = False,
    redirected_relu_steps: int = 0,
    chunk: int = 0,
    diversity: float = 0.0,
    deprocess_std: float | None = 0.1,
    deprocess_crop: int = 0,
    grid_columns: int = 8,
    margin: int = 5,
    quality_metrics: bool = True,
) -> dict[str, float]:
    """For each layer, climb every requested filter in one batch; log its grid, arrays, objectives and
    quality metrics. The pieces come instantiated from their groups (conf/task/<piece>/); ``regularizers``
    is ``runner.featurevis.regularizers.penalty``'s result (None: no penalty)."""
    indices = list(filters) if filters is not None else list(range(num_filters))
    _check_pieces(objective=objective, param=param, transforms=transforms, step=step)
    _check_config(layers, indices, steps, image_size, objective.border, deprocess_std, deprocess_crop, grid_columns,
                  margin, diversity, redirected_relu_steps, transforms)
    main = objectives.weighted_sum([(1.0, objective), (diversity, objectives.Diversity())]) if diversity else objective
    recipe = Recipe(objective=main, param=param, step_rule=step, steps=steps, transforms=transforms.or_none(),
                    regularizer=regularizers, redirected_relu_steps=redirected_relu_steps, chunk=chunk)
    network = _model_at_size(model, dataset, image_size)
    channels = network.input_shape[-1]
    steps_bar = terminal.CompiledProgress("step")
    for number, layer in enumerate(layers, start=1):
        terminal.say(f"layer {number}/{len(layers)} {layer}")  # as fit's "Epoch 1/15", above its steps' bar
        target = target_model(network, layer, indices if objective.per_filter else None, preactivation)
        _check_map(target, layer, image_size, objective)
        start = recipe.param.initial(len(indices), image_size, channels)
        climb = climber(target, recipe, progress=steps_bar)
        started = time.perf_counter()
        images, losses = (tensor.numpy() for tensor in climb(start, np.random.randint(2**31 - 1)))
        seconds = time.perf_counter() - started
        patterns = np.stack([deprocess(image, deprocess_std, deprocess_crop) for image in images])
        _log_layer(layer, indices, images, patterns, losses, grid_columns, margin, seconds / len(indices))
        if quality_metrics and objective.per_filter:
            _log_quality(layer, target_model(network, layer, indices) if preactivation else target, images)
    return final_metrics()


# ------------------------------------------------------------------------------------------- checks


def _check_pieces(**pieces) -> None:
    """Each piece is one of its group's (``task.objective=neuron`` sets a string, not the group)."""
    for name, value in pieces.items():
        if not isinstance(value, PIECES[name]):
            raise ConvlabError(f"task.{name} is {value!r}, not a piece of the task/{name} group",
                               fix=f"pick it by its group: task/{name}=<option> (conf/task/{name}/)")


def _check_config(layers: list[str], filters: list[int], steps: int, image_size: int, loss_border: int,
                  deprocess_std: float | None, deprocess_crop: int, grid_columns: int, margin: int, diversity: float,
                  redirected_relu_steps: int, shift: transform_pieces.Standard) -> None:
    if not layers:
        raise ConvlabError("task.layers is empty", fix="name at least one layer, e.g. task.layers=[block1_conv1]")
    if not filters:
        raise ConvlabError("no filters to visualize", fix="set task.num_filters >= 1, or list task.filters")
    positive = {"steps": steps, "image_size": image_size, "grid_columns": grid_columns}
    if deprocess_std is not None:
        positive["deprocess_std"] = deprocess_std
    not_negative = {"objective.border": loss_border, "deprocess_crop": deprocess_crop, "margin": margin,
                    "diversity": diversity, "redirected_relu_steps": redirected_relu_steps,
                    **{f"transforms.{key}": getattr(shift, key) for key in ("pad", "jitter", "rotate", "final_jitter")}}
    for name, value in positive.items():
        if value <= 0:
            raise ConvlabError(f"task.{name}={value} must be positive")
    for name, value in not_negative.items():
        if value < 0:
            raise ConvlabError(f"task.{name}={value} must not be negative")
    if 2 * deprocess_crop >= image_size:
        raise ConvlabError(f"task.deprocess_crop={deprocess_crop} leaves nothing of a {image_size}-px image",
                           fix=f"use task.deprocess_crop < {(image_size + 1) // 2}")
    if diversity and len(filters) < 2:
        raise ConvlabError(f"task.diversity={diversity} compares the batch's images, and there is one filter",
                           fix="visualize at least 2 filters, or set task.diversity=0")
    _check_transforms(shift, image_size)


def _check_transforms(shift: transform_pieces.Standard, image_size: int) -> None:
    """Each jitter must leave at least one pixel of the image it crops."""
    side = image_size + 2 * shift.pad
    for name in ("jitter", "final_jitter"):
        crop = max(getattr(shift, name) - 1, 0)
        if crop >= side:
            raise ConvlabError(f"task.transforms.{name}={getattr(shift, name)} crops more than the {side}-px image "
                               "it gets", fix=f"use task.transforms.{name} <= {side}, or a larger task.image_size")
        side -= crop
    if shift.scale is not None and (len(shift.scale) != 2 or not 0 < shift.scale[0] <= shift.scale[1]):
        raise ConvlabError(f"task.transforms.scale={list(shift.scale)} is not a range [low, high] of factors > 0",
                           fix="use e.g. task.transforms.scale=[0.9,1.1], or null for no scaling")


def _check_map(target: "keras.Model", layer: str, image_size: int, objective) -> None:
    """The layer's map at ``image_size`` must have a position left after the border (a neuron objective:
    a centre that is not the whole map); else name the smallest image size that works."""
    border = objective.border
    needed = max(2 * border + 1, objective.needs_map)
    size = map_size(target, image_size)
    if size is not None and min(size) >= needed:
        return
    smallest = smallest_input_side(target, needed, image_size)
    what = "no map at all" if size is None else f"a {size[0]}x{size[1]} map"
    reason = " (a neuron objective needs a map of 2x2 or more)" if isinstance(objective, objectives.Neuron) else ""
    if border:
        reason += f" (task.objective.border={border} leaves out {border} positions at each side)"
    fix = f"use task.image_size>={smallest}" if smallest else "pick an earlier layer"
    if border:
        fix += ", or a smaller task.objective.border"
    raise ConvlabError(f"layer {layer!r} has {what} at task.image_size={image_size}{reason}", fix=fix)


# ------------------------------------------------------------------------------------------- models


def _model_at_size(spec: ModelSpec, dataset, image_size: int) -> "keras.Model":
    """The spec's model taking ``image_size`` squares: as built when its input size is free or matches,
    else rebuilt at that size where the spec allows it (vgg16 with include_top=false), else its graph
    replayed on an ``image_size`` input with its weights (``at_input_size``: any model whose weights do
    not depend on the size, e.g. the offline MobileNetV2 fixed at 224)."""
    network = build_model(spec, dataset)
    height, width, channels = network.input_shape[1:]
    if height in (None, image_size) and width in (None, image_size):
        return network
    try:
        return spec.build((image_size, image_size, channels))
    except ConvlabError as error:
        reason = str(error).splitlines()[0]
    try:
        resized = at_input_size(network, image_size)
    except ValueError as error:
        reason += f"; its weights do not fit another size ({str(error).splitlines()[0][:120]})"
    else:
        log.info("%s takes %dx%d inputs: its graph replayed at %d px with its weights", spec.name, height, width,
                 image_size)
        return resized
    raise ConvlabError(f"{spec.name} takes {height}x{width} inputs, not task.image_size={image_size} ({reason})",
                       fix=f"set task.image_size={height}, or use a fully convolutional model")


# -------------------------------------------------------------------------------------------- output


def deprocess(image: np.ndarray, std: float | None, crop: int) -> np.ndarray:
    """The book's ``deprocess_image`` (std 0.1), with keras.io's std and centre crop as options; with
    ``std=None`` the pixels as they are, clipped to [0, 255]."""
    if std is None:
        x = np.clip(image, 0, 255)
        return (x[crop:-crop, crop:-crop] if crop else x).astype(np.uint8)
    x = image - image.mean()
    x /= image.std() + 1e-5
    x *= std
    if crop:
        x = x[crop:-crop, crop:-crop]
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    return x.astype(np.uint8)


def _log_layer(layer: str, filters: list[int], images: np.ndarray, patterns: np.ndarray, losses: np.ndarray,
               grid_columns: int, margin: int, seconds_per_filter: float) -> None:
    from mlflow.entities import Metric

    tiles = tile(patterns, grid_columns, margin)
    log_picture(tiles.squeeze(-1) if tiles.shape[-1] == 1 else tiles, f"filters/{layer}.png", key=f"filters/{layer}")
    log_npz(f"filters/{layer}.npz", filters=np.asarray(filters), patterns=patterns, images=images, losses=losses)

    final = losses[:, -1]
    timestamp = int(1000 * time.time())
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=[
        Metric(f"filter_loss/{layer}", float(value), timestamp, index) for index, value in zip(filters, final)])
    dead = [filters[i] for i in np.flatnonzero(quality.dead(losses))]
    mlflow.log_metrics({f"dead_filters/{layer}": len(dead), f"objective/{layer}": float(final.mean()),
                        f"seconds_per_filter/{layer}": seconds_per_filter})
    if dead:
        log.warning("%s: %d dead filter(s), objective constant from the start so their images never moved "
                    "(their tiles show the starting noise; task.preactivation=true avoids it): %s",
                    layer, len(dead), dead)
    log.info("%s: %d filters, %d dead, final objective mean %.4g, max %.4g", layer, len(filters), len(dead),
             final.mean(), final.max())


def _log_quality(layer: str, target: "keras.Model", images: np.ndarray) -> None:
    """The filters' own activation on their final images, its robustness, and the images' noise."""
    activation = quality.own_channel_means(target, images)
    robust = quality.robust_activation(target, images)
    high = quality.high_frequency_energy(images)
    metrics = {f"activation/{layer}": float(activation.mean()), f"high_frequency_energy/{layer}": float(high.mean())}
    if np.isfinite(robust).any():
        metrics[f"robust_activation/{layer}"] = float(np.nanmean(robust))
    mlflow.log_metrics(metrics)
    log.info("%s: activation %.4g, robust activation %s, high-frequency energy %.3f", layer, activation.mean(),
             f"{metrics.get(f'robust_activation/{layer}', float('nan')):.3f}", high.mean())
