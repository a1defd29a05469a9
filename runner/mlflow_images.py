"""Pictures the MLflow UI can compare: besides a file among the run's artifacts, a picture with a natural
step is logged as one step of an image timeline, ``mlflow.log_image(image, key=..., step=...)``. The run
page's Model metrics tab shows each key as an image chart with a step slider; the runs table's chart
view draws them for the runs it shows.

The keys convlab logs (docs/mlflow.md): ``explain/<image>`` and ``gradcam/<image>`` (step: the image's
index), ``filters/<layer>`` (step 0), ``probe/<image>`` (step: the epoch, ``task.probes``).
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

import mlflow

if TYPE_CHECKING:
    import numpy as np

#: what MLflow refuses in an image key (it allows alphanumerics, ``_ - . /`` and spaces)
REFUSED_IN_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
#: the folder of the run's artifacts where MLflow stores timeline images
TIMELINE_FOLDER = "images"


def timeline_key(*parts: str) -> str:
    """``parts`` joined by ``/``, each character MLflow refuses in a key replaced by ``_`` (image names
    come from file names)."""
    return "/".join(REFUSED_IN_KEY.sub("_", str(part)) for part in parts)


def log_picture(image: "np.ndarray", artifact_file: str | None = None, *, key: str | None = None,
                step: int = 0) -> None:
    """Log ``image`` (uint8 HxW or HxWxC) as the artifact ``artifact_file`` and as step ``step`` of the
    timeline ``key`` (made valid with :func:`timeline_key`); either may be left out."""
    if artifact_file is not None:
        mlflow.log_image(image, artifact_file=artifact_file)
    if key is not None:
        mlflow.log_image(image, key=timeline_key(key), step=int(step))


def image_timelines(run_id: str, client: mlflow.MlflowClient | None = None) -> dict[str, list[int]]:
    """``{key: sorted steps}`` of the timeline images a run holds, read back from the artifact names MLflow
    gives them: ``images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>.png`` (``%`` or ``#`` for ``+``
    in earlier MLflow versions)."""
    client = client or mlflow.MlflowClient()
    timelines: dict[str, list[int]] = {}
    for item in client.list_artifacts(run_id, TIMELINE_FOLDER):
        name = posixpath.basename(item.path)
        if not name.endswith(".png"):  # the compressed copy (.webp) the UI shows in its charts
            continue
        key, marker, step, *_ = re.split(r"[+%#]", name[: -len(".png")])
        if marker == "step":
            timelines.setdefault(key.replace("~", "/"), []).append(int(step))
    return {key: sorted(steps) for key, steps in sorted(timelines.items())}
