"""What ROAD costs over deletion + insertion: one 224 px photo on MobileNetV2, its Grad-CAM map, timed
alternately in one run.

``deletion_insertion``: ``runner.faithfulness.evaluate`` without ROAD (the curves and Average Drop /
Increase, what every explain run measures); ``road``: ``runner.faithfulness.road`` at the default
percentages (MoRF + LeRF: 18 sparse solves and 18 forward passes, padded to the batch); ``road_imputation``:
the 18 imputed images alone (scipy's sparse solves), to split ROAD's time between solving and the model.
Each is run once untimed, then they take turns ``--repeats`` times and keep their best.

    python -m bench.road                 # chelsea, 112 steps, 2 repeats
    python -m bench.road --repeats 1     # a loaded machine
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench.filters_bench import best_seconds_alternating


def bench(photo: str = "chelsea", steps: int = 112, repeats: int = 2, batch_size: int = 32) -> dict:
    import skimage.data

    from runner.explain import Explainer, method
    from runner.faithfulness import ClassProbability, evaluate, road, road_images
    from runner.faithfulness.core import input_maps
    from runner.faithfulness.road import removal_masks
    from runner.models.mobilenet_v2 import MobileNetV2

    load_before = os.getloadavg()
    spec = MobileNetV2()
    model = spec.build()
    image = spec.preprocess(getattr(skimage.data, photo)())[0].astype(np.float32)[None]
    explained = Explainer(model, method("gradcam"), None, "probability")(image, None)
    maps, targets = input_maps(explained.maps, *image.shape[1:3]), explained.targets
    probability = ClassProbability(model, batch_size)
    timers = {
        "deletion_insertion": lambda: evaluate(model, image, maps, targets, steps=steps, probability=probability),
        "road": lambda: road(probability, image, maps, targets),
        "road_imputation": lambda: road_images(image[0], maps[0]),
    }
    best = best_seconds_alternating(timers, repeats)
    removed = [int(mask.sum()) for mask in removal_masks(maps[0], [10, 50, 90], most_relevant_first=True)]
    return {"photo": photo, "steps": steps, "seconds": best, "removed_pixels_at_10_50_90": removed,
            "road_scores": road(probability, image, maps, targets), "load_average_before": load_before,
            "load_average_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="chelsea")
    parser.add_argument("--steps", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    results = bench(args.photo, args.steps, args.repeats, args.batch_size)
    seconds, scores = results["seconds"], results["road_scores"]
    print(f"{results['photo']} at 224 px, MobileNetV2, Grad-CAM map; 1-min load average "
          f"{results['load_average_before'][0]:.1f} before, {results['load_average_after'][0]:.1f} after")
    for name, value in seconds.items():
        print(f"  {name:<20} {value:7.2f} s")
    print(f"  ROAD costs {seconds['road'] / seconds['deletion_insertion']:.2f}x deletion + insertion "
          f"({args.steps} steps) + Average Drop/Increase; the imputation is "
          f"{seconds['road_imputation'] / seconds['road']:.0%} of ROAD (pixels removed at 10/50/90 %: "
          f"{results['removed_pixels_at_10_50_90']})")
    print(f"  ROAD of the map: MoRF {scores.morf[0]:.3f}, LeRF {scores.lerf[0]:.3f}, combined {scores.combined[0]:.3f}")


if __name__ == "__main__":
    main()
