"""Task `explain`: attribution maps of a model's classes over the photos, one method of runner.explain.

``convlab task=explain task/method=scorecam``; ``task=gradcam`` is the book's 5.4.3 (this task's Grad-CAM
with the book's artifact names). Per image: the overlay on the photo (on the crop box the model saw), the
map's picture (input-space methods: gray magnitude and the signed map in a diverging colormap) and
``explain/<image>.npz`` (raw map, normalized map, class, probabilities, crop box). Tags: method, layer,
score. Metrics: ``explain_seconds`` per image, ``top1_prob`` and the method's diagnostics; with
``task.faithfulness.enabled`` (default) the maps' ``faithfulness/*`` means (``road_*`` with
``task.faithfulness.road``; runner.faithfulness,
docs/faithfulness.md), ``faithfulness_seconds`` per image, ``explain/faithfulness.json`` (per image, with
the curves) and ``explain/faithfulness_curves.png``. Returns the metrics as a dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
import numpy as np

from runner.errors import ConvlabError
from runner.explain import Explainer
from runner.explain.base import Method
from runner.explain.targets import Score, class_count, top_classes
from runner.faithfulness.schema import FaithfulnessConfig
from runner.mlflow_images import log_picture
from runner.models.base import ModelSpec
from runner.tracking import log_npz
from runner.visual import (VisualInput, box_list, build_model, class_names, diverging_picture, load_inputs,
                           map_picture, overlay)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a run's artifacts and tags go: ``explain`` here, the book's names for ``task=gradcam``."""

    folder: str = "explain"
    map_suffix: str = "map"
    map_key: str = "map"
    method_tag: str | None = "explain.method"
    layer_tag: str = "explain.layer"
    score_tag: str = "explain.score"
    timing: bool = True  # log explain_seconds per image


def run(*, model: ModelSpec, dataset, method: Method, layer: str | None, class_index: int | None,
        score: Score | str, alpha: float, top: int, images: int, split: str,
        faithfulness: FaithfulnessConfig | Mapping | None = None, sanity: bool = False,
        sanity_blocks: int | None = None) -> dict[str, float]:
    check_options(method, layer, alpha, top)
    settings = (faithfulness if isinstance(faithfulness, FaithfulnessConfig) or faithfulness is None
                else FaithfulnessConfig(**faithfulness))  # None (a caller's choice): not measured
    return explain_photos(model, dataset, method, layer=layer, class_index=class_index, score=score, alpha=alpha,
                          top=top, images=images, split=split, layout=Layout(), faithfulness=settings,
                          sanity=sanity, sanity_blocks=sanity_blocks)


def check_options(method: Method, layer: str | None, alpha: float, top: int) -> None:
    """What the values alone decide, before a model is built."""
    if method.space == "input" and layer is not None:
        raise ConvlabError(f"{method.name} is an input-space method: it explains pixels, not the channels of a "
                           f"layer (task.layer={layer!r})", fix="leave task.layer=null, or pick a CAM method")
    method.validate()
    if not 0.0 <= alpha <= 1.0:
        raise ConvlabError(f"task.alpha={alpha} is outside [0, 1]",
                           fix="use e.g. task.alpha=0.4 (the heatmap's weight in the overlay)")
    if top < 1:
        raise ConvlabError(f"task.top={top} shows no class", fix="use task.top=1 or more")


