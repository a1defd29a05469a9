"""Speed of the augmented training pipeline: ``python -m bench.train_pipeline [--steps N] [--rounds R]``.

The book's small convnet at 150 px, batch 32, on the offline cats-vs-dogs photos, trained with:

* ``convlab``: the task's pipeline (``Folder`` tf.data split, cached and shuffled, the book's augmentation
  as ``runner.augmentation.AffineAugmentation``: one composed warp per image, in ``tf.data``);
* ``four_layer_chain``: the same with the augmentation convlab had before (RandomFlip, RandomRotation,
  RandomTranslation, RandomShear, RandomZoom: four resamplings per image);
* ``book``: the book's ``ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2,
  shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")`` +
  ``flow_from_directory`` (Keras 3 still ships it as ``keras.src.legacy.preprocessing.image``), fed to
  ``fit`` as Keras 3 does (a generator in a prefetching tf.data pipeline);
* ``convlab_no_augmentation``: the task's pipeline without augmentation;
* ``bare_keras``: the training images as one NumPy array in memory, ``fit(x, y, batch_size=32)``.

Each is timed in steady state: a callback stamps every batch and the first ``skip`` batches of a fit (the
iterator's start, a shuffle buffer filling) are left out. The pipelines alternate ``rounds`` times in one
process and each keeps its best (the CPUs are shared). The input pipelines alone (batches produced, no
training) are timed the same way. The roofline is a 2048² float32 matmul in TensorFlow, timed between the
rounds; the training step's FLOPs are 3x the forward pass's convolutions and dense layers.
"""

from __future__ import annotations

import argparse
import os
import time

import keras

IMAGE_SIZE, BATCH = 150, 32
MATMUL_SIDE = 2048
#: the book's ImageDataGenerator arguments
BOOK_GENERATOR = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                      zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")


def _book_augmentation() -> dict:
    """The task's default augmentation settings (the structured config's defaults)."""
    import dataclasses

    from runner.schema import AugmentationConfig

    return dataclasses.asdict(AugmentationConfig())


def _four_layer_chain(flip, rotation, zoom, translation, shear, fill_mode):
    """convlab's augmentation before the composed warp, kept here as the baseline it replaced."""
    import keras
    from keras import layers

    return keras.Sequential([layers.RandomFlip(flip), layers.RandomRotation(rotation, fill_mode=fill_mode),
                             layers.RandomTranslation(translation, translation, fill_mode=fill_mode),
                             layers.RandomShear(x_factor=shear, y_factor=0.0, fill_mode=fill_mode),
                             layers.RandomZoom(zoom, fill_mode=fill_mode)])


def pipelines(dataset) -> dict:
    """Name -> a zero-argument function returning ``fit``'s inputs (positional args, keyword args)."""
    import numpy as np
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from runner import training

    settings = _book_augmentation()
    train = dataset.split("train").repeat()
    convlab = training.augmented(train, training.augmentation_layer(**settings))
    chain = training.augmented(train, _four_layer_chain(**settings))
    book = ImageDataGenerator(**BOOK_GENERATOR).flow_from_directory(
        str(dataset.root / "train"), target_size=(IMAGE_SIZE, IMAGE_SIZE), batch_size=BATCH, class_mode="binary")
    images, labels = (np.concatenate(parts) for parts in zip(*dataset.split("train").as_numpy_iterator()))
    return {"convlab": lambda: ((convlab,), {}),
            "four_layer_chain": lambda: ((chain,), {}),
            "book": lambda: ((book,), {}),
            "convlab_no_augmentation": lambda: ((train,), {}),
            "bare_keras": lambda: ((images, labels.astype("float32")), {"batch_size": BATCH, "shuffle": True})}


class BatchClock(keras.callbacks.Callback):
    """The time of every finished training batch."""

    def on_train_begin(self, logs=None):
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def images_per_second(stamps: list[float], skip: int) -> float:
    """Steady-state speed from batch end times, leaving out the first ``skip`` batches."""
    return (len(stamps) - 1 - skip) * BATCH / (stamps[-1] - stamps[skip])


def _input_alone(source, steps: int, skip: int) -> float:
    """Images/s a pipeline produces with nothing consuming them but a copy to NumPy."""
    import numpy as np

    iterator = iter(source)
    stamps = []
    for _ in range(steps):
        np.asarray(next(iterator)[0])
        stamps.append(time.perf_counter())
    return images_per_second(stamps, skip)


