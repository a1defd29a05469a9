"""Task `train`: fit a convnet from scratch (book 5.1-5.2) and log curves, test metrics and the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import mlflow

from runner import plots, terminal, training
from runner.data.base import ImageDataset
from runner.models.base import ModelSpec
from runner.probes import probe_callbacks
from runner.tracking import final_metrics, load_checkpoint, log_checkpoint, log_keras_model, wait_for_async_metrics


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
    probes: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    resumed = load_checkpoint() if checkpoint else None
    if resumed:
        network, last_epoch = resumed
        print(f"[convlab] resuming from the checkpoint of epoch {last_epoch + 1}")
    else:
        network, last_epoch = model.build(dataset.input_shape, dataset.num_classes), -1
        network.compile(optimizer=training.optimizer(optimizer, learning_rate),
                        loss=training.loss_for(loss, network), metrics=["accuracy"])
    network.summary()  # the epoch-metrics callback logs it as model_summary.txt

    train = dataset.split("train")
    if steps_per_epoch:  # like the book's looping generator: an epoch is steps_per_epoch batches, not one pass
        train = train.repeat()
    if augment:
        augmenter = training.augmentation_layer(**augmentation)
        mlflow.log_figure(plots.augmentation_grid(train, augmenter, augmentation_samples), "plots/augmentation.png")
        train = training.augmented(train, augmenter)

    network.fit(
        train,
        validation_data=dataset.split("validation"),
        epochs=epochs,
        initial_epoch=last_epoch + 1,
        steps_per_epoch=steps_per_epoch,
        callbacks=[training.epoch_metrics_callback(), *([CheckpointEveryEpoch()] if checkpoint else []),
                   *(probe_callbacks(network, dataset, probes) if probes else [])],
        verbose=terminal.fit_verbosity(),  # Keras' bar at a terminal, one line per epoch in a log
    )
    training.log_curves(_logged_history(["accuracy", "val_accuracy", "loss", "val_loss"]))  # resumed epochs too
    training.log_test_metrics(network, dataset.split("test"))
    log_keras_model(network, dataset.class_names, dataset.split("test"), with_optimizer=checkpoint)  # slots: to train on from there
    return final_metrics()


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Log the model after every epoch, so a killed run restarted with resume=true continues there."""

    def on_epoch_end(self, epoch, logs=None):
        log_checkpoint(self.model, epoch)


def _logged_history(metrics: list[str]) -> dict[str, list[float]]:
    """Per-epoch values of ``metrics`` as the active run recorded them, in step order."""
    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    wait_for_async_metrics()  # the epochs are logged asynchronously
    return {metric: [point.value for point in sorted(client.get_metric_history(run_id, metric), key=lambda p: p.step)]
            for metric in metrics}
