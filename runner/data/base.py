"""The contract every dataset loader meets (what ``instantiate(cfg.dataset)`` returns)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

SPLITS = ("train", "validation", "test")


class ImageDataset:
    """A labelled image dataset with train/validation/test splits.

    ``split(name)`` yields batches ``(images, labels)``: images float32 [B, H, W, C] with pixel values in
    [0, 255], labels int32 [B] indexing ``class_names``. The pipeline is cached and prefetched.
    """

    name: str = "dataset"
    class_names: list[str]
    image_size: tuple[int, int]
    channels: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def split(self, name: str) -> "tf.data.Dataset":
        raise NotImplementedError

    def content_hash(self) -> str:
        """A hash of the data as loaded (source archive sha256 or file list + sizes)."""
        raise NotImplementedError

    def source(self) -> dict[str, str]:
        """Where the data come from: ``{"npm": "<package>@<version>"}``, ``{"path": ...}`` or ``{"url": ...}``."""
        raise NotImplementedError
