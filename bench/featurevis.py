"""Speed of the lucid recipe: ``python -m bench.featurevis [--steps N --filters N --size PX --repeats N]``.

Workload (issue 14; the offline MobileNetV2 is built at 224 px, other sizes replay its graph with its
weights, ``target.at_input_size``): ``filters`` filters of
``block_6_expand_relu``, ``steps`` steps, the full lucid recipe (decorrelated Fourier image, Lucid's standard
transforms, Adam 0.05, pre-ReLU objective). Timed alternately in one run, each its best of ``repeats``
after one untimed run (tracing):

* convlab batched: every filter in one batch, one tf.function (runner.featurevis), the model run ``--chunk`` images
  at a time inside each step as the lucid recipe does (``task.chunk``); ``batched_one_pass``: the same with the
  whole batch in one pass;
* per filter: the same recipe, one compiled step (a tf.function per step, the filter index a tensor)
  called ``steps`` times per filter on a one-image batch -- the loop most notebooks write;
* tf-keras-vis 0.8.7 ``ActivationMaximization``, its defaults (Jitter 4 + Rotate2D 1 input modifiers,
  TotalVariation2D 1.0 + Norm regularizers, RMSprop 1.0), the same steps and size, all filters in one
  batch with one score per sample (its documented way to visualize several filters); optional
  (``pip install -e '.[crosscheck]'``), skipped without it.

The figures are seconds per filter and their ratios; absolute seconds depend on the machine's load,
which is printed beside them. The matmul roofline fraction counts the convolutions' forward + input
gradient FLOPs (bench/filters_bench.py's count) over a float32 4096^2 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

LAYER = "block_6_expand_relu"


def bench_featurevis(steps: int = 512, filters: int = 32, size: int = 128, repeats: int = 2, chunk: int = 4) -> dict:
    import numpy as np
    import tensorflow as tf

    from bench.filters_bench import MATMUL_SIDE, best_seconds_alternating, forward_conv_flops, matmul_timers
    from runner.featurevis import objectives, params, steps as step_rules, transforms
    from runner.featurevis.engine import Recipe, climber
    from runner.featurevis.target import at_input_size, target_model
    from runner.models.mobilenet_v2 import MobileNetV2

    network = MobileNetV2().build()
    if tuple(network.input_shape[1:3]) != (size, size):  # the offline weights are built at 224
        network = at_input_size(network, size)
    indices = list(range(filters))
    recipe = Recipe(chunk=chunk, objective=objectives.Channel(), param=params.Fourier(decorrelate=True),
                    step_rule=step_rules.Adam(0.05), steps=steps, transforms=transforms.Standard())
    target = target_model(network, LAYER, indices, preactivation=True)
    np.random.seed(0)
    start = recipe.param.initial(filters, size, 3)
    batched = climber(target, recipe)
    timers = {"convlab_batched": lambda: batched(start, 0)[0].numpy(),
              "per_filter": _per_filter(target_model(network, LAYER, None, preactivation=True), recipe, indices,
                                        start)}
    if chunk:  # the same climb with the model seeing the whole batch in one pass
        one_pass = climber(target, dataclasses.replace(recipe, chunk=0))
        timers["batched_one_pass"] = lambda: one_pass(start, 0)[0].numpy()
    tkv = _tf_keras_vis(network, indices, steps, size)
    if tkv is not None:
        timers["tf_keras_vis"] = tkv
    matmul = matmul_timers()
    load_before = os.getloadavg()
    seconds = best_seconds_alternating({**timers, **matmul}, repeats)
    per_filter = {name: seconds[name] / filters for name in timers}
    roofline = max(2 * MATMUL_SIDE**3 / seconds[lib] / 1e9 for lib in matmul)
    flops = 2 * forward_conv_flops(target) * steps * filters
    return {"steps": steps, "chunk": chunk, "filters": filters, "size": size, "layer": LAYER, "seconds_per_filter": per_filter,
            "speedup_vs_tf_keras_vis": per_filter.get("tf_keras_vis", float("nan")) / per_filter["convlab_batched"],
            "speedup_vs_per_filter": per_filter["per_filter"] / per_filter["convlab_batched"],
            "batched_gflops": flops / seconds["convlab_batched"] / 1e9, "roofline_gflops": roofline,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "tf": tf.__version__}


def _per_filter(whole_layer, recipe, indices, start):
    """The recipe's step as one tf.function (filter index a tensor), ``steps`` calls per filter."""
    import tensorflow as tf

    from runner.featurevis import transforms

    param, rule, shift = recipe.param, recipe.step_rule, recipe.transforms
    fixed = tuple(whole_layer.input_shape[1:3])

    @tf.function
    def step(variables, state, filter_index, step_index):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            images = transforms.at_size(shift, param.image(variables), tf.stack([0, step_index]), fixed)
            objective = tf.reduce_mean(whole_layer(images, training=False)[..., filter_index])
        grads = tape.gradient(objective, variables)
        return rule.update(variables, grads, state, step_index)

    def loop():
        for k, index in enumerate(indices):
            variables = tf.constant(start[k:k + 1])
            state = rule.initial_state(variables)
            for s in range(recipe.steps):
                variables, state = step(variables, state, tf.constant(index), tf.constant(s))
            param.image(variables).numpy()

    return loop


