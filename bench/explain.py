"""Attribution throughput on MobileNetV2 (224x224): convlab's runner.explain vs tf-keras-vis, same inputs.

For every method: images/s of convlab (gradient model and compiled pass built once, the first call's
tracing excluded and reported apart) and, where tf-keras-vis has the method, of tf-keras-vis on the same
batch, model, layer and targets, timed alternately (A B A B ...) so load changes hit both; the ratio is
printed. Grad-CAM is also timed against the keras.io per-image recipe. Run:

    python -m bench.explain                       # the issue's setting: 32 photos, every method
    python -m bench.explain --batch 4 --repeats 1 --scorecam-channels 64 --methods gradcam,saliency

On a loaded or small machine use a smaller --batch/--repeats; the ratios are the result, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

LAYER = "out_relu"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TKV = {"gradcam": "Gradcam", "gradcampp": "GradcamPlusPlus", "layercam": "Layercam", "scorecam": "Scorecam",
       "saliency": "Saliency", "smoothgrad": "Saliency"}


def photo_batch(spec, count: int) -> np.ndarray:
    import skimage.data

    photos = [spec.preprocess(getattr(skimage.data, name)())[0] for name in PHOTOS]
    return np.stack([photos[index % len(photos)] for index in range(count)])


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def settings_for(name: str, args) -> dict:
    return {"scorecam": {"max_channels": args.scorecam_channels, "batch_size": 32},
            "smoothgrad": {"samples": args.samples}, "integrated_gradients": {"steps": args.steps}}.get(name, {})


def tf_keras_vis_call(name: str, network, images, targets, args):
    """A no-argument call running tf-keras-vis' counterpart of ``name`` (None where it has none)."""
    try:
        import tf_keras_vis.gradcam
        import tf_keras_vis.layercam
        import tf_keras_vis.saliency
        import tf_keras_vis.scorecam
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        return None
    if name not in TKV:
        return None
    module = {"Gradcam": tf_keras_vis.gradcam, "GradcamPlusPlus": tf_keras_vis.gradcam,
              "Layercam": tf_keras_vis.layercam, "Scorecam": tf_keras_vis.scorecam,
              "Saliency": tf_keras_vis.saliency}[TKV[name]]
    visualizer = getattr(module, TKV[name])(network, clone=False)
    score = CategoricalScore(list(targets))
    if name == "saliency":
        return lambda: visualizer(score, images)
    if name == "smoothgrad":
        return lambda: visualizer(score, images, smooth_samples=args.samples, smooth_noise=0.15)
    extra = {"max_N": args.scorecam_channels or -1, "batch_size": 32} if name == "scorecam" else {}
    return lambda: visualizer(score, images, penultimate_layer=LAYER, seek_penultimate_conv_layer=False, **extra)


def bench(args) -> list[dict]:
    from bench.gradcam_bench import keras_io_make_gradcam_heatmap
    from runner.explain import Explainer
    from runner.models.mobilenet_v2 import MobileNetV2

    spec = MobileNetV2()
    network = spec.build()
    images = photo_batch(spec, args.batch)
    rows = []
    for name in args.methods:
        layer = None if name in ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "random",
                                 "center") else LAYER
        start = time.perf_counter()
        explainer = Explainer(network, name, layer, **settings_for(name, args))
        first = explainer(images)
        first_s = time.perf_counter() - start
        other = tf_keras_vis_call(name, network, images, first.targets, args)
        if other is not None:
            other()  # tf-keras-vis' own warm-up (its eager passes, Keras' predict function)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(seconds(lambda: explainer(images)))
            if other is not None:
                theirs.append(seconds(other))
        row = {"method": name, "convlab_images_per_s": args.batch / statistics.median(ours),
               "convlab_first_call_s": first_s}
        if theirs:
            row["tf_keras_vis_images_per_s"] = args.batch / statistics.median(theirs)
            row["ratio"] = statistics.median(theirs) / statistics.median(ours)
        if name == "gradcam":
            loop = seconds(lambda: [keras_io_make_gradcam_heatmap(image[None], network, LAYER) for image in images])
            row["keras_io_loop_images_per_s"] = args.batch / loop
            row["ratio_vs_keras_io"] = loop / statistics.median(ours)
        if name == "scorecam":
            row.update(scorecam_roofline(row, network, args))
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def scorecam_roofline(row: dict, network, args) -> dict:
    """Score-CAM is bound by its masked forward passes: their rate, their Conv2D GFLOP/s, and that as a
    fraction of a float32 matmul's GFLOP/s timed now, in the same process."""
    from bench.filters_bench import MATMUL_SIDE, best_seconds_alternating, forward_conv_flops, matmul_timers

    channels = args.scorecam_channels or network.get_layer(LAYER).output.shape[-1]
    masked = row["convlab_images_per_s"] * channels
    gflops = masked * forward_conv_flops(network) / 1e9
    roofline = max(2 * MATMUL_SIDE**3 / seconds / 1e9 for seconds in best_seconds_alternating(matmul_timers(), 2).values())
    return {"masked_images_per_s": masked, "gflops": gflops, "matmul_gflops": roofline, "roofline_fraction": gflops / roofline}


def _line(row: dict) -> str:
    parts = [f"{row['method']:>21}: convlab {row['convlab_images_per_s']:8.3g} img/s "
             f"(first call {row['convlab_first_call_s']:.1f} s)"]
    if "ratio" in row:
        parts.append(f"tf-keras-vis {row['tf_keras_vis_images_per_s']:8.3g} img/s  ratio {row['ratio']:5.1f}x")
    if "ratio_vs_keras_io" in row:
        parts.append(f"keras.io loop {row['keras_io_loop_images_per_s']:.2f} img/s  ratio {row['ratio_vs_keras_io']:.1f}x")
    if "roofline_fraction" in row:
        parts.append(f"{row['masked_images_per_s']:.1f} masked img/s, {row['gflops']:.1f} GFLOP/s = "
                     f"{row['roofline_fraction']:.2f} of the matmul's {row['matmul_gflops']:.1f}")
    return "  |  ".join(parts)


def main() -> None:
    from runner.explain import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", type=lambda text: text.split(","), default=list(METHODS))
    parser.add_argument("--scorecam-channels", type=int, default=None, help="Faster Score-CAM; default: all 1280")
    parser.add_argument("--samples", type=int, default=25, help="SmoothGrad samples")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"load average before: {os.getloadavg()[0]:.2f}; batch {args.batch}, repeats {args.repeats}")
    bench(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
