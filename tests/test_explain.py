"""runner.explain: every method on a model whose right answer is known, a property each must have,
the task's artifacts and the bad inputs."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.explain import METHODS, Explainer, explain, method
from runner.explain.eigencam import oriented
from runner.mlflow_images import image_timelines
from tests.conftest import compose_config
from tests.test_gradcam import OnePhoto, Prebuilt, book_finetuning_model, quadrant_model

NEEDS_NO_LAYER = ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "random", "center")
SMALL_SETTINGS = {"smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 16}}


def quadrant_images() -> np.ndarray:
    """Image q is brighter in quadrant q, so its top-1 class is q."""
    images = np.full((4, 32, 32, 3), 100.0, np.float32)
    for quadrant in range(4):
        row, col = divmod(quadrant, 2)
        images[quadrant, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] = 200.0
    return images


def peaks_in(heatmap: np.ndarray, quadrant: int) -> bool:
    """The map's peak lies in ``quadrant`` and its mean there is twice or more its mean elsewhere."""
    half = heatmap.shape[0] // 2
    row, col = divmod(quadrant, 2)
    inside = np.zeros(heatmap.shape, bool)
    inside[row * half:(row + 1) * half, col * half:(col + 1) * half] = True
    return bool(inside.ravel()[heatmap.argmax()] and heatmap[inside].mean() >= 2 * heatmap[~inside].mean())


def quadrant_share(heatmap: np.ndarray, quadrant: int) -> float:
    """The fraction of the map's mass inside ``quadrant``."""
    half = heatmap.shape[0] // 2
    row, col = divmod(quadrant, 2)
    return float(heatmap[row * half:(row + 1) * half, col * half:(col + 1) * half].sum() / heatmap.sum())


@pytest.fixture(scope="module")
def quadrants():
    return quadrant_model()


