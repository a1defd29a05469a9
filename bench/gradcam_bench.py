"""Grad-CAM throughput on MobileNetV2 (224x224): convlab's batched pass vs the keras.io per-image recipe.

keras.io's ``make_gradcam_heatmap`` builds a gradient model and runs an eager GradientTape on every call;
convlab builds the gradient model once per run and sends all images through one compiled pass.
Run with ``python -m bench.gradcam_bench``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

LAYER = "out_relu"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
BATCHED_REPEATS = 3


def bench_gradcam(images: int = 32) -> dict:
    """Images/s of both ways on the same ``images`` photos, and how far their heatmaps are apart."""
    from runner.explain import Explainer
    from runner.models.mobilenet_v2 import MobileNetV2

    spec = MobileNetV2()
    network = spec.build()
    batch = _photo_batch(spec, images)

    start = time.perf_counter()
    gradcam = Explainer(network, "gradcam", LAYER)
    first = gradcam(batch)  # builds the gradient model and traces the compiled pass
    batched_first_s = time.perf_counter() - start
    batched_s = statistics.median(_seconds(lambda: gradcam(batch)) for _ in range(BATCHED_REPEATS))
    batched_maps = first.maps

    start = time.perf_counter()
    loop_maps = np.stack([keras_io_make_gradcam_heatmap(image[None], network, LAYER) for image in batch])
    loop_s = time.perf_counter() - start

    return {
        "images": images,
        "batched_images_per_s": images / batched_s,
        "batched_first_call_images_per_s": images / batched_first_s,  # incl. gradient model build + tracing
        "per_image_loop_images_per_s": images / loop_s,
        "speedup": loop_s / batched_s,
        "speedup_incl_first_call": loop_s / batched_first_s,
        "max_heatmap_difference": float(np.abs(batched_maps - loop_maps).max()),
    }


def keras_io_make_gradcam_heatmap(img_array, model, last_conv_layer_name, pred_index=None):
    """keras.io's Grad-CAM example (fchollet), as published: one gradient model per call."""
    import keras
    import tensorflow as tf

    grad_model = keras.models.Model(model.inputs, [model.get_layer(last_conv_layer_name).output, model.output])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        if pred_index is None:
            pred_index = tf.argmax(preds[0])
        class_channel = preds[:, pred_index]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


def _photo_batch(spec, count: int) -> np.ndarray:
    import skimage.data

    photos = [spec.preprocess(getattr(skimage.data, name)())[0] for name in PHOTOS]
    return np.stack([photos[index % len(photos)] for index in range(count)])


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    import warnings

    # keras.io's recipe builds its model with inputs=[input]; Keras warns about that on every call
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    result = bench_gradcam()
    for key, value in result.items():
        print(f"{key:>34}: {value:.4g}" if isinstance(value, float) else f"{key:>34}: {value}")
    print(f"batched / per-image loop: {result['speedup']:.1f}x "
          f"({result['speedup_incl_first_call']:.1f}x counting the one-time build and tracing)")
