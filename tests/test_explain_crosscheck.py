"""runner.explain against an independent implementation, tf-keras-vis, on the same model, layer, inputs and
targets (pip install -e '.[crosscheck]'; skipped without it). Where the two differ by design, the test
pins the difference (docs/explain.md says why)."""

from __future__ import annotations

import numpy as np
import pytest

from runner.explain import explain
from tests.test_explain import relu_convnet

tf_keras_vis = pytest.importorskip("tf_keras_vis", reason="tf-keras-vis is not installed (the [crosscheck] extra)")

LAYER = "relu_2"


@pytest.fixture(scope="module")
def case():
    images = np.random.default_rng(7).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    return relu_convnet(), images, [0, 1, 2]


def theirs(kind: str, model, images, targets, **options):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    cls = {"gradcam": Gradcam, "gradcampp": GradcamPlusPlus, "layercam": Layercam, "scorecam": Scorecam,
           "saliency": Saliency}[kind]
    score = CategoricalScore(targets)
    if kind == "saliency":
        return np.asarray(cls(model, clone=False)(score, images, normalize_map=False, **options))
    return np.asarray(cls(model, clone=False)(score, images, penultimate_layer=LAYER, seek_penultimate_conv_layer=False,
                                              expand_cam=False, normalize_cam=False, **options))


def peak_normalized(maps: np.ndarray) -> np.ndarray:
    return maps / maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)


@pytest.mark.parametrize("name", ["gradcam", "layercam"])
def test_gradient_cams_equal_tf_keras_vis(name, case):
    model, images, targets = case
    ours = explain(model, images, name, LAYER, targets)
    np.testing.assert_allclose(np.maximum(ours.raw, 0), theirs(name, model, images, targets), rtol=1e-4, atol=1e-8)


def test_gradcampp_equals_tf_keras_vis_up_to_its_exp_score_factor(case):
    """tf-keras-vis differentiates exp(S) (the paper's form): its map is ours times exp(S) per image."""
    model, images, targets = case
    ours = explain(model, images, "gradcampp", LAYER, targets)
    np.testing.assert_allclose(peak_normalized(np.maximum(ours.raw, 0)),
                               peak_normalized(theirs("gradcampp", model, images, targets)), rtol=1e-3, atol=1e-6)


def test_saliency_equals_tf_keras_vis(case):
    model, images, targets = case
    ours = explain(model, images, "saliency", targets=targets)
    np.testing.assert_allclose(ours.raw, theirs("saliency", model, images, targets), rtol=1e-4, atol=1e-10)


def test_scorecam_differs_from_tf_keras_vis_by_where_the_softmax_goes(case):
    """tf-keras-vis weights channel k by the target's entry of softmax over *classes* of the masked
    prediction (for a softmax model, a softmax of probabilities); Score-CAM's paper and convlab weight by a
    softmax over *channels* of the target's score. Same masks: the ordering of the maps' cells agrees."""
    model, images, targets = case
    ours = np.maximum(explain(model, images, "scorecam", LAYER, targets).raw, 0)
    other = theirs("scorecam", model, images, targets)
    assert ours.shape == other.shape
    for mine, yours in zip(ours, other):
        assert np.corrcoef(mine.ravel(), yours.ravel())[0, 1] > 0.9
