"""A test task with a known optimum, for the sweep tests: ``score = 1 - (x - 0.3)^2 - 0.1 (y - 0.5)^2`` (best
at x=0.3, y=0.5: x matters, y barely), logged as a metric with a small figure (``plots/score.png``, same name in
every run); ``x > fail_above`` fails the job. Composed with ``hydra.searchpath=[file://tests/conf] task=quadratic``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from runner.errors import ConvlabError  # noqa: E402
from runner.tracking import final_metrics  # noqa: E402

OPTIMUM = 0.3
OPTIMUM_Y = 0.5
WEIGHT_Y = 0.1  # y's whole range moves the score by at most 0.025, x's by 0.49: x is the parameter that matters


def score(x: float, y: float = OPTIMUM_Y) -> float:
    return 1.0 - (x - OPTIMUM) ** 2 - WEIGHT_Y * (y - OPTIMUM_Y) ** 2


def run(*, model, dataset, x: float, y: float = OPTIMUM_Y, fail_above: float | None = None) -> dict[str, float]:
    if fail_above is not None and x > fail_above:
        raise ConvlabError(f"task.x={x} is above task.fail_above={fail_above}", fix="a test's planned failure")
    mlflow.log_metrics({"score": score(x, y), "distance": abs(x - OPTIMUM)})
    figure, axes = plt.subplots(figsize=(2, 2))
    axes.bar([0], [score(x, y)])
    mlflow.log_figure(figure, "plots/score.png")
    plt.close(figure)
    return final_metrics()
