"""The recipes side by side on the same filters: ``python -m bench.featurevis_quality <convlab overrides>``.

Runs ``convlab task=filters <overrides> task/recipe=<r>`` for each recipe (book, keras_io, lucid by
default; ``--recipe NAME=EXTRA,OVERRIDES`` replaces the list) against one MLflow store, then prints a
markdown table of each layer's logged metrics (dead filters, the objective reached, the filters' own
activation on their final images, robust_activation, high_frequency_energy, seconds per filter) and
writes ``<out>/<layer>.png``: the recipes' grids stacked, in the table's order, with the 1-min load
average beside the figures.

Example (the small convnet `make run` trains; 32 filters of four layers):
    python -m bench.featurevis_quality model=from_run model.run_id=latest \\
        'task.layers=[conv2d,conv2d_1,conv2d_2,conv2d_3]' task.num_filters=32 \\
        --recipe book=task.param.start=gray --recipe lucid= --out outputs/featurevis_quality
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

METRICS = ("dead_filters", "objective", "activation", "robust_activation", "high_frequency_energy",
           "seconds_per_filter")
DEFAULT_RECIPES = {"book": [], "keras_io": [], "lucid": []}


def compare(overrides: list[str], recipes: dict[str, list[str]], out: Path) -> dict[str, dict[str, dict]]:
    """``{recipe: {layer: {metric: value}}}``, each recipe one CLI run; grids saved under ``out``."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    out.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(uri)
    results, grids = {}, {}
    for recipe, extra in recipes.items():
        args = ["task=filters", *overrides, f"task/recipe={recipe}", *extra,
                "tracking.experiment=featurevis_quality", f"tracking.run_name={recipe}"]
        done = subprocess.run([sys.executable, "-m", "runner", *args], env={**os.environ, "MLFLOW_TRACKING_URI": uri})
        if done.returncode:
            print(f"recipe {recipe} failed (exit {done.returncode}): left out")
            continue
        run = client.search_runs([client.get_experiment_by_name("featurevis_quality").experiment_id],
                                 order_by=["attributes.start_time DESC"], max_results=1)[0]
        layers = sorted({key.split("/", 1)[1] for key in run.data.metrics if key.startswith("dead_filters/")})
        results[recipe] = {layer: {m: run.data.metrics.get(f"{m}/{layer}") for m in METRICS} for layer in layers}
        local = Path(client.download_artifacts(run.info.run_id, "filters", str(out / recipe)))
        grids[recipe] = {layer: local / f"{layer}.png" for layer in layers}
    if grids:
        _stack_grids(grids, out)
    return results


def _stack_grids(grids: dict[str, dict[str, Path]], out: Path) -> None:
    """``<out>/<layer>.png``: each recipe's grid under the previous one, its name written above it."""
    import cv2
    import numpy as np

    layers = next(iter(grids.values())).keys()
    for layer in layers:
        rows = []
        for recipe, paths in grids.items():
            image = cv2.imread(str(paths[layer]))
            label = np.zeros((18, image.shape[1], 3), np.uint8)
            cv2.putText(label, recipe, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            rows += [label, image]
        width = max(row.shape[1] for row in rows)
        rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
        cv2.imwrite(str(out / f"{layer}.png"), np.concatenate(rows))


def markdown(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| layer | recipe | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    layers = next(iter(results.values())).keys()
    for layer in layers:
        for recipe, per_layer in results.items():
            values = per_layer.get(layer, {})
            cells = ["-" if values.get(m) is None else f"{values[m]:.4g}" for m in METRICS]
            lines.append(f"| {layer} | {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--recipe", action="append", default=None,
                        help="NAME=comma,separated,overrides (repeatable); default: book, keras_io, lucid")
    parser.add_argument("--out", type=Path, default=Path("outputs/featurevis_quality"))
    arguments = parser.parse_args()
    chosen = DEFAULT_RECIPES if arguments.recipe is None else {
        name: [o for o in extra.split(",") if o] for name, extra in (r.split("=", 1) for r in arguments.recipe)}
    before = os.getloadavg()[0]
    table = markdown(compare(arguments.overrides, chosen, arguments.out))
    print(table)
    print(f"\n1-min load average {before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores)")
