"""Speed of the filters task's gradient ascent on CPU: ``python -m bench.filters_bench``.

For each layer, 64 filters x 40 steps at 64 px on VGG16 (random weights: the speed does not depend on
them), timed two ways after tracing:

* batched: convlab's climb (runner.featurevis, the book recipe), every filter of the layer in one batch, one tf.function;
* per filter: a tf.function step called 40 times per filter, written like the keras.io example (the
  filter index is a tensor, so it traces once where keras.io's Python int retraces for every filter);
  timed on ``baseline_filters`` filters and reported per filter.

Achieved GFLOP/s counts the FLOPs of the convolutions the ascent runs: forward + input gradient = 2x
forward. The ascent needs no weight gradients and computes none (the tape watches only the image), so the
usual 3x training estimate would overstate the work by 1.5x; and the target layer computes only the
requested channels (runner.featurevis.target.target_model), so the skipped ones are not counted either. The
roofline is the better of a 4096^2 float32 matmul in TensorFlow and in NumPy, timed in turn with the
ascent for every layer (best of all).

A third timing, "convolutions alone", runs just those convolutions (forward with bias + ReLU, and the
input gradient) the same number of times on random tensors of the same shapes: the speed TensorFlow's
convolution kernels give these shapes on this CPU, which no scheme keeping the same convolutions beats.
The per-filter baseline runs the network cut at the layer with all its channels, as keras.io does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1")
MATMUL_SIDE = 4096


def bench_filters(layers: tuple[str, ...] = LAYERS, filters: int = 64, steps: int = 40, size: int = 64,
                  baseline_filters: int = 8, repeats: int = 3) -> dict:
    """Seconds per filter (batched vs per filter), achieved GFLOP/s and the matmul roofline.

    The CPUs are shared, so the three measurements alternate ``repeats`` times and each keeps its best.
    """
    from runner.featurevis import objectives, params, steps as step_rules
    from runner.featurevis.engine import Recipe, climber
    from runner.featurevis.target import target_model
    from runner.layers import feature_model
    from runner.models.vgg16 import VGG16

    network = VGG16(weights=None, include_top=False).build((size, size, 3))
    matmul = matmul_timers()
    best = {lib: float("inf") for lib in matmul}
    results: dict = {"layers": {}, "filters": filters, "steps": steps, "size": size,
                     "load_average_before": os.getloadavg()}
    for layer in layers:
        indices = list(range(filters))
        truncated = target_model(network, layer, indices)
        climb = climber(truncated, Recipe(objective=objectives.Channel(), param=params.Pixels("book"),
                                          step_rule=step_rules.NormalizedAscent(1.0, "rms"), steps=steps))
        whole = feature_model(network, [layer])  # the per-filter loop cuts the network as keras.io does
        start = params.book_start(filters, size, 3)
        timers = {"batched": lambda: climb(start, 0)[0].numpy(),
                  "per_filter": _per_filter_loop(whole, baseline_filters, steps, size),
                  "convolutions_alone": convolutions_alone(truncated, filters, steps), **matmul}
        seconds = best_seconds_alternating(timers, repeats)
        best = {lib: min(best[lib], seconds[lib]) for lib in matmul}
        batched, per_filter = seconds["batched"] / filters, seconds["per_filter"] / baseline_filters
        flops_per_filter = 2 * forward_conv_flops(truncated) * steps
        results["layers"][layer] = {
            "batched_s_per_filter": batched,
            "per_filter_s_per_filter": per_filter,
            "speedup": per_filter / batched,
            "batched_gflops": flops_per_filter / batched / 1e9,
            "per_filter_gflops": flops_per_filter / per_filter / 1e9,
            "convolutions_alone_gflops": flops_per_filter * filters / seconds["convolutions_alone"] / 1e9,
        }
    results["matmul_gflops"] = {lib: 2 * MATMUL_SIDE**3 / seconds / 1e9 for lib, seconds in best.items()}
    results["roofline_gflops"] = roofline = max(results["matmul_gflops"].values())
    for numbers in results["layers"].values():
        numbers["roofline_fraction"] = numbers["batched_gflops"] / roofline
        numbers["convolutions_alone_fraction"] = numbers["convolutions_alone_gflops"] / roofline
        numbers["share_of_convolutions_alone"] = numbers["batched_gflops"] / numbers["convolutions_alone_gflops"]
    results["load_average_after"] = os.getloadavg()
    return results


def best_seconds_alternating(timers: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each timer's best wall time of ``repeats`` runs, the timers taking turns, after one untimed run
    each (tracing, oneDNN primitive creation)."""
    for work in timers.values():
        work()
    best = {name: float("inf") for name in timers}
    for _ in range(repeats):
        for name, work in timers.items():
            started = time.perf_counter()
            work()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def _per_filter_loop(truncated, count: int, steps: int, size: int) -> Callable[[], None]:
    """keras.io's loop: for each filter, ``steps`` calls of a one-image gradient ascent step."""
    import numpy as np
    import tensorflow as tf

    @tf.function
    def gradient_ascent_step(img, filter_index, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(img)
            loss = tf.reduce_mean(truncated(img)[:, :, :, filter_index])
        grads = tape.gradient(loss, img)
        grads = tf.math.l2_normalize(grads)
        img += learning_rate * grads
        return loss, img

    def loop() -> None:
        for filter_index in range(count):
            img = tf.constant(np.random.random((1, size, size, 3)).astype(np.float32) * 20 + 128)
            for _ in range(steps):
                loss, img = gradient_ascent_step(img, tf.constant(filter_index), 1.0)
            img.numpy()

    return loop


def convolutions_alone(model, batch: int, steps: int) -> Callable[[], None]:
    """The ascent's convolutions and nothing else, ``steps`` times: each Conv2D of ``model`` forward
    (with its bias and ReLU, which TensorFlow fuses into the convolution) and its input gradient, on
    random tensors of the shapes the ascent uses, in one tf.function. What TensorFlow's convolution
    kernels alone take for the ascent's FLOPs: no scheme that keeps these convolutions can beat it."""
    import keras
    import tensorflow as tf

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]  # as forward_conv_flops
    shapes = [((batch, *layer.input.shape[1:]), (batch, *layer.output.shape[1:])) for layer in convs]
    tensors = [(tf.random.normal(x), tf.random.normal(y)) for x, y in shapes]

    @tf.function
    def run() -> tf.Tensor:
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            for layer, (x, grad) in zip(convs, tensors):
                strides, padding = [1, *layer.strides, 1], layer.padding.upper()
                y = tf.nn.conv2d(x, layer.kernel, strides, padding)
                y = tf.nn.relu(y if layer.bias is None else tf.nn.bias_add(y, layer.bias))
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=layer.kernel, out_backprop=grad,
                                                    strides=strides, padding=padding)
                total += y[0, 0, 0, 0] + dx[0, 0, 0, 0]
        return total

    return lambda: run().numpy()