def _tf_keras_vis(network, indices, steps, size):
    """tf-keras-vis' ActivationMaximization with its defaults on the layer's (post-ReLU) output, or None."""
    try:
        from tf_keras_vis.activation_maximization import ActivationMaximization
    except ImportError:
        print("tf-keras-vis not installed (pip install -e '.[crosscheck]'): its column is left out")
        return None
    import tensorflow as tf

    from runner.layers import feature_model

    cut = feature_model(network, [LAYER])
    visualize = ActivationMaximization(cut, clone=False)
    index = tf.constant(indices)

    def score(output):  # one value per sample: sample i's filter i
        return tf.linalg.diag_part(tf.reduce_mean(tf.gather(output, index, axis=-1), axis=[1, 2]))

    def run():
        seed = tf.random.uniform((len(indices), size, size, 3), 0, 255, seed=0)
        visualize(score, seed_input=seed, steps=steps)

    return run


def _print(results: dict) -> None:
    before, after = (f"{results[key][0]:.1f}" for key in ("load_average_before", "load_average_after"))
    print(f"lucid recipe, MobileNetV2 {results['layer']}, {results['filters']} filters x {results['steps']} steps "
          f"at {results['size']} px, chunk {results['chunk']}; 1-min load average {before} before, {after} after (2 cores)")
    for name, seconds in results["seconds_per_filter"].items():
        print(f"  {name:<16} {seconds:8.4f} s/filter")
    print(f"  convlab batched vs tf-keras-vis: {results['speedup_vs_tf_keras_vis']:.2f}x; "
          f"vs per-filter loop: {results['speedup_vs_per_filter']:.2f}x")
    print(f"  batched {results['batched_gflops']:.1f} GFLOP/s of a {results['roofline_gflops']:.1f} GFLOP/s matmul "
          f"roofline ({results['batched_gflops'] / results['roofline_gflops']:.2f})")


