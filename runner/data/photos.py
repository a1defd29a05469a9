"""Single photos for the visualization tasks (not an ImageDataset: no splits, no labels).

The photos are scikit-image's bundled samples (inside its wheel, so they work offline) and/or your own
files: ``paths`` lists files, ``folder`` adds every image file in a folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runner.errors import ConvlabError

# skimage.data samples that ship in the wheel; others are downloaded on first use and fail offline.
BUNDLED = ("chelsea", "coffee", "astronaut", "rocket")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

Photo = tuple[str, np.ndarray]


class Photos:
    name = "photos"

    def __init__(self, names: Sequence[str] = ("chelsea",), paths: Sequence[str] = (), folder: str | None = None):
        unknown = [name for name in names if name not in BUNDLED]
        if unknown:
            raise ConvlabError(f"unknown photo name(s) {', '.join(unknown)}; "
                               f"the bundled photos are {', '.join(BUNDLED)}",
                               fix="pick from those names, or give your own files with dataset.paths or dataset.folder")
        files = [Path(path).expanduser() for path in paths]
        if folder:
            files += _folder_images(Path(folder).expanduser())
        if not names and not files:
            raise ConvlabError("no photos selected", fix=f"set dataset.names (from {', '.join(BUNDLED)}), "
                               "dataset.paths or dataset.folder")
        self._files = [f"skimage.data.{name}" for name in names] + [str(path.resolve()) for path in files]
        photos = [(name, _bundled(name)) for name in names] + [(path.stem, read_rgb(path)) for path in files]
        self._photos = _unique_names(photos)

    def images(self) -> list[Photo]:
        """(name, uint8 HxWx3 RGB image) for each photo, in the order given: names, paths, folder."""
        return list(self._photos)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for name, image in self._photos:
            digest.update(f"{name}\0{image.shape}\n".encode())
            digest.update(image.tobytes())
        return digest.hexdigest()

    def source(self) -> dict[str, list[str]]:
        """The photo files, scikit-image's bundled samples as ``skimage.data.<name>``."""
        return {"files": list(self._files)}


def read_rgb(path: Path) -> np.ndarray:
    """A user's image file as uint8 RGB (gray and alpha converted, EXIF orientation applied)."""
    import cv2

    if not path.is_file():
        raise ConvlabError(f"photo {path} does not exist", fix="correct the path in dataset.paths")
    # imdecode from bytes rather than imread: imread fails on non-ASCII paths on some platforms
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ConvlabError(f"photo {path} cannot be read as an image",
                           fix=f"use a {'/'.join(sorted(s[1:] for s in IMAGE_SUFFIXES))} file, or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _bundled(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()  # all of BUNDLED are uint8 RGB


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConvlabError(f"photo folder {folder} does not exist", fix="correct dataset.folder")
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConvlabError(f"photo folder {folder} holds no {', '.join(sorted(IMAGE_SUFFIXES))} files",
                           fix="put images into it, or correct dataset.folder")
    return files


def _unique_names(photos: list[Photo]) -> list[Photo]:
    """Suffix repeated names (two files called cat.jpg in different folders -> cat, cat_2)."""
    used: set[str] = set()
    unique = []
    for name, image in photos:
        candidate, count = name, 1
        while candidate in used:
            count += 1
            candidate = f"{name}_{count}"
        used.add(candidate)
        unique.append((candidate, image))
    return unique
