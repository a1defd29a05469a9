"""Task `train`: fit a convnet from scratch (book 5.1-5.2) and log curves, test metrics and the model."""

from __future__ import annotations

from typing import Any

import keras
import mlflow

from runner import plots
from runner.data.base import ImageDataset
from runner.errors import ConvlabError
from runner.models.base import ModelSpec
from runner.tracking import load_checkpoint, log_checkpoint, log_keras_model


def run(
    *,
    model: ModelSpec,
    dataset: ImageDataset,
    epochs: int,
    optimizer: str,
    learning_rate: float,
    loss: str,
    augment: bool,
    augmentation: dict[str, Any],
    steps_per_epoch: int | None,
    augmentation_samples: int,
    checkpoint: bool = False,
) -> None:
    from mlflow.keras import MlflowCallback

    resumed = load_checkpoint() if checkpoint else None
    if resumed:
        network, last_epoch = resumed
        print(f"[convlab] resuming from the checkpoint of epoch {last_epoch + 1}")
    else:
        network, last_epoch = model.build(dataset.input_shape, dataset.num_classes), -1
        network.compile(
            optimizer=_optimizer(optimizer, learning_rate),
            loss=_loss(loss, network),
            metrics=["accuracy"],
        )
    network.summary()  # MlflowCallback logs it as model_summary.txt

    train = dataset.split("train")
    if augment:
        augmenter = augmentation_layers(**augmentation)
        mlflow.log_figure(plots.augmentation_grid(train, augmenter, augmentation_samples), "plots/augmentation.png")
        train = _augmented(train, augmenter)

    network.fit(
        train,
        validation_data=dataset.split("validation"),
        epochs=epochs,
        initial_epoch=last_epoch + 1,
        steps_per_epoch=steps_per_epoch,
        callbacks=[MlflowCallback(log_every_epoch=True)] + ([CheckpointEveryEpoch()] if checkpoint else []),
        verbose=2,
    )
    curves = _logged_history(["accuracy", "val_accuracy", "loss", "val_loss"])  # all epochs, resumed ones too
    mlflow.log_figure(plots.history_curve(curves, "accuracy"), "plots/accuracy.png")
    mlflow.log_figure(plots.history_curve(curves, "loss"), "plots/loss.png")

    test_loss, test_accuracy = network.evaluate(dataset.split("test"), verbose=0)
    mlflow.log_metrics({"test_loss": test_loss, "test_accuracy": test_accuracy})
    print(f"[convlab] test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}")
    log_keras_model(network, dataset.class_names)
    keras.backend.clear_session()


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Log the model after every epoch, so a killed run restarted with resume=true continues there."""

    def on_epoch_end(self, epoch, logs=None):
        log_checkpoint(self.model, epoch)


def augmentation_layers(flip: str | None, rotation: float, zoom: float, translation: float, shear: float):
    """The book's ImageDataGenerator(rotation_range=40, width/height_shift=0.2, shear=0.2, zoom=0.2,
    horizontal_flip=True), as Keras preprocessing layers; a factor of 0 leaves that layer out."""
    from keras import layers

    stack = []
    if flip:
        stack.append(layers.RandomFlip(flip))
    if rotation:
        stack.append(layers.RandomRotation(rotation))
    if translation:
        stack.append(layers.RandomTranslation(translation, translation))
    if shear:
        stack.append(layers.RandomShear(x_factor=shear, y_factor=0.0))
    if zoom:
        stack.append(layers.RandomZoom(zoom))
    return keras.Sequential(stack, name="augmentation")


def _augmented(train, augmenter):
    import tensorflow as tf

    return train.map(lambda images, labels: (augmenter(images, training=True), labels),
                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _logged_history(metrics: list[str]) -> dict[str, list[float]]:
    """Per-epoch values of ``metrics`` as the active run recorded them, in step order."""
    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    mlflow.flush_async_logging()  # MlflowCallback logs asynchronously
    return {metric: [point.value for point in sorted(client.get_metric_history(run_id, metric), key=lambda p: p.step)]
            for metric in metrics}


def _optimizer(name: str, learning_rate: float):
    try:
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})
    except ValueError as error:
        raise ConvlabError(f"unknown optimizer {name!r}",
                           fix="use a keras.optimizers name: rmsprop, adam, sgd, adamw, ...") from error


def _loss(name: str, network) -> str:
    if name != "auto":
        return name
    units = network.output_shape[-1]
    return "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