def explain_photos(spec: ModelSpec, dataset, method: Method, *, layer: str | None, class_index: int | None,
                   score: Score | str, alpha: float, top: int, images: int, split: str,
                   layout: Layout, faithfulness: FaithfulnessConfig | None = None, sanity: bool = False,
                   sanity_blocks: int | None = None) -> dict[str, float]:
    network = build_model(spec, dataset)
    explainer = Explainer(network, method, layer, score)
    names = class_names(spec, dataset, class_count(network.output_shape[-1]))
    _check_class_index(class_index, names)
    inputs = load_inputs(spec, network, dataset, images, split)
    batch = explainer(np.stack([item.model_input for item in inputs]), class_index)
    _warn_incomplete(batch.diagnostics)
    prefix = layout.folder
    mlflow.set_tags({layout.layer_tag: str(explainer.layer), layout.score_tag: batch.score,
                     **({layout.method_tag: method.name} if layout.method_tag else {})})

    predictions, seconds = [], batch.seconds / len(inputs)
    for index, item in enumerate(inputs):
        ranked = top_classes(batch.probabilities[index], names, top)
        target = int(batch.targets[index])
        _log_image(item, batch, index, alpha, layout)
        mlflow.log_metrics({"top1_prob": ranked[0]["probability"],
                            **({"explain_seconds": seconds} if layout.timing else {}),
                            **{f"{prefix}/{key}": float(value[index]) for key, value in batch.diagnostics.items()}},
                           step=index)
        predictions.append({"image": item.name, "top": ranked, "explained_class": target,
                            "explained_class_name": names[target], "crop_box": box_list(item.crop)})
        where = f" at {explainer.layer}" if explainer.layer else ""
        print(f"[convlab] {item.name}: " + ", ".join(f"{c['name']} {c['probability']:.3f}" for c in ranked)
              + f"; {method.name} map of {names[target]!r}{where}")
    mlflow.set_tag("predicted_class", predictions[0]["top"][0]["name"])
    mlflow.log_dict({"method": method.name, "layer": explainer.layer, "class_score": batch.score,
                     "images": predictions}, f"{layout.folder}/predictions.json")
    metrics = {"explain_seconds": seconds, "top1_prob": float(np.mean([p["top"][0]["probability"]
                                                                       for p in predictions]))}
    metrics.update({f"{prefix}/{key}": float(np.mean(value)) for key, value in batch.diagnostics.items()})
    if faithfulness is not None and faithfulness.enabled:
        metrics.update(_measure_faithfulness(network, inputs, batch, faithfulness, f"{method.name}", layout))
    if sanity:
        metrics.update(_check_sanity(network, inputs, batch, method, explainer.layer, score, sanity_blocks, layout))
    return metrics


def _check_sanity(network, inputs: list[VisualInput], batch, method: Method, layer: str | None, score,
                  max_blocks: int | None, layout: Layout) -> dict[str, float]:
    """runner.faithfulness.sanity: similarity curves (step = randomized depth), a picture strip per image."""
    from runner.faithfulness.sanity import sanity_check

    result = sanity_check(network, np.stack([item.model_input for item in inputs]), method, layer, score,
                          batch.targets, max_blocks=max_blocks)
    for depth in range(len(result.blocks)):
        mlflow.log_metrics({"sanity/spearman": float(result.cascading_spearman[depth].mean()),
                            "sanity/ssim": float(result.cascading_ssim[depth].mean()),
                            "sanity/independent_spearman": float(result.independent_spearman[depth].mean()),
                            "sanity/independent_ssim": float(result.independent_ssim[depth].mean())}, step=depth + 1)
    for index, item in enumerate(inputs):
        mlflow.log_image(_strip([result.original_maps[index], *result.cascading_maps[:, index]]),
                         f"{layout.folder}/{item.name}_sanity.png")
    mlflow.log_dict({"blocks": result.blocks, "cascading_spearman": result.cascading_spearman.round(4).tolist(),
                     "cascading_ssim": result.cascading_ssim.round(4).tolist(),
                     "independent_spearman": result.independent_spearman.round(4).tolist(),
                     "independent_ssim": result.independent_ssim.round(4).tolist()}, f"{layout.folder}/sanity.json")
    print(f"[convlab] sanity: Spearman with the original map after randomizing {len(result.blocks)} blocks "
          f"top-down: " + ", ".join(f"{value:.2f}" for value in result.cascading_spearman.mean(axis=1)))
    return {"sanity/spearman": float(result.cascading_spearman[-1].mean()),
            "sanity/ssim": float(result.cascading_ssim[-1].mean())}


def _strip(maps: list[np.ndarray], size: int = 112) -> np.ndarray:
    """The original map, then the map after each randomized depth, side by side (JET)."""
    import cv2

    from runner.visual import jet, tile

    pictures = np.stack([jet(cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR))
                         for m in maps])
    return tile(pictures, columns=len(pictures))


