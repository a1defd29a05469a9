"""The compiled ascent: every image of a batch climbs its objective at once, in one ``tf.function``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Recipe:
    """One way of visualizing: objective x parameterization x transforms x step rule, for ``steps``."""

    objective: Callable  # activation -> [batch]  (objectives)
    param: Any  # initial / image  (params)
    step_rule: Any  # initial_state / update  (steps)
    steps: int
    transforms: Callable | None = None  # (images, seed) -> images  (transforms)


def climber(target: "keras.Model", recipe: Recipe) -> Callable:
    """A tf.function ``climb(variables, seed) -> (images, objectives [batch x steps])`` running every step.

    At each step the parameterization's pixels go through the transforms (drawn from ``seed`` and the
    step), are resized to ``target``'s input size where it has a fixed one and the transforms changed it
    (lucent's ``fixed_image_size``), and the summed objective's gradient moves the variables by the step
    rule. ``objectives[i, s]`` is image i's objective before step s (what the book records); ``images``
    are the final variables' pixels, untransformed.
    """
    import tensorflow as tf

    fixed_size = tuple(target.input_shape[1:3])
    param, rule, transforms = recipe.param, recipe.step_rule, recipe.transforms

    def objective_of(variables, seed):
        images = param.image(variables)
        if transforms is not None:
            images = transforms(images, seed)
        if None not in fixed_size and tuple(images.shape[1:3]) != fixed_size:
            images = tf.image.resize(images, fixed_size)
        return recipe.objective(target(images, training=False))

    @tf.function
    def climb(variables, seed):
        seed = tf.cast(seed, tf.int32)
        objectives = tf.TensorArray(tf.float32, size=recipe.steps)
        state = rule.initial_state(variables)
        for step in tf.range(recipe.steps):
            # only the variables are watched: no weight gradients are computed
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(variables)
                objective = objective_of(variables, tf.stack([seed, step]))
                total = tf.reduce_sum(objective)
            grads = tape.gradient(total, variables)
            variables, state = rule.update(variables, grads, state, step)
            objectives = objectives.write(step, objective)
        return param.image(variables), tf.transpose(objectives.stack())

    return climb
