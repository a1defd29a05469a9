"""runner.faithfulness: the metrics on models whose answer is known, and properties they must have."""

from __future__ import annotations

import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.faithfulness import (ClassProbability, Substrate, auc, blurred, evaluate, per_step_curve, pixel_ranks,
                                 step_counts, substrate)
from tests.test_explain import quadrant_images
from tests.test_gradcam import quadrant_model


@pytest.fixture(scope="module")
def quadrants():
    return quadrant_model()


def quadrant_map(quadrant: int, value_inside: float, value_outside: float, size: int = 32) -> np.ndarray:
    saliency = np.full((size, size), value_outside, np.float32)
    row, col = divmod(quadrant, 2)
    half = size // 2
    saliency[row * half:(row + 1) * half, col * half:(col + 1) * half] = value_inside
    return saliency


def constant_model(probabilities: list[float]):
    """A classifier whose output is ``probabilities`` whatever the image."""
    import keras
    from keras import initializers, layers

    inputs = keras.Input((8, 8, 3))
    x = layers.GlobalAveragePooling2D()(inputs)
    outputs = layers.Dense(len(probabilities), activation="softmax", kernel_initializer="zeros",
                           bias_initializer=initializers.Constant(np.log(probabilities)))(x)
    return keras.Model(inputs, outputs)


def test_a_map_ranking_the_class_quadrant_first_deletes_faster_and_inserts_faster(quadrants):
    images = quadrant_images()[:1].repeat(2, axis=0)  # class 0 lives in the top-left quadrant
    maps = np.stack([quadrant_map(0, 1.0, 0.0), quadrant_map(0, 0.0, 1.0)])  # first, last
    scores = evaluate(quadrants, images, maps, targets=0, steps=16)
    assert scores.deletion_auc[0] < scores.deletion_auc[1] - 0.1
    assert scores.insertion_auc[0] > scores.insertion_auc[1] + 0.1
    # both curves start at the photo's (deletion) or the blurred photo's (insertion) probability
    assert scores.deletion_curves[0, 0] == pytest.approx(scores.deletion_curves[1, 0])
    assert scores.insertion_curves[:, -1] == pytest.approx(scores.deletion_curves[:, 0], abs=1e-6)


def test_a_constant_probability_gives_that_probability_as_every_auc():
    model = constant_model([0.2, 0.7, 0.1])
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    maps = np.random.default_rng(1).uniform(size=(2, 4, 4))
    scores = evaluate(model, images, maps, targets=[1, 1], steps=7, substrate="mean")
    np.testing.assert_allclose(scores.deletion_auc, 0.7, atol=1e-5)
    np.testing.assert_allclose(scores.insertion_auc, 0.7, atol=1e-5)
    np.testing.assert_allclose(scores.average_drop, 0.0, atol=1e-5)
    assert auc(np.full(11, 0.3), np.linspace(0, 1, 11)) == pytest.approx(0.3)


def test_batched_curve_equals_the_per_step_loop(quadrants):
    image = quadrant_images()[3]
    ranks = pixel_ranks(np.random.default_rng(2).uniform(size=(32, 32)))
    counts = step_counts(32 * 32, 12)
    for start, end in [(image, substrate(image, Substrate.zero)), (blurred(image), image)]:
        batched = ClassProbability(quadrants, batch_size=5).progressive(start, end, ranks, counts, 3)
        np.testing.assert_allclose(batched, per_step_curve(quadrants, start, end, ranks, counts, 3), atol=1e-5)


def test_average_drop_and_increase_of_the_full_and_the_empty_map(quadrants):
    images = quadrant_images()
    full, empty = np.ones((4, 32, 32)), np.zeros((4, 32, 32))
    kept = evaluate(quadrants, images, full, targets=[0, 1, 2, 3], steps=4)
    assert kept.average_drop == pytest.approx(0.0, abs=1e-6) and not kept.average_increase.any()
    gone = evaluate(quadrants, images, empty, targets=[0, 1, 2, 3], steps=4)
    original = ClassProbability(quadrants)(images, np.arange(4))  # a black image: each class 1/4
    np.testing.assert_allclose(gone.average_drop, (original - 0.25) / original, atol=1e-5)


