"""Sweeps that search and summarize: the objective a job returns to Hydra's sweeper (``optimized_metric``),
and the story a sweep's parent run tells when it ends."""

from __future__ import annotations

import math
from collections.abc import Mapping

from runner.errors import ConvlabError


class UnknownObjective(ConvlabError):
    """``optimized_metric`` names no metric of the task: every job of the sweep would fail the same way."""


def objective(metrics: Mapping[str, float] | None, name: str | None) -> float | None:
    """The value a job returns to the sweeper: ``metrics[name]`` (None when no ``optimized_metric`` is set)."""
    if name is None:
        return None
    metrics = metrics or {}
    if name not in metrics:
        available = ", ".join(sorted(metrics)) or "(none: this task logs no metrics)"
        raise UnknownObjective(f"optimized_metric={name} is not a metric of this task; its metrics: {available}",
                               fix="set optimized_metric to one of those names")
    value = float(metrics[name])
    return value if math.isfinite(value) else None  # NaN / inf: the sweeper marks the trial failed