def relu_convnet():
    """A small ReLU convnet (random weights, seeded) for what needs ReLUs and real gradients."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="conv_1")(x)
    x = layers.Conv2D(8, 3, name="conv_2")(x)
    x = layers.ReLU(name="relu_2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="relu_convnet")


# ------------------------------------------------------------------------------- the right answer


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("random", "center", "eigencam")])
def test_each_method_puts_the_map_on_the_quadrant_that_carries_the_class(name, quadrants):
    result = explain(quadrants, quadrant_images(), name, score="logit", **SMALL_SETTINGS.get(name, {}))

    assert result.targets.tolist() == [0, 1, 2, 3]
    assert result.maps.min() >= 0 and np.isclose(result.maps.max(), 1.0)
    for quadrant in range(4):
        assert peaks_in(result.maps[quadrant], quadrant), (name, quadrant)
        # Score-CAM's softmax over four close scores weights the channels nearly alike
        assert quadrant_share(result.maps[quadrant], quadrant) > (0.5 if name == "scorecam" else 0.9)


def test_eigencam_finds_the_one_varying_direction_whatever_the_class(quadrants):
    """Gradient-free and class-agnostic: the first component of image q's cells is channel q's quadrant."""
    result = explain(quadrants, quadrant_images(), "eigencam", targets=0)
    for quadrant in range(4):
        assert quadrant_share(result.maps[quadrant], quadrant) > 0.9


def test_baselines_are_seeded_uniform_noise_and_a_centred_gaussian(quadrants):
    first = explain(quadrants, quadrant_images(), "random", seed=5).raw
    assert np.array_equal(first, explain(quadrants, quadrant_images(), "random", seed=5).raw)
    assert not np.array_equal(first, explain(quadrants, quadrant_images(), "random", seed=6).raw)
    assert 0 <= first.min() and first.max() < 1 and abs(first.mean() - 0.5) < 0.05
    centre = explain(quadrants, quadrant_images()[:1], "center").maps[0]
    assert np.unravel_index(centre.argmax(), centre.shape) in {(15, 15), (15, 16), (16, 15), (16, 16)}
    np.testing.assert_allclose(centre, centre[::-1, ::-1], atol=1e-6)


def test_random_at_a_cams_resolution_is_a_seeded_grid_upsampled_bilinearly(quadrants):
    import cv2
    import tensorflow as tf

    one_cell = explain(quadrants, quadrant_images()[:1], "random", cells=1).raw[0]
    np.testing.assert_allclose(one_cell, one_cell[0, 0])  # one value, everywhere
    grid = explain(quadrants, quadrant_images()[:1], "random", cells=4, seed=5).raw[0]
    assert np.array_equal(grid, explain(quadrants, quadrant_images()[:1], "random", cells=4, seed=5).raw[0])
    values = tf.random.stateless_uniform((4, 4), seed=(5, 0)).numpy()  # the grid drawn, 8 x 8 pixels a cell
    np.testing.assert_allclose(grid, cv2.resize(values, (32, 32), interpolation=cv2.INTER_LINEAR), atol=1e-5)
    pixels = explain(quadrants, quadrant_images()[:1], "random", seed=5).raw[0]
    assert np.abs(np.diff(grid, axis=1)).max() < 0.2 < np.abs(np.diff(pixels, axis=1)).max()


# ------------------------------------------------------------------------------------ properties


def test_smoothgrad_without_noise_is_saliency():
    model, images = relu_convnet(), np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    smooth = explain(model, images, "smoothgrad", samples=3, noise=0.0)
    np.testing.assert_allclose(smooth.raw, explain(model, images, "saliency").raw, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_integrated_gradients_add_up_to_the_score_difference(baseline):
    model = relu_convnet()
    images = np.random.default_rng(1).uniform(0, 40, (2, 16, 16, 3)).astype(np.float32)
    images[0, 2:9, 3:12], images[1, 8:15, 1:6] = 250.0, 220.0  # a bright object, far from any baseline
    result = explain(model, images, "integrated_gradients", steps=64, baseline=baseline, blur_sigma=2.0,
                     score="logit")
    assert (result.diagnostics["completeness_error"] < 0.01).all(), result.diagnostics
    np.testing.assert_allclose(result.raw.sum(axis=(1, 2)), result.diagnostics["score_difference"], rtol=0.01)


def test_gradcampp_is_gradcam_when_the_gradients_are_positive_and_constant_over_space():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    features = tf.constant(rng.uniform(0, 3, (2, 5, 5, 4)), tf.float32)
    gradients = tf.constant(np.broadcast_to(rng.uniform(0.1, 1, (2, 1, 1, 4)), (2, 5, 5, 4)), tf.float32)
    np.testing.assert_allclose(method("gradcampp").combine(features, gradients),
                               method("gradcam").combine(features, gradients), rtol=1e-5)


def test_hirescam_of_a_pooled_linear_logit_sums_to_the_logit(quadrants):
    """Global average pooling + linear head: the cells' contributions add up to the score (bias 0 here)."""
    result = explain(quadrants, quadrant_images(), "hirescam", score="logit")
    np.testing.assert_allclose(result.raw.sum(axis=(1, 2)), result.scores, rtol=1e-5)
    layercam = explain(quadrants, quadrant_images(), "layercam", score="logit")  # its gradients are >= 0
    np.testing.assert_allclose(layercam.raw, result.raw, rtol=1e-6)


def test_scorecam_weights_are_a_softmax_over_the_masked_scores(quadrants):
    """Hand-made: mask each image by each upsampled, min-max normalized channel, score, softmax."""
    import cv2

    from runner.layers import feature_model

    images = quadrant_images()
    result = explain(quadrants, images, "scorecam", batch_size=3)
    features = feature_model(quadrants, ["quadrants"]).predict(images, verbose=0)
    for index in range(4):
        scores = []
        for channel in range(4):
            mask = cv2.resize(features[index, ..., channel], (32, 32), interpolation=cv2.INTER_LINEAR)
            span = mask.max() - mask.min()
            mask = (mask - mask.min()) / span if span > 0 else np.zeros_like(mask)
            scores.append(quadrants.predict(images[index:index + 1] * mask[..., None], verbose=0)[0, index])
        weights = np.exp(scores) / np.exp(scores).sum()
        np.testing.assert_allclose(result.raw[index], features[index] @ weights, rtol=1e-4, atol=1e-7)