def test_ranks_steps_and_substrates():
    assert pixel_ranks(np.array([[0.1, 0.9], [0.5, 0.5]])).tolist() == [[3, 0], [1, 2]]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]
    image = np.stack([np.full((4, 4), v, np.float32) for v in (10, 20, 30)], axis=-1)
    assert substrate(image, "mean")[0, 0].tolist() == [10, 20, 30] and not substrate(image, "zero").any()
    flat = np.full((16, 16, 3), 100.0, np.float32)
    assert blurred(flat)[8, 8] == pytest.approx([100, 100, 100]) and blurred(flat)[0, 0, 0] < 100  # zero padding


@pytest.mark.parametrize(("settings", "message", "fix"), [
    ({"steps": 2000}, "task.faithfulness.steps=2000 is more than the 1024 pixels", "steps<=1024"),
    ({"steps": 8, "substrate": "noise"}, "unknown substrate 'noise'", "zero, mean"),
])
def test_bad_input_names_the_fix(settings, message, fix, quadrants):
    with pytest.raises(ConvlabError) as error:
        evaluate(quadrants, quadrant_images()[:1], np.ones((1, 4, 4)), targets=0, **settings)
    assert message in str(error.value) and fix in error.value.fix


# ------------------------------------------------------------------------------------- the task


def test_explain_task_logs_faithfulness_and_sanity_metrics_json_and_pictures(tracking):
    import mlflow

    from runner.explain import method
    from runner.faithfulness.schema import FaithfulnessConfig
    from tasks import explain as explain_task
    from tests.test_gradcam import OnePhoto, Prebuilt

    spec = Prebuilt(quadrant_model(), ["tl", "tr", "bl", "br"])
    with mlflow.start_run() as active:
        metrics = explain_task.run(model=spec, dataset=OnePhoto("q", quadrant_images()[1].astype(np.uint8)),
                                   method=method("gradcam"), layer=None, class_index=None, score="probability",
                                   alpha=0.4, top=2, images=1, split="test",
                                   faithfulness=FaithfulnessConfig(steps=8, substrate="mean", road=True,
                                                                   road_percentiles=[25, 75]), sanity=True)
    run = mlflow.get_run(active.info.run_id)
    names = ("deletion_auc", "insertion_auc", "average_drop", "average_increase", "road_morf", "road_lerf",
             "road_combined")
    assert all(run.data.metrics[f"faithfulness/{name}"] == pytest.approx(metrics[f"faithfulness/{name}"])
               for name in names) and "faithfulness_seconds" in run.data.metrics
    saved = mlflow.artifacts.load_dict(f"runs:/{active.info.run_id}/explain/faithfulness.json")
    assert saved["substrate"] == "mean" and len(saved["fractions"]) == 9 and saved["images"][0]["image"] == "q"
    assert saved["images"][0]["deletion_auc"] == pytest.approx(metrics["faithfulness/deletion_auc"])
    assert saved["road_percentiles"] == [25, 75] and len(saved["images"][0]["road_lerf_curve"]) == 2
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(active.info.run_id, "explain")}
    assert {"explain/faithfulness_curves.png", "explain/q_sanity.png", "explain/sanity.json"} <= artifacts
    history = mlflow.MlflowClient().get_metric_history(active.info.run_id, "sanity/spearman")
    assert [point.step for point in history] == [1, 2]  # the quadrant model's blocks: predictions, brightness


def test_faithfulness_settings_are_checked_at_compose_time():
    from hydra.errors import ConfigCompositionException

    from runner.validation import ConfigError, check_config
    from tests.conftest import compose_config

    cfg = compose_config(["task=explain"])
    assert cfg.task.faithfulness.enabled and cfg.task.faithfulness.steps == 112
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["task=explain", "task.faithfulness.substrate=noise"])
    assert "expected one of [zero, mean]" in str(error.value.__cause__)
    with pytest.raises(ConfigError, match="task.faithfulness.steps=0 must be >= 1"):
        check_config(compose_config(["task=explain", "task.faithfulness.steps=0"]))