def bench_pieces(filters: int = 32, size: int = 128, steps: int = 16, repeats: int = 2) -> dict:
    """Seconds per step of each piece of the batched lucid step, forward + gradient, on the workload's
    shapes: each piece in its own tf.function looping ``steps`` times (its input carried through the loop),
    timed alternately in one run with the whole compiled climb; and the target model's forward + input
    gradient on one image called ``filters`` times (what the per-filter loop runs) beside one batch of
    ``filters`` images."""
    import numpy as np
    import tensorflow as tf

    from bench.filters_bench import best_seconds_alternating, convolutions_alone
    from runner.featurevis import objectives, params, steps as step_rules, transforms
    from runner.featurevis.engine import Recipe, climber
    from runner.featurevis.target import at_input_size, target_model
    from runner.models.mobilenet_v2 import MobileNetV2

    network = at_input_size(MobileNetV2().build(), size)
    target = target_model(network, LAYER, list(range(filters)), preactivation=True)
    whole = target_model(network, LAYER, None, preactivation=True)
    fourier, standard, adam = params.Fourier(decorrelate=True), transforms.Standard(), step_rules.Adam(0.05)
    np.random.seed(0)
    variables = fourier.initial(filters, size, 3)
    pixels = fourier.image(tf.constant(variables)).numpy()
    moved = standard(tf.constant(pixels), tf.constant([0, 0])).numpy()
    channel = objectives.Channel()

    def looped(function, start):
        """``steps`` times: start += 1e-6 * d sum(function(start)) / d start, in one tf.function."""
        @tf.function
        def run(start):
            for step in tf.range(steps):
                with tf.GradientTape() as tape:
                    tape.watch(start)
                    total = tf.reduce_sum(function(start, tf.stack([0, step])))
                start = start + 1e-6 * tape.gradient(total, start)
            return start

        return lambda: run(tf.constant(start)).numpy()

    resize = (lambda images: tf.image.resize(images, (size, size)))

    @tf.function
    def adam_steps(start):
        state = adam.initial_state(start)
        for step in tf.range(steps):
            start, state = adam.update(start, start * 1e-3, state, step)
        return start

    @tf.function
    def one_image_step(image, filter_index):
        with tf.GradientTape() as tape:
            tape.watch(image)
            total = tf.reduce_mean(whole(image, training=False)[..., filter_index])
        return image + 1e-6 * tape.gradient(total, image)

    def one_image_calls():
        for index in range(filters):
            image = tf.constant(pixels[index:index + 1])
            for _ in range(steps):
                image = one_image_step(image, tf.constant(index))
            image.numpy()

    def chunked(chunk):
        """The target model's forward + input gradient ``chunk`` images at a time, chunk after chunk in a
        loop of the tf.function (image i still reads channel i), ``steps`` times."""
        @tf.function
        def run(images):
            for _ in tf.range(steps):
                grads = tf.TensorArray(tf.float32, size=filters // chunk)
                for k in tf.range(filters // chunk):
                    piece = images[k * chunk:(k + 1) * chunk]
                    with tf.GradientTape() as tape:
                        tape.watch(piece)
                        total = tf.reduce_sum(channel(target(piece, training=False)[..., k * chunk:(k + 1) * chunk]))
                    grads = grads.write(k, tape.gradient(total, piece))
                images = images + 1e-6 * tf.reshape(grads.stack(), tf.shape(images))
            return images

        return lambda: run(tf.constant(pixels)).numpy()

    climb = climber(target, Recipe(objective=channel, param=fourier, step_rule=adam, steps=steps,
                                   transforms=standard))
    before = climber(target, Recipe(objective=channel, param=_OpByOpFourier(), step_rule=adam, steps=steps,
                                    transforms=transforms.compose(standard.pieces())))
    timers = {
        "whole climb (batched)": lambda: climb(variables, 0)[0].numpy(),
        "whole climb, before (2 warps, no XLA)": lambda: before(variables, 0)[0].numpy(),
        "fourier image, op by op": looped(lambda v, seed: params.fourier_image(v), variables),
        "fourier image, XLA (as used)": looped(lambda v, seed: fourier.image(v), variables),
        "transforms in sequence + resize": looped(
            lambda x, seed: resize(transforms.compose(standard.pieces())(x, seed)), pixels),
        "transforms, one warp + resize": looped(lambda x, seed: resize(standard(x, seed)), pixels),
        "transforms, one warp at the model's size (as used)": looped(
            lambda x, seed: transforms.at_size(standard, x, seed, (size, size)), pixels),
        "resize alone": looped(lambda x, seed: resize(x), moved),
        "target model": looped(lambda x, seed: channel(target(x, training=False)), pixels),
        "its Conv2D convolutions alone": convolutions_alone(target, filters, steps),
        "target model, 1 image x filters": one_image_calls,
        **{f"target model, chunks of {chunk} in a loop": chunked(chunk) for chunk in (1, 4, 8) if filters % chunk == 0},
        "adam": lambda: adam_steps(tf.constant(variables)).numpy(),
    }
    load_before = os.getloadavg()
    seconds = best_seconds_alternating(timers, repeats)
    return {"filters": filters, "size": size, "steps": steps, "layer": LAYER,
            "seconds_per_step": {name: value / steps for name, value in seconds.items()},
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


class _OpByOpFourier:
    """The Fourier image as it was computed before XLA compiled it (for the "before" climb)."""

    def image(self, variables):
        from runner.featurevis import params

        return params.fourier_image(variables)


def _print_pieces(results: dict) -> None:
    before, after = (f"{results[key][0]:.1f}" for key in ("load_average_before", "load_average_after"))
    print(f"pieces of the batched lucid step, MobileNetV2 {results['layer']}, {results['filters']} filters at "
          f"{results['size']} px, {results['steps']} steps each; 1-min load average {before} before, {after} "
          "after (2 cores); forward + gradient, s/step and share of the whole climb's step")
    per_step = results["seconds_per_step"]
    whole = per_step["whole climb (batched)"]
    for name, seconds in per_step.items():
        print(f"  {name:<34} {seconds:8.4f} s/step  {seconds / whole:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4, help="images per model pass in a batched step (the lucid "
                        "recipe's task.chunk; 0: the whole batch)")
    parser.add_argument("--pieces", action="store_true", help="time the pieces of the batched step instead")
    arguments = parser.parse_args()
    if arguments.pieces:
        _print_pieces(bench_pieces(arguments.filters, arguments.size, arguments.steps, arguments.repeats))
    else:
        _print(bench_featurevis(arguments.steps, arguments.filters, arguments.size, arguments.repeats, arguments.chunk))
