"""`python -m bench.visualize`: the visualization benchmarks in one run on the same machine.

- filters: seconds per filter, convlab's batched ascent vs a keras.io-style per-filter tf.function loop,
  and achieved GFLOP/s against a float32 matmul measured in the same run (bench/filters_bench.py);
- featurevis: the lucid recipe on MobileNetV2, convlab batched vs a per-filter loop vs tf-keras-vis'
  ActivationMaximization (bench/featurevis.py; short: 32 steps, 8 filters);
- gradcam: images/s for 32 images at 224 px on MobileNetV2, convlab's batched Grad-CAM vs the keras.io
  per-image `make_gradcam_heatmap` loop (bench/gradcam_bench.py).
"""

import runpy

if __name__ == "__main__":
    import sys

    for module, arguments in (("bench.filters_bench", []), ("bench.featurevis", ["--steps", "32", "--filters", "8"]),
                              ("bench.gradcam_bench", [])):
        print(f"== {module} {' '.join(arguments)}")
        sys.argv = [module, *arguments]
        runpy.run_module(module, run_name="__main__")