def _measure_faithfulness(network, inputs: list[VisualInput], batch, settings: FaithfulnessConfig,
                          title: str, layout: Layout) -> dict[str, float]:
    """runner.faithfulness on the run's maps: mean metrics, per-image values and the curves."""
    from runner.faithfulness import evaluate
    from runner.faithfulness.figures import curves_figure

    names = [item.name for item in inputs]
    scores = evaluate(network, np.stack([item.model_input for item in inputs]), batch.maps, batch.targets,
                      steps=settings.steps, substrate=settings.substrate, batch_size=settings.batch_size,
                      road_percentiles=list(settings.road_percentiles) if settings.road else None)
    metrics = {f"faithfulness/{key}": value for key, value in scores.means().items()}
    metrics["faithfulness_seconds"] = scores.seconds / len(inputs)
    mlflow.log_metrics(metrics)
    mlflow.log_dict({"steps": settings.steps, "substrate": str(settings.substrate), "fractions":
                     scores.fractions.round(6).tolist(),
                     **({"road_percentiles": scores.road.percentiles.tolist()} if scores.road else {}),
                     "images": scores.per_image(names)}, f"{layout.folder}/faithfulness.json")
    figure = curves_figure(scores, names, f"{title}: deletion ({settings.substrate}) and insertion (blur)")
    mlflow.log_figure(figure, f"{layout.folder}/faithfulness_curves.png")
    print(f"[convlab] faithfulness: deletion AUC {metrics['faithfulness/deletion_auc']:.3f}, insertion AUC "
          f"{metrics['faithfulness/insertion_auc']:.3f}, average drop {metrics['faithfulness/average_drop']:.3f}, "
          f"increase {metrics['faithfulness/average_increase']:.3f}" + (
              f", ROAD MoRF {metrics['faithfulness/road_morf']:.3f} LeRF {metrics['faithfulness/road_lerf']:.3f} "
              f"({scores.seconds:.1f} s, ROAD {scores.road.seconds:.1f} s of it)" if scores.road
              else f" ({scores.seconds:.1f} s)"))
    return metrics


def _warn_incomplete(diagnostics: dict[str, np.ndarray], tolerance: float = 0.01) -> None:
    """Integrated Gradients: attributions that do not add up to the score difference mean too few steps."""
    error = diagnostics.get("completeness_error")
    if error is not None and float(np.max(error)) > tolerance:
        log.warning("integrated gradients: the attributions miss S(x) - S(baseline) by up to %.1f %% (more "
                    "than %.0f %%): raise task.method.steps", 100 * float(np.max(error)), 100 * tolerance)


def _check_class_index(class_index: int | None, names: list[str]) -> None:
    if class_index is not None and not 0 <= class_index < len(names):
        raise ConvlabError(f"task.class_index={class_index} is out of range: the model has {len(names)} "
                           f"classes (0..{len(names) - 1})",
                           fix="pick an index in that range, or task.class_index=null for each image's top-1 class")


def _log_image(item: VisualInput, batch, index: int, alpha: float, layout: Layout) -> None:
    heatmap = batch.maps[index]
    folder = layout.folder
    log_picture(overlay(item.original, heatmap, item.crop, alpha), f"{folder}/{item.name}_overlay.png",
                key=f"{folder}/{item.name}", step=index)
    colormap = "jet" if batch.signed is None else "gray"
    mlflow.log_image(map_picture(heatmap, item.crop, colormap), f"{folder}/{item.name}_{layout.map_suffix}.png")
    if batch.signed is not None:
        mlflow.log_image(diverging_picture(batch.signed[index], item.crop), f"{folder}/{item.name}_signed.png")
    log_npz(f"{folder}/{item.name}.npz", **{layout.map_key: heatmap}, raw=batch.raw[index].astype(np.float32),
            class_index=np.int64(batch.targets[index]), probabilities=batch.probabilities[index].astype(np.float32),
            crop_box=np.asarray(box_list(item.crop)))
