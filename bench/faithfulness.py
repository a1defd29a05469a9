"""Deletion + insertion curves on MobileNetV2 (224 px): runner.faithfulness's batched pass vs a loop of one
forward call per step (RISE's reference code), timed alternately in one run.

Three ways to get the same curves of ``--photos`` photos with ``--steps`` steps each (deletion onto zero,
insertion from the blur): ``batched`` (all the steps of an image as batched, compiled forward passes),
``per_step_eager`` (``model(x[None])`` per step, as RISE's PyTorch loop) and ``per_step_compiled`` (the
same loop with a compiled single-image pass). Each is run once untimed, then the three take turns
``--repeats`` times and keep their best. The fraction of the matmul roofline counts the forward FLOPs of the
convolutions and the classifier (2 per multiply-add) over a float32 4096^2 matmul timed in the same run.

    python -m bench.faithfulness                      # the issue's setting: 8 photos, 112 steps
    python -m bench.faithfulness --photos 2 --repeats 1   # a loaded machine
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.filters_bench import MATMUL_SIDE, best_seconds_alternating, matmul_timers

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def forward_flops(model) -> int:
    """FLOPs of one image through the Conv2D, DepthwiseConv2D and Dense layers of ``model``."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += 2 * height * width * channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel_height * kernel_width * in_channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def bench(photos: int = 8, steps: int = 112, repeats: int = 2, batch_size: int = 32) -> dict:
    import skimage.data
    import tensorflow as tf

    from runner.explain.targets import class_probabilities
    from runner.faithfulness import (ClassProbability, blurred, per_step_curve, pixel_ranks, step_counts,
                                     substrate)
    from runner.models.mobilenet_v2 import MobileNetV2

    load_before = os.getloadavg()
    spec = MobileNetV2()
    model = spec.build()
    images = [spec.preprocess(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])())[0].astype(np.float32)
              for i in range(photos)]
    targets = [int(np.argmax(model(image[None], training=False)[0])) for image in images]
    rng = np.random.default_rng(0)
    ranks = [pixel_ranks(rng.uniform(size=image.shape[:2])) for image in images]
    counts = step_counts(224 * 224, steps)
    pairs = [[(image, substrate(image, "zero")), (blurred(image), image)] for image in images]
    probability = ClassProbability(model, batch_size)
    single = tf.function(lambda x: class_probabilities(model(x, training=False)))

    def batched():
        return [probability.progressive(start, end, rank, counts, target)
                for pair, rank, target in zip(pairs, ranks, targets) for start, end in pair]

    def per_step_eager():
        return [per_step_curve(model, start, end, rank, counts, target)
                for pair, rank, target in zip(pairs, ranks, targets) for start, end in pair]

    def per_step_compiled():
        return [[float(single(np.where((rank < count)[..., None], end, start)[None])[0, target]) for count in counts]
                for pair, rank, target in zip(pairs, ranks, targets) for start, end in pair]

    np.testing.assert_allclose(np.array(batched()), np.array(per_step_eager()), atol=1e-4)  # same curves
    timers = {"batched": batched, "per_step_eager": per_step_eager, "per_step_compiled": per_step_compiled,
              **{f"matmul_{lib}": work for lib, work in matmul_timers().items()}}
    best = best_seconds_alternating(timers, repeats)
    roofline = max(2 * MATMUL_SIDE ** 3 / best[name] / 1e9 for name in best if name.startswith("matmul_"))
    flops = forward_flops(model) * 2 * len(counts) * photos
    return {"photos": photos, "steps": steps, "forward_passes": 2 * len(counts) * photos,
            "seconds": {name: best[name] for name in ("batched", "per_step_eager", "per_step_compiled")},
            "gflops": {name: flops / best[name] / 1e9 for name in ("batched", "per_step_eager", "per_step_compiled")},
            "roofline_gflops": roofline, "load_average_before": load_before, "load_average_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--steps", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    started = time.perf_counter()
    results = bench(args.photos, args.steps, args.repeats, args.batch_size)
    seconds, gflops = results["seconds"], results["gflops"]
    print(f"{results['photos']} photos x {results['steps']} steps x (deletion + insertion) = "
          f"{results['forward_passes']} forward passes of MobileNetV2 at 224 px; 1-min load average "
          f"{results['load_average_before'][0]:.1f} before, {results['load_average_after'][0]:.1f} after")
    for name in seconds:
        print(f"  {name:<18} {seconds[name]:8.2f} s  {gflops[name]:6.1f} GFLOP/s  "
              f"({gflops[name] / results['roofline_gflops']:.2f} of the {results['roofline_gflops']:.1f} GFLOP/s "
              f"matmul roofline)")
    print(f"  batched is {seconds['per_step_eager'] / seconds['batched']:.1f}x the per-step eager loop (RISE's "
          f"way), {seconds['per_step_compiled'] / seconds['batched']:.1f}x the compiled per-step loop "
          f"({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
