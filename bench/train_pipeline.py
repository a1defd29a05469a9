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

Each is timed in steady state: a callback stamps every batch (wall clock and the process's CPU time, all
threads) and the first ``skip`` batches of a fit (the iterator's start, a shuffle buffer filling) are left
out. The pipelines alternate ``rounds`` times in one process. On shared CPUs the wall speed swings with the
other jobs' load, so the ratios are taken within each round (pipelines timed back to back) and reported as
the median and min-max over the rounds, beside the CPU milliseconds per image (much less sensitive to the
load: a thread that waits for a core uses none). The input pipelines alone (batches produced, no
training) are timed the same way. The roofline is a 2048² float32 matmul in TensorFlow, timed between the
rounds; the training step's FLOPs are 3x the forward pass's convolutions and dense layers.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    """The wall and CPU time of every finished training batch."""

    def on_train_begin(self, logs=None):
        self.stamps, self.cpu_stamps = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())


def images_per_second(stamps: list[float], skip: int) -> float:
    """Steady-state speed from batch end times, leaving out the first ``skip`` batches."""
    return (len(stamps) - 1 - skip) * BATCH / (stamps[-1] - stamps[skip])


def cpu_ms_per_image(cpu_stamps: list[float], skip: int) -> float:
    """Steady-state CPU milliseconds per image (all the process's threads) from batch-end CPU times."""
    return 1000 / images_per_second(cpu_stamps, skip)


def _input_alone(source, steps: int, skip: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) a pipeline produces with nothing consuming them but a copy to NumPy."""
    import numpy as np

    iterator = iter(source)
    stamps, cpu_stamps = [], []
    for _ in range(steps):
        np.asarray(next(iterator)[0])
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
    return images_per_second(stamps, skip), cpu_ms_per_image(cpu_stamps, skip)


def spread(values: list[float]) -> dict:
    """Median, min and max of one figure over the rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


#: the ratios the issue's targets are about (numerator, denominator), each taken within a round
RATIOS = (("convlab", "book"), ("convlab", "four_layer_chain"), ("convlab", "convlab_no_augmentation"),
          ("convlab_no_augmentation", "bare_keras"))


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


def bench(steps: int = 30, rounds: int = 5, skip: int = 5, only: list[str] | None = None) -> dict:
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
    speeds: dict[str, list[float]] = {name: [] for name in feeds}
    cpu: dict[str, list[float]] = {name: [] for name in feeds}
    inputs = {name: [] for name in feeds if name != "bare_keras"}
    inputs_cpu = {name: [] for name in inputs}
    rooflines = []
    for round_ in range(rounds):
        for name, feed in feeds.items():
            clock = BatchClock()
            args, kwargs = feed()
            models[name].fit(*args, **kwargs, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
            speeds[name].append(images_per_second(clock.stamps, skip))
            cpu[name].append(cpu_ms_per_image(clock.cpu_stamps, skip))
            print(f"  round {round_ + 1}: {name} trains {speeds[name][-1]:.1f} img/s, "
                  f"{cpu[name][-1]:.0f} CPU ms/img (load {os.getloadavg()[0]:.1f})", flush=True)
        for name in inputs:
            speed, cpu_ms = _input_alone(feeds[name]()[0][0], steps, skip)
            inputs[name].append(speed)
            inputs_cpu[name].append(cpu_ms)
            print(f"  round {round_ + 1}: {name} input alone {speed:.1f} img/s, {cpu_ms:.2f} CPU ms/img", flush=True)
        rooflines.append(_matmul_gflops())
    flops = training_flops_per_image(next(iter(models.values())))
    roofline = max(rooflines)
    results.update(images_per_s={name: spread(values) for name, values in speeds.items()},
                   cpu_ms_per_image={name: spread(values) for name, values in cpu.items()},
                   input_alone_images_per_s={name: spread(values) for name, values in inputs.items()},
                   input_alone_cpu_ms_per_image={name: spread(values) for name, values in inputs_cpu.items()},
                   matmul_gflops=roofline, training_gflop_per_image=flops / 1e9,
                   roofline_fraction={name: max(values) * flops / 1e9 / roofline for name, values in speeds.items()},
                   load_average_after=os.getloadavg())
    results["ratios"] = {f"{a} / {b}": spread([x / y for x, y in zip(speeds[a], speeds[b])])
                         for a, b in RATIOS if a in speeds and b in speeds}
    results["cpu_ratios"] = {f"{a} / {b}": spread([y / x for x, y in zip(cpu[a], cpu[b])])
                             for a, b in RATIOS if a in cpu and b in cpu}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training batches per timed fit (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of all pipelines (default 5)")
    parser.add_argument("--skip", type=int, default=5, help="first batches of a fit left out (default 5)")
    parser.add_argument("--only", nargs="*", help="time only these pipelines")
    arguments = parser.parse_args()
    report(bench(arguments.steps, arguments.rounds, arguments.skip, arguments.only))


def report(results: dict) -> None:
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    print(f"{results['rounds']} rounds; median (min-max) over the rounds")
    show = lambda figure, digits=1: (f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-"  # noqa: E731
                                     f"{figure['max']:.{digits}f})")
    print(f"{'pipeline':<26}{'train img/s':>20}{'train CPU ms/img':>22}{'input alone img/s':>24}"
          f"{'input CPU ms/img':>22}{'roofline (best)':>17}")
    for name, speed in results["images_per_s"].items():
        alone = results["input_alone_images_per_s"].get(name)
        alone_cpu = results["input_alone_cpu_ms_per_image"].get(name)
        print(f"{name:<26}{show(speed):>20}{show(results['cpu_ms_per_image'][name], 0):>22}"
              f"{'-' if alone is None else show(alone):>24}{'-' if alone_cpu is None else show(alone_cpu, 2):>22}"
              f"{results['roofline_fraction'][name]:>17.1%}")
    print(f"matmul {results['matmul_gflops']:.1f} GFLOP/s (best of the rounds); training step "
          f"{results['training_gflop_per_image']:.2f} GFLOP per image")
    for name, value in results["ratios"].items():
        print(f"{name}: {show(value, 2)}x wall, {show(results['cpu_ratios'][name], 2)}x by CPU time")


if __name__ == "__main__":
    main()
