"""Compose docs/convlab.png from the newest runs of `make run` in an MLflow store.

    python docs/make_figure.py [--store sqlite:///mlflow.db] [--out docs/convlab.png]

Panels: the Grad-CAM overlay of the newest gradcam run that has one for `--photo` (`experiment=gradcam`:
MobileNetV2 on chelsea), then the filter patterns of `--filter-layer` and the activation grid of
`--activation-layer` from the newest filters and activations runs (the small convnet `make run` trained).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from PIL import Image  # noqa: E402


def newest_artifact(client: MlflowClient, experiment: str, artifact: str, into: Path) -> tuple[str, Path]:
    """(run id, local file) of ``artifact`` in the newest FINISHED run of ``experiment`` that logged it."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in the store: run `make run` first")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    folder = artifact.rsplit("/", 1)[0]
    for run in runs:
        if any(item.path == artifact for item in client.list_artifacts(run.info.run_id, folder)):
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=artifact,
                                                        dst_path=str(into / run.info.run_id))
            return run.info.run_id, Path(local)
    raise SystemExit(f"no FINISHED run of {experiment!r} logged {artifact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    parser.add_argument("--out", default=str(Path(__file__).with_name("convlab.png")))
    parser.add_argument("--photo", default="chelsea")
    parser.add_argument("--activation-layer", default="conv2d_2")
    parser.add_argument("--filter-layer", default="conv2d_4")
    args = parser.parse_args()
    mlflow.set_tracking_uri(args.store)
    client = MlflowClient()
    panels = [("gradcam", f"gradcam/{args.photo}_overlay.png", "Grad-CAM, MobileNetV2"),
              ("activations", f"activations/{args.activation_layer}.png", f"activations, {args.activation_layer}"),
              ("filters", f"filters/{args.filter_layer}.png", f"filter patterns, {args.filter_layer}")]
    with tempfile.TemporaryDirectory() as tmp:
        figure, axes = plt.subplot_mosaic([["gradcam", "filters"], ["activations", "activations"]],
                                          figsize=(10, 6.9), dpi=90, height_ratios=[1.15, 1])
        used = []
        for experiment, artifact, title in panels:
            run_id, local = newest_artifact(client, experiment, artifact, Path(tmp))
            used.append(f"{experiment} {run_id}")
            axes[experiment].imshow(plt.imread(local))
            axes[experiment].set_title(f"{title}  ({experiment} run {run_id[:8]})", fontsize=10)
            axes[experiment].axis("off")
        figure.tight_layout()
        figure.savefig(args.out)
    # the noisy filter patterns compress badly as RGB: 256 colours keep the file small for the README
    Image.open(args.out).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB) from runs: {', '.join(used)}")


if __name__ == "__main__":
    main()
