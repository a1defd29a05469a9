"""Single photos for the visualization tasks (not an ImageDataset: no splits, no labels).

The photos are scikit-image's bundled samples (inside its wheel, so they work offline) and/or your own
files: ``paths`` lists files, ``folder`` adds every image file in a folder.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runner.data.images import ImageCheck, check_image, report_bad_files
from runner.errors import ConvlabError
from runner.schema import PhotoName

log = logging.getLogger(__name__)

BUNDLED = tuple(PhotoName)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

Photo = tuple[str, np.ndarray]


class Photos:
    name = "photos"

    def __init__(self, names: Sequence[str] = ("chelsea",), paths: Sequence[str] = (), folder: str | None = None,
                 bad_files: str = "error"):
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
        checks = {path: _checked(path) for path in files}
        #: (file, problem) of each file left out under bad_files=skip (bad_files=error: the first ones fail)
        self.skipped_files = [(path, check.problem) for path, check in checks.items() if check.problem]
        report_bad_files(self.skipped_files, bad_files)
        photos = [(str(name), _bundled(name)) for name in names]
        photos += [(path.stem, _decode(path, check)) for path, check in checks.items() if not check.problem]
        if not photos:
            raise ConvlabError(f"none of the {len(files)} photo file(s) can be loaded",
                               fix="replace them with JPEG/PNG/BMP/WebP images")
        loaded = [path for path, check in checks.items() if not check.problem]
        self._files = [f"skimage.data.{name}" for name in names] + [str(path.resolve()) for path in loaded]
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
    """A user's image file as uint8 RGB (gray converted, alpha composited over white, EXIF orientation
    applied); a file that cannot be used is an error naming it."""
    check = _checked(path)
    report_bad_files([(path, check.problem)] if check.problem else [], "error")
    return _decode(path, check)


def _checked(path: Path) -> ImageCheck:
    """:func:`check_image`, after the mistakes in dataset.paths itself (which no bad_files policy skips)."""
    if path.is_dir():
        raise ConvlabError(f"photo {path} is a directory, not an image file",
                           fix=f"list image files in dataset.paths, or set dataset.folder={path} to take every "
                               "image in it")
    if not path.exists():
        raise ConvlabError(f"photo {path} does not exist", fix="correct the path in dataset.paths")
    return check_image(path)


def _decode(path: Path, check: ImageCheck) -> np.ndarray:
    import cv2

    if check.alpha:
        log.warning("photo %s has an alpha channel: composited over white", path)
        return _over_white(path)
    # imdecode from bytes rather than imread: imread fails on non-ASCII paths on some platforms
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ConvlabError(f"photo {path} cannot be read as an image",
                           fix=f"use a {'/'.join(sorted(s[1:] for s in IMAGE_SUFFIXES))} file, or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _over_white(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        rgba = ImageOps.exif_transpose(image).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


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
