"""Training pieces shared by the tasks that fit a model (``train``, ``finetune``): optimizer and loss by
name, the book's augmentation as a Keras layer, per-epoch MLflow metrics over several phases, curves and
parameter counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlflow

from runner import plots, tracking
from runner.errors import ConvlabError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

CURVES = ("accuracy", "loss")


def optimizer(name: str, learning_rate: float) -> "keras.optimizers.Optimizer":
    """A Keras optimizer by name (``rmsprop``, ``adam``, ...) with ``learning_rate``."""
    import keras

    try:
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})
    except ValueError as error:
        raise ConvlabError(f"unknown optimizer {name!r}",
                           fix="use a keras.optimizers name: rmsprop, adam, sgd, adamw, ...") from error


def loss_for(name: str, network: "keras.Model") -> str:
    """``auto``: binary cross-entropy for one sigmoid output, else sparse categorical cross-entropy."""
    if name != "auto":
        return name
    from runner.explain.targets import is_binary

    return "binary_crossentropy" if is_binary(network.output_shape[-1]) else "sparse_categorical_crossentropy"


def augmentation_layer(flip: str | None, rotation: float, zoom: float, translation: float, shear: float,
                       fill_mode: str = "nearest", seed: int | None = None) -> "keras.layers.Layer":
    """The book's ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, shear_range=0.2,
    zoom_range=0.2, horizontal_flip=True, fill_mode="nearest") as one Keras preprocessing layer that warps
    each image once, in the Keras layers' units: ``rotation`` a fraction of a full turn, ``shear`` the
    tangent of the shear angle (the book's 0.2 is in degrees: tan 0.2° = 0.0035, not the Keras factor 0.2,
    which shears 11°). See ``runner.augmentation``."""
    from runner.augmentation import AffineAugmentation

    return AffineAugmentation(rotation=rotation, translation=translation, zoom=zoom, shear=shear, flip=flip,
                              fill_mode=fill_mode, seed=seed, name="augmentation")


def augmented(train: "tf.data.Dataset", augmenter) -> "tf.data.Dataset":
    """``train`` with ``augmenter`` applied to every batch (in the input pipeline, not in the model)."""
    import tensorflow as tf

    return train.map(lambda images, labels: (augmenter(images, training=True), labels),
                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def parameter_counts(network: "keras.Model") -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts, as ``model.summary()`` reports them."""
    import numpy as np

    def count(variables) -> int:
        return int(sum(np.prod(variable.shape) for variable in variables))

    return count(network.trainable_weights), count(network.non_trainable_weights)


def log_parameter_counts(network: "keras.Model", phase: str) -> tuple[int, int]:
    """Log ``<phase>_trainable_params`` and ``<phase>_non_trainable_params`` as metrics of the active run."""
    trainable, frozen = parameter_counts(network)
    mlflow.log_metrics({f"{phase}_trainable_params": trainable, f"{phase}_non_trainable_params": frozen})
    print(f"[convlab] {phase}: {trainable:,} trainable, {frozen:,} non-trainable parameters")
    return trainable, frozen


def epoch_metrics_callback(first_epoch: int = 0, phase: str | None = None) -> "keras.callbacks.Callback":
    """MLflow's Keras callback with the epochs of a later training phase numbered on from ``first_epoch``,
    so the phases of one run make one curve per metric.

    The first phase (``first_epoch=0``) logs the optimizer params and ``model_summary.txt`` as MLflow's
    callback does; a later phase logs its summary as ``model_summary_<phase>.txt`` and no params (MLflow
    refuses to change a logged param).
    """
    from mlflow.keras import MlflowCallback

    class PhaseCallback(MlflowCallback):
        def on_train_begin(self, logs=None):
            tracking.async_logging_for_training(True)
            if first_epoch == 0:
                return super().on_train_begin(logs)
            lines: list[str] = []
            self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
            mlflow.log_text("\n".join(lines), f"model_summary_{phase or 'phase'}.txt")

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                tracking.log_metrics_async(logs, step=first_epoch + epoch, model_id=self.model_id)

        def on_test_end(self, logs=None):
            if logs is not None:
                tracking.log_metrics_async({f"validation_{k}": v for k, v in logs.items()}, model_id=self.model_id)

        def on_train_end(self, logs=None):
            tracking.wait_for_async_metrics()  # written before MLflow's worker is told to wait on its stop event
            tracking.async_logging_for_training(False)

    return PhaseCallback(log_every_epoch=True)


def log_curves(history: dict[str, list[float]], phase_starts: list[int] | None = None) -> None:
    """``plots/accuracy.png`` and ``plots/loss.png`` (training vs validation per epoch), as ``train`` logs
    them; ``phase_starts``: epochs (0-based) where a later phase began, drawn as dashed lines."""
    for metric in CURVES:
        if metric not in history:
            continue
        figure = plots.history_curve(history, metric)
        for start in phase_starts or []:
            figure.axes[0].axvline(start + 0.5, color="gray", linestyle="--", linewidth=1)
        mlflow.log_figure(figure, f"plots/{metric}.png")
    if history.get("val_accuracy"):  # the run's best epoch, for sweeps whose last epoch overfits
        mlflow.log_metric("best_val_accuracy", max(history["val_accuracy"]))


def log_test_metrics(network: "keras.Model", test) -> tuple[float, float]:
    """Evaluate on the test data and log ``test_loss`` / ``test_accuracy`` as ``train`` does.

    ``test`` is a tf.data split or an ``(x, y)`` pair of arrays. Logged asynchronously like the epochs (the
    task's result waits for them): after training, this point is also what moves MLflow's worker onto its
    stop event at once (see ``tracking.async_logging_for_training``), so the run's end does not wait.
    """
    if isinstance(test, tuple):
        test_loss, test_accuracy = network.evaluate(*test, verbose=0)
    else:
        test_loss, test_accuracy = network.evaluate(test, verbose=0)
    tracking.log_metrics_async({"test_loss": test_loss, "test_accuracy": test_accuracy})
    print(f"[convlab] test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}")
    return test_loss, test_accuracy


def merge_histories(*histories: dict[str, list[float]]) -> dict[str, list[float]]:
    """Concatenate the per-epoch histories of consecutive training phases."""
    merged: dict[str, list[float]] = {}
    for history in histories:
        for key, values in history.items():
            merged.setdefault(key, []).extend(float(value) for value in values)
    return merged