def forward_conv_flops(model) -> int:
    """FLOPs (2 per multiply-add) of one image through every Conv2D of ``model``."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel_height * kernel_width * in_channels
    return total


def matmul_timers() -> dict[str, Callable[[], object]]:
    """A float32 MATMUL_SIDE^2 matmul in TensorFlow and in NumPy."""
    import numpy as np
    import tensorflow as tf

    a, b = (np.random.random((MATMUL_SIDE, MATMUL_SIDE)).astype(np.float32) for _ in range(2))
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    tf_matmul = tf.function(lambda: tf.linalg.matmul(tf_a, tf_b))
    return {"tensorflow": lambda: tf_matmul().numpy(), "numpy": lambda: a @ b}


def _print_table(results: dict) -> None:
    loads = [f"{results[key][0]:.1f}" for key in ("load_average_before", "load_average_after")]
    print(f"{results['filters']} filters x {results['steps']} steps at {results['size']} px, VGG16; "
          f"1-min load average {loads[0]} before, {loads[1]} after (2 cores)")
    print(f"roofline: float32 {MATMUL_SIDE}^2 matmul "
          + ", ".join(f"{lib} {gflops:.1f}" for lib, gflops in results["matmul_gflops"].items()) + " GFLOP/s")
    print(f"{'layer':<14}{'batched s/filter':>18}{'per-filter s/filter':>21}{'speedup':>9}"
          f"{'batched GFLOP/s':>17}{'per-filter GFLOP/s':>20}{'of roofline':>13}"
          f"{'convs alone GFLOP/s':>21}{'(of roofline)':>15}{'batched/convs alone':>21}")
    for layer, n in results["layers"].items():
        print(f"{layer:<14}{n['batched_s_per_filter']:>18.4f}{n['per_filter_s_per_filter']:>21.4f}"
              f"{n['speedup']:>8.1f}x{n['batched_gflops']:>17.1f}{n['per_filter_gflops']:>20.1f}"
              f"{n['roofline_fraction']:>13.2f}{n['convolutions_alone_gflops']:>21.1f}"
              f"{n['convolutions_alone_fraction']:>15.2f}{n['share_of_convolutions_alone']:>21.2f}")


if __name__ == "__main__":
    _print_table(bench_filters())
