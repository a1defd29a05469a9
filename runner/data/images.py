"""One policy for the image files a user gives, whichever dataset reads them (``dataset=folder``,
``dataset=photos``): what makes a file unusable, and what happens to it (``bad_files=error``: the job
fails naming it; ``bad_files=skip``: it is left out, with a warning and a list in the run).

Images far smaller than what they are resized to, and images with an alpha channel, are used, with a
warning that says what is done to them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConvlabError

log = logging.getLogger(__name__)

# PIL's names for the formats tf.io.decode_image and OpenCV read (MPO: the multi-picture JPEG of cameras).
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
JPEG_FORMATS = {"JPEG", "MPO"}
#: an image is "far smaller" than its target when a side is below 1/SMALL_FACTOR of the target's side
SMALL_FACTOR = 4
MAX_NAMED_FILES = 5
#: libjpeg's warnings for damaged data, which every decoder here (PIL, OpenCV, TensorFlow) accepts silently,
#: filling the rest of the picture with gray
LIBJPEG_CORRUPTION = ("Corrupt JPEG data", "Premature end of JPEG file")


@dataclass(frozen=True)
class ImageCheck:
    problem: str | None  # why the file cannot be used as an image; None when it can
    size: tuple[int, int] | None = None  # (height, width)
    alpha: bool = False


def check_image(path: Path) -> ImageCheck:
    """Whether ``path`` decodes as a whole, undamaged image, and its size and alpha channel.

    PIL decodes the whole file (a JPEG at 1/8 scale, which is cheap) so truncated files are caught; a JPEG
    whose data is damaged mid-file decodes "successfully" everywhere, so libjpeg's own warning decides.
    """
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        return ImageCheck("a directory, not an image file")
    try:
        with Image.open(path) as image:
            if image.format not in DECODABLE_FORMATS:
                return ImageCheck(f"{image.format} images cannot be decoded by TensorFlow")
            size = (image.height, image.width)
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            jpeg = image.format in JPEG_FORMATS
            image.draft("RGB", (1, 1))
            image.load()
    except UnidentifiedImageError:
        return ImageCheck("not an image")
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying corrupt or truncated
        return ImageCheck(f"corrupt image ({error})")
    if jpeg:
        warning = libjpeg_warning(path.read_bytes())
        if warning:
            return ImageCheck(f"corrupt JPEG data ({warning})")
    return ImageCheck(None, size, alpha)


def libjpeg_warning(data: bytes) -> str | None:
    """libjpeg's corrupt-data warning for a JPEG, if it gives one. libjpeg only prints it to stderr, so
    OpenCV decodes (at 1/8 scale) with file descriptor 2 pointed at a temporary file."""
    import cv2
    import numpy as np

    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        printed = sink.read().decode(errors="replace")
    lines = [line.strip() for line in printed.splitlines() if line.startswith(LIBJPEG_CORRUPTION)]
    return lines[0] if lines else None


def report_bad_files(bad: list[tuple[Path, str]], policy: str) -> None:
    """``policy="error"``: raise, naming the files; ``"skip"``: warn (the caller leaves them out)."""
    if not bad:
        return
    named = _named(f"{path}: {problem}" for path, problem in bad)
    if policy == "error":
        raise ConvlabError(
            f"{len(bad)} file(s) cannot be loaded as images: {named}",
            fix="delete or replace them, or set dataset.bad_files=skip to leave them out",
        )
    log.warning("skipped %d file(s) that cannot be loaded as images: %s", len(bad), named)


def warn_small(sizes: list[tuple[Path | str, tuple[int, int]]], target: tuple[int, int], target_name: str) -> None:
    """Warn about images with a side below 1/SMALL_FACTOR of ``target`` (height, width): they are upsampled."""
    small = [(name, size) for name, size in sizes
             if size[0] * SMALL_FACTOR < target[0] or size[1] * SMALL_FACTOR < target[1]]
    if small:
        named = _named(f"{name} ({size[1]}x{size[0]} px)" for name, size in small)
        log.warning("%d image(s) are far smaller than %s (%dx%d px) and are upsampled to it, so they show "
                    "little detail: %s", len(small), target_name, target[1], target[0], named)


def _named(items) -> str:
    items = list(items)
    more = f" (and {len(items) - MAX_NAMED_FILES} more)" if len(items) > MAX_NAMED_FILES else ""
    return "; ".join(items[:MAX_NAMED_FILES]) + more
