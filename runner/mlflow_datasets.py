"""Datasets as MLflow inputs: each split a job reads (or its photos) is logged with ``mlflow.log_input``
when the task first reads it, with the data's content hash as digest, its source and its schema."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import mlflow
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset

#: MLflow's longest dataset digest (MAX_DATASET_DIGEST_SIZE); the full hash is the run's convlab.data_hash tag
DIGEST_LENGTH = 36
#: how the photos of the visualization tasks are used (they are no split)
PHOTOS_CONTEXT = "test"


class _DescribedSource(DatasetSource):
    """A source MLflow shows but never loads: convlab reads and verifies the data itself."""

    def __init__(self, **description: Any):
        self.description = description

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any):
        raise NotImplementedError

    def load(self, **kwargs):
        raise NotImplementedError("convlab loads this data itself (runner.data)")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.description)

    @classmethod
    def from_dict(cls, source_dict: dict[str, Any]):
        return cls(**source_dict)


class NpmPackageSource(_DescribedSource):
    """``{"package": "<name>@<version>", "url": <its tarball on the npm registry>}``."""

    @staticmethod
    def _get_source_type() -> str:
        return "npm"


class PhotoFilesSource(_DescribedSource):
    """``{"files": [...]}``: image files, or scikit-image's bundled samples as ``skimage.data.<name>``."""

    @staticmethod
    def _get_source_type() -> str:
        return "photo_files"


def mlflow_source(source: dict[str, Any]) -> DatasetSource:
    """The MLflow source for a dataset's ``source()`` (see :meth:`runner.data.base.ImageDataset.source`)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if "npm" in source:
        name, _, version = source["npm"].rpartition("@")
        return NpmPackageSource(package=source["npm"],
                                url=f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz")
    if "path" in source:
        with warnings.catch_warnings():  # MLflow registers its local source twice and warns it picks one
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(source["path"])
    if "url" in source:
        return HTTPDatasetSource(source["url"])
    return PhotoFilesSource(files=list(source["files"]))


def split_input(dataset, split: str) -> MetaDataset:
    """One split of an ImageDataset as an MLflow dataset named ``<dataset>-<split>``."""
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    schema = Schema([TensorSpec(np.dtype("float32"), (-1, *dataset.input_shape), "image"),
                     TensorSpec(np.dtype("int32"), (-1,), "label")])
    return MetaDataset(mlflow_source(dataset.source()), name=f"{dataset.name}-{split}",
                       digest=dataset.content_hash()[:DIGEST_LENGTH], schema=schema)


def photos_input(photos) -> MetaDataset:
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    schema = Schema([TensorSpec(np.dtype("uint8"), (-1, -1, -1, 3), "image")])
    return MetaDataset(mlflow_source(photos.source()), name=photos.name,
                       digest=photos.content_hash()[:DIGEST_LENGTH], schema=schema)


def log_inputs_when_read(dataset) -> None:
    """Make ``dataset`` log each split (ImageDataset) or its photos (Photos) as an input of the active run
    the first time the task reads it: a split a task never reads is not its input."""
    if hasattr(dataset, "split"):
        dataset.split = _logging_once(dataset.split, lambda split: (split_input(dataset, split), split))
    elif hasattr(dataset, "images"):
        dataset.images = _logging_once(dataset.images, lambda: (photos_input(dataset), PHOTOS_CONTEXT))


def _logging_once(read, describe):
    logged: set[tuple] = set()

    @functools.wraps(read)
    def read_and_log(*args):
        if args not in logged and mlflow.active_run() is not None:
            mlflow_dataset, context = describe(*args)
            mlflow.log_input(mlflow_dataset, context=context)
            logged.add(args)
        return read(*args)

    return read_and_log
