"""Task `gradcam`: class activation heatmaps over the photo (book 5.4.3, Selvaraju et al. 2017).

Predict, log the top classes, then explain one class per image: the gradient of its score with respect to
a convolutional layer's output, averaged over space, weights that layer's channels; their ReLU'd sum,
normalized to [0, 1], is the heatmap. This is ``task=explain task/method=gradcam`` (runner.explain) with the
book's artifact names: gradcam/<image>_overlay.png, _heatmap.png, <image>.npz and predictions.json.
"""

from __future__ import annotations

from runner.errors import ConvlabError
from runner.explain import method as attribution_method
from runner.explain.targets import Score
from runner.models.base import ModelSpec
from tasks.explain import Layout, check_options, explain_photos

BOOK = Layout(folder="gradcam", map_suffix="heatmap", map_key="heatmap", method_tag=None, layer_tag="gradcam.layer",
              score_tag="gradcam.class_score", timing=False)


def run(*, model: ModelSpec, dataset, layer: str | None, class_index: int | None, score: str, alpha: float,
        top: int, images: int, split: str) -> dict[str, float]:
    if score not in {s.value for s in Score}:
        raise ConvlabError(f"task.score={score!r} is not one of {', '.join(s.value for s in Score)}",
                           fix="task.score=probability (the book: the softmax output) or task.score=logit "
                               "(the Grad-CAM paper: the score before the softmax)")
    gradcam = attribution_method("gradcam")
    check_options(gradcam, layer, alpha, top)
    return explain_photos(model, dataset, gradcam, layer=layer, class_index=class_index, score=score,
                          alpha=alpha, top=top, images=images, split=split, layout=BOOK)
