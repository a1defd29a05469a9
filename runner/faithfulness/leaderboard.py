"""The leaderboard of a sweep over attribution methods (``experiment=explain_benchmark``), logged in the
sweep's parent run: a table (``leaderboard.json``, ``mlflow.log_table``) of method x metric with the mean
over images and a 95 % bootstrap interval, a bar chart and one figure of every method's overlays side by
side. Read from the finished child runs' ``explain/faithfulness.json``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

METRICS = ("deletion_auc", "insertion_auc", "average_drop", "average_increase", "road_morf", "road_lerf",
           "road_combined")
SHOWN_PHOTOS = 4  # rows of the side-by-side figure: the first photos (a setting may explain 200)
BETTER = {"deletion_auc": "lower", "insertion_auc": "higher", "average_drop": "lower", "average_increase": "higher",
          "road_morf": "lower", "road_lerf": "higher", "road_combined": "higher"}


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval of the mean of ``values``."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def leaderboard_rows(results: dict[str, list[dict]]) -> list[dict]:
    """``{method: per-image dicts}`` to rows (method, metric, better, mean, ci_low, ci_high, images), for the
    metrics every image has (ROAD only when the sweep measured it)."""
    measured = [metric for metric in METRICS if all(metric in image for images in results.values() for image in images)]
    rows = []
    for method, images in results.items():
        for metric in measured:
            values = np.array([image[metric] for image in images], np.float64)
            low, high = bootstrap_interval(values)
            rows.append({"method": method, "metric": metric, "better": BETTER[metric], "mean": float(values.mean()),
                         "ci_low": low, "ci_high": high, "images": len(values)})
    return rows


def log_leaderboard(parent_run_id: str) -> bool:
    """Log the leaderboard of ``parent_run_id``'s finished children that measured faithfulness; False (and
    nothing logged) when none did."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = [child for child in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
        if child.info.status == "FINISHED" and "faithfulness/deletion_auc" in child.data.metrics]
    if not children:
        return False
    with tempfile.TemporaryDirectory() as folder:
        results, overlays = {}, {}
        for child in sorted(children, key=lambda run: run.data.tags.get("explain.method", run.info.run_id)):
            method = child.data.tags.get("explain.method", child.info.run_name)
            saved = mlflow.artifacts.load_dict(f"runs:/{child.info.run_id}/explain/faithfulness.json")
            results[method] = saved["images"]
            overlays[method] = [Path(mlflow.artifacts.download_artifacts(
                run_id=child.info.run_id, artifact_path=f"explain/{image['image']}_overlay.png",
                dst_path=str(Path(folder) / child.info.run_id))) for image in saved["images"][:SHOWN_PHOTOS]]
        rows = leaderboard_rows(results)
        client.log_table(parent_run_id, {key: [row[key] for row in rows] for key in rows[0]}, "leaderboard.json")
        client.log_figure(parent_run_id, bar_chart(rows), "leaderboard.png")
        client.log_figure(parent_run_id, side_by_side(overlays), "leaderboard_maps.png")
    for metric in dict.fromkeys(row["metric"] for row in rows):
        pick = min if BETTER[metric] == "lower" else max
        ranked = [row for row in rows if row["metric"] == metric]
        client.set_tag(parent_run_id, f"leaderboard.best_{metric}", pick(ranked, key=lambda row: row["mean"])["method"])
    print(f"[convlab] leaderboard of {len(results)} methods logged in the sweep parent run {parent_run_id}")
    return True


def bar_chart(rows: list[dict]):
    """One panel per metric: each method's mean with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        ranked = [row for row in rows if row["metric"] == metric]
        means = np.array([row["mean"] for row in ranked])
        errors = np.array([[row["mean"] - row["ci_low"] for row in ranked], [row["ci_high"] - row["mean"] for row in ranked]])
        axis.barh([row["method"] for row in ranked], means, xerr=np.maximum(errors, 0), color="tab:blue", capsize=3)
        axis.set_title(f"{metric} ({BETTER[metric]} is better)", fontsize=9)
        axis.invert_yaxis()
    figure.tight_layout()
    plt.close(figure)
    return figure


def side_by_side(overlays: dict[str, list[Path]]):
    """Rows: the photos; columns: the methods' overlays."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    methods = list(overlays)
    rows = max(len(paths) for paths in overlays.values())
    figure, axes = plt.subplots(rows, len(methods), figsize=(2.2 * len(methods), 2.2 * rows), squeeze=False)
    for column, method in enumerate(methods):
        for row, path in enumerate(overlays[method]):
            axes[row, column].imshow(plt.imread(path))
        axes[0, column].set_title(method, fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    figure.tight_layout()
    plt.close(figure)
    return figure