@pytest.mark.parametrize("quick", [False, True])
def test_the_benchmark_settings_compose_full_and_quick(quick):
    from tests.conftest import compose_config

    flag = f"quick={str(quick).lower()}"
    photos = compose_config(["experiment=explain_benchmark", flag])
    assert photos.model._target_.endswith("MobileNetV2") and len(photos.dataset.names) == (2 if quick else 4)
    cats_vs_dogs = compose_config(["experiment=explain_benchmark", "benchmark=cats_vs_dogs", flag,
                                   "model.run_id=latest"])
    assert cats_vs_dogs.model._target_.endswith("FromRun") and cats_vs_dogs.model.run_id == "latest"
    assert cats_vs_dogs.dataset._target_.endswith("CatsVsDogs") and cats_vs_dogs.task.split == "test"
    assert cats_vs_dogs.task.images == cats_vs_dogs.dataset.limit == (2 if quick else 200)
    assert cats_vs_dogs.tracking.experiment == "explain_benchmark_cats_vs_dogs"
    for cfg in (photos, cats_vs_dogs):
        assert cfg.task.faithfulness.steps == (8 if quick else 112) and cfg.hydra.mode.name == "MULTIRUN"
        assert cfg.hydra.sweeper.params["task/method"].count(",") == (1 if quick else 13)


# ------------------------------------------------------------------------------- sanity checks


def test_spearman_and_ssim_of_a_map_with_itself_are_1_and_of_its_reverse_minus_1():
    from runner.faithfulness.sanity import spearman, ssim

    saliency = np.random.default_rng(4).uniform(size=(9, 9))
    assert spearman(saliency, saliency) == pytest.approx(1.0) and ssim(saliency, saliency) == pytest.approx(1.0)
    assert spearman(saliency, 1 - saliency) == pytest.approx(-1.0)