def _matmul_gflops(repeats: int = 3) -> float:
    import tensorflow as tf

    a = tf.random.normal((MATMUL_SIDE, MATMUL_SIDE))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    matmul().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE**3 / best / 1e9


def training_flops_per_image(network) -> float:
    """3x the forward FLOPs of the convolutions and dense layers (forward + two backward products)."""
    import numpy as np

    forward = 0
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            forward += 2 * height * width * out_channels * np.prod(layer.kernel.shape[:-1])
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * np.prod(layer.kernel.shape)
    return 3.0 * forward


def bench(steps: int = 30, rounds: int = 2, skip: int = 5, only: list[str] | None = None) -> dict:
    from runner.data.cats_vs_dogs import CatsVsDogs
    from runner.models.small_convnet import SmallConvnet

    dataset = CatsVsDogs(image_size=IMAGE_SIZE, batch_size=BATCH)
    feeds = pipelines(dataset)
    feeds = {name: feed for name, feed in feeds.items() if not only or name in only}
    results: dict = {"steps": steps, "rounds": rounds, "skip": skip, "load_average_before": os.getloadavg()}
    models = {}
    for name in feeds:  # one model each, traced once before the timed rounds
        models[name] = SmallConvnet().build((IMAGE_SIZE, IMAGE_SIZE, 3), 2)
        models[name].compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
        args, kwargs = feeds[name]()
        models[name].fit(*args, **kwargs, epochs=1, steps_per_epoch=2, verbose=0)
    speeds = {name: 0.0 for name in feeds}
    inputs = {name: 0.0 for name in feeds if name != "bare_keras"}
    roofline = 0.0
    for round_ in range(rounds):
        for name, feed in feeds.items():
            clock = BatchClock()
            args, kwargs = feed()
            models[name].fit(*args, **kwargs, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
            speed = images_per_second(clock.stamps, skip)
            speeds[name] = max(speeds[name], speed)
            print(f"  round {round_ + 1}: {name} trains {speed:.1f} img/s (load {os.getloadavg()[0]:.1f})", flush=True)
        for name in inputs:
            speed = _input_alone(feeds[name]()[0][0], steps, skip)
            inputs[name] = max(inputs[name], speed)
            print(f"  round {round_ + 1}: {name} input alone {speed:.1f} img/s", flush=True)
        roofline = max(roofline, _matmul_gflops())
    flops = training_flops_per_image(next(iter(models.values())))
    results.update(images_per_s=speeds, input_alone_images_per_s=inputs, matmul_gflops=roofline,
                   training_gflop_per_image=flops / 1e9,
                   roofline_fraction={name: speed * flops / 1e9 / roofline for name, speed in speeds.items()},
                   load_average_after=os.getloadavg())
    ratio = lambda a, b: speeds[a] / speeds[b] if a in speeds and b in speeds else None  # noqa: E731
    results["ratios"] = {"convlab / book": ratio("convlab", "book"),
                         "convlab / four_layer_chain": ratio("convlab", "four_layer_chain"),
                         "convlab / convlab_no_augmentation": ratio("convlab", "convlab_no_augmentation"),
                         "convlab_no_augmentation / bare_keras": ratio("convlab_no_augmentation", "bare_keras")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training batches per timed fit (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of all pipelines (default 2)")
    parser.add_argument("--skip", type=int, default=5, help="first batches of a fit left out (default 5)")
    parser.add_argument("--only", nargs="*", help="time only these pipelines")
    arguments = parser.parse_args()
    results = bench(arguments.steps, arguments.rounds, arguments.skip, arguments.only)
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    print(f"{'pipeline':<26}{'train img/s':>12}{'input alone img/s':>19}{'roofline':>10}")
    for name, speed in results["images_per_s"].items():
        alone = results["input_alone_images_per_s"].get(name)
        alone = "-" if alone is None else f"{alone:.1f}"
        print(f"{name:<26}{speed:>12.1f}{alone:>19}"
              f"{results['roofline_fraction'][name]:>10.1%}")
    print(f"matmul {results['matmul_gflops']:.1f} GFLOP/s; training step "
          f"{results['training_gflop_per_image']:.2f} GFLOP per image")
    for name, value in results["ratios"].items():
        if value is not None:
            print(f"{name}: {value:.2f}x")


if __name__ == "__main__":
    main()
