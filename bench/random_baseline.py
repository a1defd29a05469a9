"""Which random map is the fair floor of a deletion/insertion benchmark? Grad-CAM (a 7 x 7 map at MobileNetV2's
``out_relu``) against ``random`` per pixel (``cells=None``), ``random`` at the CAM's resolution (``cells=7``)
and ``center``, on the benchmark's photos, the same metrics as ``experiment=explain_benchmark``.

Prints each map's mean deletion / insertion AUC and Average Drop, and the deletion curve at a few fractions
of deleted pixels: a per-pixel random map deletes scattered pixels everywhere, a 7 x 7 one whole regions.

    python -m bench.random_baseline                 # 4 photos, 28 steps, substrate zero
    python -m bench.random_baseline --steps 112 --substrate mean
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
SHOWN_FRACTIONS = (0.05, 0.1, 0.25, 0.5)


def maps(model, images: np.ndarray, cells: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (maps, targets)}``: every map explains each photo's top-1 class."""
    from runner.explain import explain

    explained = {"gradcam": explain(model, images, "gradcam"),
                 "random (pixels)": explain(model, images, "random"),
                 f"random ({cells}x{cells} cells)": explain(model, images, "random", cells=cells),
                 "center": explain(model, images, "center")}
    return {name: (result.maps, result.targets) for name, result in explained.items()}


def bench(photos: tuple[str, ...] = PHOTOS, steps: int = 28, substrate: str = "zero", cells: int = 7) -> dict:
    import skimage.data

    from runner.faithfulness import ClassProbability, evaluate
    from runner.models.mobilenet_v2 import MobileNetV2

    load_before = os.getloadavg()
    spec = MobileNetV2()
    model = spec.build()
    images = np.stack([spec.preprocess(getattr(skimage.data, name)())[0].astype(np.float32) for name in photos])
    probability = ClassProbability(model)
    results = {}
    for name, (saliency, targets) in maps(model, images, cells).items():
        scores = evaluate(model, images, saliency, targets, steps=steps, substrate=substrate, probability=probability)
        at = [int(np.argmin(np.abs(scores.fractions - fraction))) for fraction in SHOWN_FRACTIONS]
        results[name] = {**scores.means(), "deletion_at": scores.deletion_curves[:, at].mean(axis=0),
                         "start": scores.deletion_curves[:, 0].mean()}
    return {"results": results, "load_average_before": load_before, "load_average_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--substrate", default="zero")
    parser.add_argument("--cells", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    measured = bench(steps=args.steps, substrate=args.substrate, cells=args.cells)
    print(f"{len(PHOTOS)} photos, {args.steps} steps, deletion onto {args.substrate}; 1-min load average "
          f"{measured['load_average_before'][0]:.1f} before, {measured['load_average_after'][0]:.1f} after")
    header = " ".join(f"p@{fraction:.0%}" for fraction in SHOWN_FRACTIONS)
    print(f"  {'map':<22} deletion  insertion  avg.drop   deletion curve: p@0 {header}")
    for name, row in measured["results"].items():
        curve = " ".join(f"{value:5.3f}" for value in row["deletion_at"])
        print(f"  {name:<22} {row['deletion_auc']:8.3f}  {row['insertion_auc']:9.3f}  {row['average_drop']:8.3f}"
              f"   {row['start']:5.3f} {curve}")
    print(f"  ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
