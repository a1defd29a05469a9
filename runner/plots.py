"""Matplotlib figures the tasks log with ``mlflow.log_figure``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def history_curve(history: dict[str, list[float]], metric: str):
    """The book's plot: training vs validation ``metric`` per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history[metric]) + 1)
    ax.plot(epochs, history[metric], "bo", label=f"Training {metric}")
    if f"val_{metric}" in history:
        ax.plot(epochs, history[f"val_{metric}"], "b", label=f"Validation {metric}")
    ax.set_title(f"Training and validation {metric}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def augmentation_grid(train, augmenter, samples: int):
    """One training image and ``samples - 1`` augmented versions of it, like the book's figure 5.11."""
    images, _ = next(iter(train.take(1)))
    image = images[:1]
    versions = [image[0].numpy()] + [augmenter(image, training=True)[0].numpy() for _ in range(samples - 1)]
    side = int(np.ceil(np.sqrt(samples)))
    fig, axes = plt.subplots(side, side, figsize=(2 * side, 2 * side))
    for ax in axes.flat:
        ax.axis("off")
    for ax, version in zip(axes.flat, versions):
        ax.imshow(np.clip(version, 0, 255).astype("uint8").squeeze(), cmap="gray" if version.shape[-1] == 1 else None)
    axes.flat[0].set_title("original", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
