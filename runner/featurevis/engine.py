"""The compiled ascent: every image of a batch climbs its objective at once, in one ``tf.function``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Recipe:
    """One way of visualizing: objective x parameterization x transforms x step rule, for ``steps``;
    optionally regularizers on the pixels and Lucid's redirected ReLU gradient for the first steps."""

    objective: Callable  # activation -> [batch]  (objectives)
    param: Any  # initial / image  (params)
    step_rule: Any  # initial_state / update  (steps)
    steps: int
    transforms: Callable | None = None  # (images, seed) -> images  (transforms)
    regularizer: Callable | None = None  # pixels -> [batch], subtracted from the objective  (regularizers)
    redirected_relu_steps: int = 0  # the first steps climb through redirected ReLUs  (redirect)
    chunk: int = 0  # images per pass of the model inside a step; 0: the whole batch in one pass


def activations_in_chunks(model: "keras.Model", images, chunk: int):
    """``model(images)`` run ``chunk`` images at a time and concatenated (0 or a chunk >= the batch: one pass).

    The same activations, computed in pieces: on a CPU a memory-bound network (MobileNetV2's depthwise
    convolutions, batch norms) runs faster in chunks of a few images than on a batch of 32. The pieces are
    independent, so TensorFlow may run them side by side; forcing them one after another was slower than
    one pass (docs/featurevis.md, "Speed"). They are unrolled in the trace, so the tape differentiates
    through each."""
    import tensorflow as tf

    batch = images.shape[0]
    if not chunk or batch is None or chunk >= batch:
        return model(images, training=False)
    sizes = [chunk] * (batch // chunk) + ([batch % chunk] if batch % chunk else [])
    return tf.concat([model(part, training=False) for part in tf.split(images, sizes)], axis=0)


def climber(target: "keras.Model", recipe: Recipe, progress=None) -> Callable:
    """A tf.function ``climb(variables, seed) -> (images, objectives [batch x steps])`` running every step.

    At each step the parameterization's pixels go through the transforms (drawn from ``seed`` and the
    step), are resized to ``target``'s input size where it has a fixed one and the transforms changed it
    (lucent's ``fixed_image_size``; ``transforms.at_size``: inside their warp where they have one), and the
    gradient of the summed objective minus the regularizer's penalty (on the untransformed pixels) moves
    the variables by the step rule. The first
    ``redirected_relu_steps`` steps run through a copy of ``target`` with redirected ReLU gradients
    (``redirect``), the rest through ``target``. ``objectives[i, s]`` is image i's objective (without the
    penalty) before step s (what the book records); ``images`` are the final variables' pixels,
    untransformed. ``progress`` (a ``runner.terminal.CompiledProgress``) counts the steps at a terminal.
    """
    import tensorflow as tf

    from runner.featurevis.transforms import at_size

    fixed_size = tuple(target.input_shape[1:3])
    param, rule, transforms, regularizer = recipe.param, recipe.step_rule, recipe.transforms, recipe.regularizer
    redirected_steps = min(recipe.redirected_relu_steps, recipe.steps)
    if redirected_steps:
        from runner.featurevis.redirect import redirected_clone

        redirected = redirected_clone(target)

    def objective_of(model, variables, seed):
        pixels = param.image(variables)
        images = at_size(transforms, pixels, seed, fixed_size)
        objective = recipe.objective(activations_in_chunks(model, images, recipe.chunk))
        return objective, (objective if regularizer is None else objective - regularizer(pixels))

    def ascend(model, first, last, variables, state, objectives, seed):
        for step in tf.range(first, last):
            # only the variables are watched: no weight gradients are computed
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(variables)
                objective, total = objective_of(model, variables, tf.stack([seed, step]))
                total = tf.reduce_sum(total)
            grads = tape.gradient(total, variables)
            variables, state = rule.update(variables, grads, state, step)
            objectives = objectives.write(step, objective)
            if progress is not None:
                progress.advance(1, recipe.steps, after=variables)
        return variables, state, objectives

    @tf.function
    def climb(variables, seed):
        seed = tf.cast(seed, tf.int32)
        objectives = tf.TensorArray(tf.float32, size=recipe.steps)
        state = rule.initial_state(variables)
        if redirected_steps:
            variables, state, objectives = ascend(redirected, 0, redirected_steps, variables, state, objectives, seed)
        variables, state, objectives = ascend(target, redirected_steps, recipe.steps, variables, state, objectives,
                                              seed)
        return param.image(variables), tf.transpose(objectives.stack())

    return climb
