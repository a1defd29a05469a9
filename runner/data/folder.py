"""Any image directory in the book's layout: ``<path>/{train,validation,test}/<class>/<image files>``.

Every file is checked before TensorFlow sees it, so a bad file is reported by name at start-up instead of
failing an epoch halfway through. The checked file list then feeds a tf.data pipeline that loads images
exactly as ``keras.utils.image_dataset_from_directory`` does (decode, bilinear resize to a square), which
lets bad files be left out: Keras' own function only takes a whole directory.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from runner.data.base import SPLITS, ImageDataset
from runner.data.images import check_image, report_bad_files, warn_small
from runner.errors import ConvlabError
from runner.schema import BadFiles, ColorMode

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

COLOR_MODES = {ColorMode.rgb: 3, ColorMode.grayscale: 1}
BAD_FILE_POLICIES = tuple(BadFiles)
# The shuffle buffer holds decoded float32 images on top of the cache; the file list is shuffled once
# beforehand, so a bounded buffer still mixes the classes.
SHUFFLE_BUFFER = 1024

LabelledFiles = list[tuple[Path, int]]


class Folder(ImageDataset):
    name = "folder"

    def __init__(
        self,
        path: str,
        image_size: int = 150,
        batch_size: int = 32,
        color_mode: str = "rgb",
        seed: int = 0,
        limit: int | None = None,
        bad_files: str = "error",
    ):
        _check_options(image_size, batch_size, color_mode, limit, bad_files)
        self.root = Path(path).expanduser()
        self.image_size = (image_size, image_size)
        self.channels = COLOR_MODES[color_mode]
        self.batch_size = batch_size
        self.seed = seed
        #: (file, problem) of each file left out under bad_files=skip
        self.skipped_files: list[tuple[Path, str]] = []
        self.class_names, self.files = _scan(self.root, bad_files, self.image_size, self.skipped_files, limit)
        if limit is not None:
            self.files = {split: _balanced_subset(files, limit) for split, files in self.files.items()}
        # the shuffle buffer can be smaller than the split, so the file order itself must mix the classes
        random.Random(seed).shuffle(self.files["train"])
        self._pipelines: dict[str, tf.data.Dataset] = {}

    def split(self, name: str) -> "tf.data.Dataset":
        if name not in SPLITS:
            raise ConvlabError(f"unknown split {name!r}", fix=f"use one of {', '.join(SPLITS)}")
        if name not in self._pipelines:
            self._pipelines[name] = self._pipeline(self.files[name], shuffle=name == "train")
        return self._pipelines[name]

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        used = sorted(path.relative_to(self.root).as_posix() for files in self.files.values() for path, _ in files)
        for relative in used:
            digest.update(f"{relative}\0{(self.root / relative).stat().st_size}\n".encode())
        return digest.hexdigest()

    def source(self) -> dict[str, str]:
        return {"path": str(self.root.resolve())}

    def _pipeline(self, files: LabelledFiles, shuffle: bool) -> "tf.data.Dataset":
        import tensorflow as tf

        paths = [str(path) for path, _ in files]
        labels = tf.constant([label for _, label in files], dtype=tf.int32)
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        dataset = dataset.map(lambda path, label: (self._load_image(path), label), num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(min(len(files), SHUFFLE_BUFFER), seed=self.seed)
        return dataset.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def _load_image(self, path: "tf.Tensor") -> "tf.Tensor":
        """Keras' image_dataset_from_directory loading: decode (gray <-> RGB as asked), bilinear resize."""
        import tensorflow as tf

        image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels, expand_animations=False)
        image = tf.image.resize(image, self.image_size, method="bilinear")
        image.set_shape((*self.image_size, self.channels))
        return image


def _check_options(image_size: int, batch_size: int, color_mode: str, limit: int | None, bad_files: str) -> None:
    if image_size < 1 or batch_size < 1:
        raise ConvlabError(
            f"image_size={image_size} and batch_size={batch_size} must both be positive",
            fix="set dataset.image_size and dataset.batch_size to positive integers",
        )
    if color_mode not in COLOR_MODES:
        raise ConvlabError(f"unknown color_mode {color_mode!r}", fix=f"use one of {', '.join(COLOR_MODES)}")
    if limit is not None and limit < 1:
        raise ConvlabError(f"limit={limit} leaves no images", fix="set dataset.limit to a positive number or null")
    if bad_files not in BAD_FILE_POLICIES:
        raise ConvlabError(f"unknown bad_files policy {bad_files!r}", fix=f"use one of {', '.join(BAD_FILE_POLICIES)}")


