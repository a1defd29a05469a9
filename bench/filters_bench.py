"""Speed of the filters task's gradient ascent on CPU: ``python -m bench.filters_bench``.

For each layer, 64 filters x 40 steps at 64 px on VGG16 (random weights: the speed does not depend on
them), timed two ways after tracing:

* batched: convlab's climb (tasks.filters), every filter of the layer in one batch, one tf.function;
* per filter: a tf.function step called 40 times per filter, written like the keras.io example (the
  filter index is a tensor, so it traces once where keras.io's Python int retraces for every filter);
  timed on ``baseline_filters`` filters and reported per filter.

Achieved GFLOP/s counts the convolutions' FLOPs: forward + input gradient = 2x forward. The ascent
needs no weight gradients and computes none (the tape watches only the image), so the usual 3x
training estimate would overstate the work by 1.5x. The roofline is the better of a 4096^2 float32
matmul in TensorFlow and in NumPy, timed in turn with the ascent for every layer (best of all).
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
    from runner.models.vgg16 import VGG16
    from tasks.filters import _book_init, _gradient_ascent, _rms_normalized, _truncated_at

    network = VGG16(weights=None, include_top=False).build((size, size, 3))
    matmul = _matmul_timers()
    best = {lib: float("inf") for lib in matmul}
    results: dict = {"layers": {}, "filters": filters, "steps": steps, "size": size,
                     "load_average_before": os.getloadavg()}
    for layer in layers:
        indices = list(range(filters))
        truncated = _truncated_at(network, layer, indices, size, 0)
        climb = _gradient_ascent(truncated, indices, steps, 1.0, _rms_normalized, 0)
        start = _book_init(filters, size, 3)
        timers = {"batched": lambda: climb(start)[0].numpy(),
                  "per_filter": _per_filter_loop(truncated, baseline_filters, steps, size), **matmul}
        seconds = _best_seconds_alternating(timers, repeats)
        best = {lib: min(best[lib], seconds[lib]) for lib in matmul}
        batched, per_filter = seconds["batched"] / filters, seconds["per_filter"] / baseline_filters
        flops_per_filter = 2 * _forward_conv_flops(truncated) * steps
        results["layers"][layer] = {
            "batched_s_per_filter": batched,
            "per_filter_s_per_filter": per_filter,
            "speedup": per_filter / batched,
            "batched_gflops": flops_per_filter / batched / 1e9,
            "per_filter_gflops": flops_per_filter / per_filter / 1e9,
        }
    results["matmul_gflops"] = {lib: 2 * MATMUL_SIDE**3 / seconds / 1e9 for lib, seconds in best.items()}
    results["roofline_gflops"] = roofline = max(results["matmul_gflops"].values())
    for numbers in results["layers"].values():
        numbers["roofline_fraction"] = numbers["batched_gflops"] / roofline
    results["load_average_after"] = os.getloadavg()
    return results


def _best_seconds_alternating(timers: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
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


def _forward_conv_flops(model) -> int:
    """FLOPs (2 per multiply-add) of one image through every Conv2D of ``model``."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel_height * kernel_width * in_channels
    return total


def _matmul_timers() -> dict[str, Callable[[], object]]:
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
          f"{'batched GFLOP/s':>17}{'per-filter GFLOP/s':>20}{'of roofline':>13}")
    for layer, n in results["layers"].items():
        print(f"{layer:<14}{n['batched_s_per_filter']:>18.4f}{n['per_filter_s_per_filter']:>21.4f}"
              f"{n['speedup']:>8.1f}x{n['batched_gflops']:>17.1f}{n['per_filter_gflops']:>20.1f}"
              f"{n['roofline_fraction']:>13.2f}")


if __name__ == "__main__":
    _print_table(bench_filters())