def test_faster_scorecam_keeps_the_channels_of_largest_variance(quadrants):
    full = explain(quadrants, quadrant_images(), "scorecam")
    faster = explain(quadrants, quadrant_images(), "scorecam", max_channels=1)
    for quadrant in range(4):  # the only varying channel of image q is channel q
        assert quadrant_share(faster.maps[quadrant], quadrant) == pytest.approx(1.0)
    np.testing.assert_array_equal(full.targets, faster.targets)


def test_eigencam_does_not_depend_on_the_sign_of_the_component():
    import tensorflow as tf

    projection = tf.constant(np.random.default_rng(3).normal(size=(2, 9)), tf.float32)
    reference = tf.constant(np.random.default_rng(4).normal(size=(2, 9)), tf.float32)
    np.testing.assert_array_equal(oriented(projection, reference), oriented(-projection, reference))
    assert (tf.reduce_sum(oriented(projection, reference) * reference, axis=-1) >= 0).numpy().all()


def test_guided_backprop_passes_only_positive_gradients_on_a_clone():
    model = relu_convnet()
    images = np.random.default_rng(5).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    before = model.predict(images, verbose=0)
    activations = [getattr(layer, "activation", None) for layer in model.layers]

    guided = explain(model, images, "guided_backprop")
    plain = explain(model, images, "saliency")
    guided_gradcam = explain(model, images, "guided_gradcam", layer="relu_2")

    assert [getattr(layer, "activation", None) for layer in model.layers] == activations
    assert all(not type(layer).__name__.startswith("Guided") for layer in model.layers)
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    assert guided.raw.shape == plain.raw.shape and not np.allclose(guided.raw, plain.raw)
    assert guided_gradcam.raw.shape == (2, 16, 16) and np.isfinite(guided_gradcam.raw).all()


def test_nested_base_layer_paths_work_for_every_cam():
    model = book_finetuning_model("functional")
    images = np.random.default_rng(6).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    for name in ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam"):
        result = explain(model, images, name, layer="conv_base/conv_2")
        assert result.raw.shape == (2, 9, 9) and result.probabilities.shape == (2, 2), name


def test_explainer_reuses_one_compiled_pass_for_several_batches(quadrants):
    explainer = Explainer(quadrants, "gradcam")
    images = quadrant_images()
    first, second = explainer(images[:2]), explainer(images[2:])
    assert explainer.layer == "quadrants" and first.targets.tolist() == [0, 1] and second.targets.tolist() == [2, 3]
    np.testing.assert_array_equal(explain(quadrants, images, "gradcam", targets=[1, 1, 1, 1]).targets, [1, 1, 1, 1])


# ------------------------------------------------------------------------------------- the task


