"""Attribution maps for Keras classifiers, without Hydra or MLflow.

    from runner.explain import explain
    result = explain(model, images, method="gradcam", layer=None, targets=None, score="probability")
    result.raw, result.maps            # (images, h, w): the method's map, and the same in [0, 1]
    result.targets, result.probabilities, result.upsampled(224, 224)

``images`` are what the model takes (a batch, float). ``layer``: for the CAM family a feature map's path
(``base/layer`` inside nested models), None for the last spatial non-pooling one; input-space methods take
none. ``targets``: None (each image's top-1 class), a class index, or one per image. Settings of a method
(e.g. ``samples=`` for SmoothGrad) are keyword arguments. :class:`Explainer` builds the gradient model and
the compiled pass once, for many batches.

Each method is a module here (``runner/explain/<name>.py``, ↔ ``conf/task/method/<name>.yaml``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runner.errors import ConvlabError
from runner.explain.base import Method
from runner.explain.targets import Score

if TYPE_CHECKING:
    import keras
    import numpy as np

    from runner.explain.engine import Explanation

METHODS = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam", "saliency",
           "smoothgrad", "integrated_gradients", "guided_backprop", "guided_gradcam", "random", "center")

__all__ = ["METHODS", "Explainer", "Score", "explain", "method"]


def method(name: str, **settings: Any) -> Method:
    """The method called ``name`` with its settings."""
    if name not in METHODS:
        raise ConvlabError(f"unknown attribution method {name!r}", fix=f"use one of {', '.join(METHODS)}")
    cls = importlib.import_module(f"runner.explain.{name}").METHOD
    try:
        return cls(**settings)
    except TypeError as error:
        raise ConvlabError(f"{name}: {error}", fix=f"its settings are those of {cls.__name__}") from None


class Explainer:
    """``method`` on ``model`` at ``layer``: the gradient model and the compiled pass are built once."""

    def __init__(self, model: "keras.Model", method_name: str | Method = "gradcam", layer: str | None = None,
                 score: Score | str = Score.probability, **settings: Any):
        from runner.explain.engine import Engine
        from runner.explain.targets import check_classifier
        from runner.layers import pick_layer

        chosen = method_name if isinstance(method_name, Method) else method(method_name, **settings)
        chosen.validate()
        check_classifier(model)  # before its layers are searched: a regression model has no class to explain
        if chosen.space == "input":
            if layer is not None:
                raise ConvlabError(f"{chosen.name} is an input-space method: it explains pixels, not the channels "
                                   f"of a layer (task.layer={layer!r})", fix="leave task.layer=null")
        else:
            layer = pick_layer(model, layer, purpose=f"{chosen.name} weights the channels of a spatial layer")
        self.engine = Engine(model, chosen, layer, score)
        self.layer, self.method = layer, chosen

    def __call__(self, images: "np.ndarray", targets=None) -> "Explanation":
        return self.engine(images, targets)


def explain(model: "keras.Model", images: "np.ndarray", method: str = "gradcam", layer: str | None = None,
            targets=None, score: Score | str = Score.probability, **settings: Any) -> "Explanation":
    """One batch explained (see the module's docstring)."""
    return Explainer(model, method, layer, score, **settings)(images, targets)