def _scan(root: Path, bad_files: str, image_size: tuple[int, int], skipped: list[tuple[Path, str]],
          limit: int | None = None) -> tuple[list[str], dict[str, LabelledFiles]]:
    """Check the layout and the files; return the class names and the usable (path, label) per split
    (the files left out under bad_files=skip are appended to ``skipped``). With a ``limit``, only the
    first ``limit`` usable files of each class are looked for (in file-name order: all a balanced subset
    of ``limit`` can take), so a small job does not check the whole set."""
    split_dirs = _split_dirs(root)
    classes = {split: _class_names(folder) for split, folder in split_dirs.items()}
    class_names = classes["train"]
    for split in SPLITS[1:]:
        if classes[split] != class_names:
            raise ConvlabError(
                f"the class folders differ between splits: train has {class_names}, {split} has {classes[split]}",
                fix=f"give {split_dirs[split]} the same class subfolders as {split_dirs['train']}",
            )
    if len(class_names) < 2:
        raise ConvlabError(
            f"{root} has {len(class_names)} class folder ({', '.join(class_names)}) in each split: "
            "a classifier needs at least 2",
            fix=f"add a folder per class to each of {', '.join(SPLITS)} (e.g. {root}/train/cats/ and "
                f"{root}/train/dogs/), or point dataset.path at a folder that has them",
        )
    files, bad, sizes, alpha = {}, [], [], []
    for split, folder in split_dirs.items():
        files[split] = []
        for label, class_name in enumerate(class_names):
            good = _check_class_folder(folder / class_name, bad, sizes, alpha, limit)
            files[split] += [(path, label) for path in good]
    report_bad_files(bad, bad_files)
    skipped += bad
    warn_small(sizes, image_size, "dataset.image_size")
    if alpha:
        log.warning("%d image(s) have an alpha channel, which is dropped as Keras' image_dataset_from_directory "
                    "drops it (transparent pixels show the colour stored under them), e.g. %s",
                    len(alpha), ", ".join(str(path) for path in alpha[:3]))
    return class_names, files


def _split_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise ConvlabError(
            f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder",
            fix=f"set dataset.path to a folder holding {'/, '.join(SPLITS)}/ subfolders, one folder per class in each",
        )
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        present = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in root.iterdir()) or ["nothing"]
        raise ConvlabError(
            f"{root} has no {', '.join(missing)} folder; it holds: {', '.join(present)}",
            fix=f"arrange the images as {root}/{{{','.join(SPLITS)}}}/<class>/<image files>",
        )
    return {split: root / split for split in SPLITS}


def _class_names(split_dir: Path) -> list[str]:
    names = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise ConvlabError(
            f"{split_dir} has no class folders",
            fix=f"put the images of each class into their own subfolder, e.g. {split_dir}/cats/, {split_dir}/dogs/",
        )
    return names


def _check_class_folder(class_dir: Path, bad: list[tuple[Path, str]], sizes: list[tuple[Path, tuple[int, int]]],
                        alpha: list[Path], wanted: int | None = None) -> list[Path]:
    """Return the folder's decodable images (sorted; the first ``wanted`` of them, None: all); append
    (file, problem) for the bad files met on the way to ``bad``, the good ones' sizes to ``sizes`` and
    those with an alpha channel to ``alpha``."""
    candidates = _visible_files(class_dir)
    if not candidates:
        raise ConvlabError(f"class folder {class_dir} is empty", fix="add images to it or remove it from every split")
    good = []
    for path in candidates:
        if wanted is not None and len(good) == wanted:
            break
        check = check_image(path)
        if check.problem:
            bad.append((path, check.problem))
            continue
        good.append(path)
        sizes.append((path, check.size))
        if check.alpha:
            alpha.append(path)
    if not good:
        raise ConvlabError(
            f"class folder {class_dir} has no readable images ({len(candidates)} bad files)",
            fix="replace its files with JPEG/PNG/GIF/BMP/WebP images",
        )
    return good


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively, like Keras), leaving out hidden ones such as .DS_Store."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _balanced_subset(files: LabelledFiles, limit: int) -> LabelledFiles:
    """At most ``limit`` files, taken from the classes in turn so a small subset still holds every class."""
    by_label: dict[int, list[Path]] = {}
    for path, label in files:
        by_label.setdefault(label, []).append(path)
    subset: LabelledFiles = []
    for rank in range(max(len(paths) for paths in by_label.values())):
        subset += [(paths[rank], label) for label, paths in sorted(by_label.items()) if rank < len(paths)]
    return subset[:limit]