def test_task_logs_maps_npz_tags_and_returns_its_metrics(tracking, tmp_path):
    from tasks import explain as explain_task

    photo = quadrant_images()[2].astype(np.uint8)
    spec = Prebuilt(quadrant_model(), ["tl", "tr", "bl", "br"])
    with mlflow.start_run() as active:
        metrics = explain_task.run(model=spec, dataset=OnePhoto("q", photo), method=method("integrated_gradients",
                                   steps=8), layer=None, class_index=None, score="logit", alpha=0.4, top=2,
                                   images=1, split="test")
    run = mlflow.get_run(active.info.run_id)

    assert run.data.tags["explain.method"] == "integrated_gradients" and run.data.tags["predicted_class"] == "bl"
    assert run.data.tags["explain.layer"] == "None" and run.data.tags["explain.score"].startswith("logit")
    assert set(metrics) >= {"explain_seconds", "top1_prob", "explain/completeness_error"}
    assert run.data.metrics["explain/completeness_error"] == pytest.approx(metrics["explain/completeness_error"])
    names = {item.path for item in mlflow.MlflowClient().list_artifacts(active.info.run_id, "explain")}
    assert names == {f"explain/{n}" for n in ("q_overlay.png", "q_map.png", "q_signed.png", "q.npz",
                                              "predictions.json")}
    saved = np.load(mlflow.artifacts.download_artifacts(run_id=active.info.run_id, artifact_path="explain/q.npz",
                                                         dst_path=str(tmp_path)))
    assert set(saved.files) == {"map", "raw", "class_index", "probabilities", "crop_box"} and saved["class_index"] == 2
    assert image_timelines(active.info.run_id) == {"explain/q": [0]}  # the overlay, step = the image's index


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("name", "settings", "layer", "message"), [
    ("gradcam", {}, "gap", "layer 'gap' outputs shape (None, 4), not a (batch, height, width, channels) feature map"),
    ("saliency", {}, "quadrants", "saliency is an input-space method"),
    ("smoothgrad", {"samples": 0}, None, "task.method.samples=0"),
    ("integrated_gradients", {"steps": 0}, None, "task.method.steps=0"),
    ("scorecam", {"max_channels": 5}, None, "task.method.max_channels=5 is outside 1..4"),
])
def test_bad_input_names_the_fix(name, settings, layer, message, quadrants):
    with pytest.raises(ConvlabError) as error:
        Explainer(quadrants, name, layer, **settings)
    assert message in str(error.value) and error.value.fix


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_a_model_ending_in_logits_is_not_a_classifier_whatever_the_score(score):
    with pytest.raises(ConvlabError, match="'quadrants_linear' is not a classifier: its output layer Dense "
                                           "'predictions' has activation linear") as error:
        Explainer(quadrant_model(head="linear"), "gradcam", score=score)
    assert "Activation('softmax')" in error.value.fix


def test_a_mistyped_method_fails_at_compose_listing_the_methods():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        compose_config(["task=explain", "task/method=gradcamm"])
    assert all(name in str(error.value) for name in METHODS)
    cfg = compose_config(["task=explain", "task/method=integrated_gradients", "task.method.baseline=blur"])
    assert cfg.task.method.steps == 32 and str(cfg.task.method.baseline) == "blur"


@pytest.mark.parametrize("override, message", [
    ("task/method=smoothgrad task.method.samples=0", "task.method.samples=0 must be >= 1"),
    ("task/method=integrated_gradients task.method.steps=0", "task.method.steps=0 must be >= 1"),
    ("task/method=scorecam task.method.max_channels=0", "task.method.max_channels=0 must be >= 1"),
    ("task.alpha=1.5", "task.alpha=1.5 must be in [0, 1]"),
])
def test_out_of_range_method_settings_are_rejected_before_a_run(override, message):
    from runner.validation import ConfigError, check_config

    cfg = compose_config(["task=explain", *override.split()])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_config(cfg)
    check_config(compose_config(["task=explain", "task/method=scorecam", "task.method.max_channels=8"]))


# ----------------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_cli_explain_runs_a_method_on_mobilenet_and_names_bad_input(run_cli, mlflow_client):
    from tests.conftest import all_runs

    run_cli("task=explain", "task/method=smoothgrad", "task.method.samples=2", "model=mobilenet_v2",
            "dataset=photos", "task.faithfulness.steps=4", "task.faithfulness.road=true",
            "task.faithfulness.road_percentiles=[50]", "task.faithfulness.batch_size=8")
    proc = run_cli("task=explain", "task/method=saliency", "task.layer=out_relu", "model=mobilenet_v2",
                   "dataset=photos", expect_ok=False)

    ok, failed = sorted(all_runs(mlflow_client), key=lambda run: run.info.status != "FINISHED")
    assert ok.info.status == "FINISHED" and ok.data.tags["explain.method"] == "smoothgrad"
    assert ok.data.tags["predicted_class"] == "Egyptian cat" and "explain_seconds" in ok.data.metrics
    assert 0 <= ok.data.metrics["faithfulness/deletion_auc"] <= 1 and "faithfulness_seconds" in ok.data.metrics
    road = {name: ok.data.metrics[f"faithfulness/road_{name}"] for name in ("morf", "lerf", "combined")}
    assert 0 <= road["morf"] <= 1 and road["combined"] == pytest.approx((road["lerf"] - road["morf"]) / 2)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "saliency is an input-space method" in proc.stderr and "leave task.layer=null" in proc.stderr
    assert failed.info.status == "FAILED"