def test_randomization_changes_the_clone_and_leaves_the_users_model_untouched():
    from runner.faithfulness.sanity import clone, randomize, sanity_check, weighted_blocks
    from tests.test_explain import relu_convnet

    model = relu_convnet()
    before = [w.copy() for w in model.get_weights()]
    assert [name for name, _ in weighted_blocks(model)] == ["predictions", "conv_2", "conv_1"]
    copy = clone(model)
    randomize(weighted_blocks(copy)[0][1], np.random.default_rng(0))
    changed = [not np.allclose(a, b) for a, b in zip(model.get_weights(), copy.get_weights())]
    assert changed == [False, False, False, False, True, False]  # the Dense kernel (its zero bias stays zero)

    images = np.random.default_rng(5).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    result = sanity_check(model, images, "gradcam", targets=[0, 1])
    assert result.blocks == ["predictions", "conv_2", "conv_1"] and result.cascading_spearman.shape == (3, 2)
    assert result.independent_ssim.shape == (3, 2) and result.cascading_maps.shape == (3, 2, 16, 16)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_sanity_on_a_model_without_weights_names_the_fix():
    import keras

    from runner.faithfulness.sanity import sanity_check

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Activation("softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ConvlabError, match="has no layer weights to randomize") as error:
        sanity_check(keras.Model(inputs, outputs), np.ones((1, 8, 8, 3), np.float32), "saliency")
    assert "task.sanity=false" in error.value.fix


# ----------------------------------------------------------------------- a model to explain


def small_model(head: str):
    """An 8-px model ending in ``head``: a classifier (``sigmoid``: one unit, ``softmax``: three) or not."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    features = layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    pooled = layers.GlobalAveragePooling2D(name="gap")(features)
    if head == "two outputs":
        return keras.Model(inputs, [layers.Dense(2, activation="softmax")(pooled),
                                    layers.Dense(2, activation="softmax")(pooled)], name="two_heads")
    if head == "a map":  # a segmentation-like output: a probability per pixel
        return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid", name="mask")(features), name="mask")
    units, activation = {"sigmoid": (1, "sigmoid"), "softmax": (3, "softmax"), "regression": (1, None),
                         "softmax of 1": (1, "softmax")}[head]
    return keras.Model(inputs, layers.Dense(units, activation=activation, name="head")(pooled), name=head.replace(" ", "_"))


@pytest.mark.parametrize(("head", "what"), [
    ("regression", "'regression' is not a classifier: its output layer Dense 'head' has activation linear, so its "
                   "outputs are not class probabilities (a regression head, or logits)"),
    ("softmax of 1", "has activation softmax, a softmax over 1 unit, always 1"),
    ("a map", "'mask' is not a classifier: its output has shape (None, 6, 6, 1), not one vector of class "
              "probabilities per image"),
    ("two outputs", "'two_heads' is not a classifier: it has 2 outputs"),
])
def test_a_model_that_is_not_a_classifier_is_refused_by_the_explainer_and_the_metrics(head, what):
    from runner.explain import Explainer

    model = small_model(head)
    for build in (lambda: Explainer(model, "gradcam", "conv"), lambda: ClassProbability(model)):
        with pytest.raises(ConvlabError) as error:
            build()
        assert what in str(error.value) and "one sigmoid unit for two classes" in error.value.fix


def test_one_sigmoid_unit_is_a_two_class_classifier_and_a_softmax_one_of_its_units():
    from runner.explain import Explainer
    from runner.explain.targets import check_classifier

    images = np.random.default_rng(7).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    binary = small_model("sigmoid")
    assert check_classifier(binary) == 1 and check_classifier(small_model("softmax")) == 3
    explained = Explainer(binary, "gradcam", "conv")(images)
    p = binary.predict(images, verbose=0)[:, 0]
    assert explained.probabilities == pytest.approx(np.stack([1 - p, p], axis=1), abs=1e-6)
    assert ClassProbability(binary)(images, np.array([0, 1])) == pytest.approx(np.array([1 - p[0], p[1]]), abs=1e-6)


def test_explain_over_a_logged_model_that_is_not_a_classifier_fails_naming_it(tracking):
    import mlflow

    from runner.explain import method
    from runner.mlflow_models import log_keras_model
    from runner.models.from_run import FromRun
    from tasks import explain as explain_task
    from tests.test_gradcam import OnePhoto

    with mlflow.start_run() as logged:
        log_keras_model(small_model("regression"), None, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ConvlabError, match="'regression' is not a classifier"):
        explain_task.run(model=FromRun(run_id=logged.info.run_id), dataset=OnePhoto("x", np.zeros((8, 8, 3), np.uint8)),
                         method=method("gradcam"), layer=None, class_index=None, score="probability", alpha=0.4,
                         top=1, images=1, split="test")


# ------------------------------------------------------------------------------ the leaderboard


def test_bootstrap_interval_of_constant_values_is_that_value_and_covers_the_mean():
    from runner.faithfulness.leaderboard import bar_chart, bootstrap_interval, leaderboard_rows

    assert bootstrap_interval(np.full(5, 0.3)) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(6).uniform(size=50)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high and high - low < 0.3
    image = {"deletion_auc": 0.1, "insertion_auc": 0.9, "average_drop": 0.0, "average_increase": 1.0}
    rows = leaderboard_rows({"m": [image]})
    assert [(row["metric"], row["mean"], row["better"]) for row in rows] == [
        ("deletion_auc", 0.1, "lower"), ("insertion_auc", 0.9, "higher"), ("average_drop", 0.0, "lower"),
        ("average_increase", 1.0, "higher")]  # no ROAD measured: no ROAD rows
    road = {"road_morf": 0.2, "road_lerf": 0.6, "road_combined": 0.2}
    rows = leaderboard_rows({"m": [{**image, **road}], "n": [{**image, **road}]})
    assert {(row["metric"], row["better"]) for row in rows if row["metric"].startswith("road")} == {
        ("road_morf", "lower"), ("road_lerf", "higher"), ("road_combined", "higher")} and len(rows) == 14
    assert len(bar_chart(rows).axes) == 7  # a panel per measured metric


@pytest.mark.e2e
@pytest.mark.slow
def test_explain_benchmark_quick_logs_the_leaderboard_in_the_sweep_parent(run_cli, mlflow_client):
    import mlflow

    from tests.conftest import all_runs

    run_cli("experiment=explain_benchmark", "quick=true")
    runs = all_runs(mlflow_client)
    parent = next(run for run in runs if run.data.tags.get("convlab.sweep") == "true")
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(child.data.tags["explain.method"] for child in children) == ["gradcam", "random"]
    assert all(child.info.status == "FINISHED" and "faithfulness/insertion_auc" in child.data.metrics
               for child in children)
    assert {item.path for item in mlflow_client.list_artifacts(parent.info.run_id)} >= {
        "leaderboard.json", "leaderboard.png", "leaderboard_maps.png"}
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    saved = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/leaderboard.json")  # log_table's format
    table = pd.DataFrame(saved["data"], columns=saved["columns"])
    assert "leaderboard.json" in mlflow_client.get_run(parent.info.run_id).data.tags["mlflow.loggedArtifacts"]
    assert len(table) == 8 and set(table["method"]) == {"gradcam", "random"} and (table["images"] == 2).all()
    gradcam = children[[c.data.tags["explain.method"] for c in children].index("gradcam")]
    recorded = table[(table["method"] == "gradcam") & (table["metric"] == "insertion_auc")]["mean"].item()
    assert recorded == pytest.approx(gradcam.data.metrics["faithfulness/insertion_auc"], abs=1e-6)
    assert (table["ci_low"] <= table["mean"] + 1e-9).all() and (table["mean"] <= table["ci_high"] + 1e-9).all()

    # benchmark=cats_vs_dogs, over model=from_run: the small convnet's jobs finish into a leaderboard of 2 test
    # photos (a cat, a dog); a regression model's jobs in the same sweep fail, one line each, no traceback
    from runner.mlflow_models import log_keras_model
    from runner.models.small_convnet import SmallConvnet
    from runner.tracking import REASON_TAG

    mlflow.set_experiment("models")
    with mlflow.start_run() as convnet:
        log_keras_model(SmallConvnet().build((48, 48, 3), 2), ["cats", "dogs"], np.zeros((1, 48, 48, 3), np.float32))
    with mlflow.start_run() as regression:
        log_keras_model(small_model("regression"), None, np.zeros((1, 8, 8, 3), np.float32))
    proc = run_cli("experiment=explain_benchmark", "benchmark=cats_vs_dogs", "quick=true",
                   f"model.run_id={convnet.info.run_id},{regression.info.run_id}", expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("FAILED: 'regression' is not a classifier") == 2 and "fix: explain a classifier" in proc.stderr
    [experiment] = [e for e in mlflow_client.search_experiments() if e.name == "explain_benchmark_cats_vs_dogs"]
    runs = mlflow_client.search_runs([experiment.experiment_id])
    parent = next(run for run in runs if run.data.tags.get("convlab.sweep") == "true")
    jobs = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = {run.data.tags["explain.method"]: run for run in jobs if run.info.status == "FINISHED"}
    assert sorted(finished) == ["gradcam", "random"]
    assert all(run.data.params["model.run_id"] == convnet.info.run_id for run in finished.values())
    failed = [run for run in jobs if run.info.status == "FAILED"]
    assert len(failed) == 2 and all(run.data.params["model.run_id"] == regression.info.run_id
                                    and "is not a classifier" in run.data.tags[REASON_TAG] for run in failed)
    saved = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/leaderboard.json")
    table = pd.DataFrame(saved["data"], columns=saved["columns"])
    assert set(table["method"]) == {"gradcam", "random"} and (table["images"] == 2).all()
    images = mlflow.artifacts.load_dict(f"runs:/{finished['gradcam'].info.run_id}/explain/faithfulness.json")["images"]
    assert [image["image"] for image in images] == ["test_0_cats", "test_1_dogs"]
