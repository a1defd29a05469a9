"""tasks.gradcam (book 5.4.3) and runner.layers.feature_model: heatmaps that point where the score comes from."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import skimage.data

from runner.errors import ConvlabError
from runner.explain import explain
from runner.layers import feature_model, pick_layer
from runner.models.base import ModelSpec
from runner.models.mobilenet_v2 import MobileNetV2
from tasks import gradcam
from tests.conftest import all_runs

EGYPTIAN_CAT = 285
TASK_DEFAULTS = dict(layer=None, class_index=None, score="probability", alpha=0.4, top=3, images=4, split="test")


# ------------------------------------------------------------------------------------------ helpers


class Prebuilt(ModelSpec):
    """A spec handing out an already built network; preprocessing resizes the whole image (the book's)."""

    name = "prebuilt"

    def __init__(self, network, class_names: list[str] | None = None):
        self.network = network
        self.class_names = class_names

    def build(self, input_shape=None, num_classes=None):
        return self.network


class CentreCropped(Prebuilt):
    """... preprocessing like MobileNetV2: short side to 256, centre crop 224x224."""

    def preprocess(self, image, size=None):
        return MobileNetV2().preprocess(image, size)


class OnePhoto:
    name = "photos"

    def __init__(self, name: str, image: np.ndarray):
        self._photo = (name, image)

    def images(self):
        return [self._photo]


def quadrant_model(size: int = 32, cells: int = 8, sign: float = 1.0, head: str = "folded"):
    """Channel q of layer ``quadrants`` is the image brightness inside quadrant q (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right), zero elsewhere; the logit of class q is ``sign * 16 * mean(channel q)``.

    ``head="folded"``: Dense(softmax) "predictions"; ``"separate"``: Dense "logits" + Activation softmax;
    ``"linear"``: a Dense without activation.
    """
    import keras
    from keras import initializers, layers

    half = cells // 2
    mask = np.zeros((1, cells, cells, 4), np.float32)
    for quadrant in range(4):
        row, col = divmod(quadrant, 2)
        mask[0, row * half:(row + 1) * half, col * half:(col + 1) * half, quadrant] = 1.0
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(1, 1, name="brightness", kernel_initializer=initializers.Constant(1 / (3 * 255)))(inputs)
    x = layers.AveragePooling2D(size // cells, name="pool")(x)
    x = layers.Lambda(lambda t: t * mask, name="quadrants")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    kernel = initializers.Constant(sign * 16 * np.eye(4, dtype=np.float32))
    activation = "softmax" if head == "folded" else None
    outputs = layers.Dense(4, activation=activation, kernel_initializer=kernel, bias_initializer="zeros",
                           name="logits" if head == "separate" else "predictions")(x)
    if head == "separate":
        outputs = layers.Activation("softmax", name="predictions")(outputs)
    return keras.Model(inputs, outputs, name=f"quadrants_{head}")


def conv_base():
    import keras
    from keras import layers

    inputs = keras.Input((24, 24, 3))
    x = layers.Rescaling(1 / 255, name="rescaling")(inputs)
    x = layers.Conv2D(4, 3, activation="relu", name="conv_1")(x)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    return keras.Model(inputs, x, name="conv_base")


def book_finetuning_model(outer: str):
    """The book's 5.3 model: a conv base model inside the classifier, + Flatten + Dense + Dense(1, sigmoid)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)
    base = conv_base()
    head = [layers.Flatten(name="flatten"), layers.Dense(8, activation="relu", name="dense"),
            layers.Dense(1, activation="sigmoid", name="predictions")]
    if outer == "sequential":
        return keras.Sequential([keras.Input((24, 24, 3)), base, *head], name="sequential_outer")
    inputs = keras.Input((24, 24, 3))
    x = base(inputs)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name="functional_outer")


def heat_from_overlay(overlay: np.ndarray, original: np.ndarray, alpha: float) -> np.ndarray:
    """Undo the blend: the JET colour laid over each pixel, looked up back to a heat value in [0, 1]."""
    jet = (overlay.astype(np.float32) - (1 - alpha) * original.astype(np.float32)) / alpha
    lut = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)[:, 0].astype(np.float32)
    distances = ((jet[..., None, :] - lut[None, None]) ** 2).sum(-1)
    return distances.argmin(-1) / 255.0


def maps(network, layer, score, class_index, images):
    batch = explain(network, np.asarray(images, np.float32), "gradcam", layer, class_index, score)
    return batch, batch.maps


@pytest.fixture(scope="session")
def mobilenet():
    return MobileNetV2().build()


@pytest.fixture(scope="session")
def chelsea_input():
    model_input, crop = MobileNetV2().preprocess(skimage.data.chelsea())
    return model_input, crop


def run_task(spec, dataset, out: Path, **overrides) -> Path:
    """Run the task in an MLflow run; returns the local folder of its gradcam/ artifacts."""
    with mlflow.start_run() as active:
        gradcam.run(model=spec, dataset=dataset, **{**TASK_DEFAULTS, **overrides})
    return Path(mlflow.artifacts.download_artifacts(run_id=active.info.run_id, artifact_path="gradcam",
                                                    dst_path=str(out)))


def read_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------- (a) the map points right


def test_each_image_heatmap_covers_the_quadrant_its_top1_class_reads_in_one_batch():
    network = quadrant_model()
    images = np.full((4, 32, 32, 3), 100.0, np.float32)
    for quadrant in range(4):  # image q is brighter in quadrant q, so its top-1 class is q
        row, col = divmod(quadrant, 2)
        images[quadrant, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] = 200.0

    batch, heatmaps = maps(network, pick_layer(network, None), "probability", None, images)

    assert batch.targets.tolist() == [0, 1, 2, 3]
    for quadrant in range(4):
        row, col = divmod(quadrant, 2)
        expected = np.zeros((8, 8), np.float32)
        expected[row * 4:(row + 1) * 4, col * 4:(col + 1) * 4] = 1.0
        np.testing.assert_allclose(heatmaps[quadrant], expected, atol=1e-5)


def test_default_layer_is_the_last_spatial_non_pooling_one(mobilenet):
    assert pick_layer(quadrant_model(), None) == "quadrants"
    assert pick_layer(mobilenet, None) == "out_relu"
    assert pick_layer(book_finetuning_model("functional"), None) == "conv_base/conv_2"


# --------------------------------------------------------------------------- (b) nested sub-models


@pytest.mark.parametrize("outer", ["functional", "sequential"])
def test_feature_model_reaches_layers_inside_a_nested_conv_base(outer):
    import keras

    model = book_finetuning_model(outer)
    base = model.get_layer("conv_base")
    images = np.random.default_rng(0).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)

    conv_1, conv_2, output = feature_model(model, ["conv_base/conv_1", "conv_base/conv_2"],
                                           include_output=True).predict(images, verbose=0)

    direct = keras.Model(base.inputs, [base.get_layer("conv_1").output, base.get_layer("conv_2").output])
    expected_1, expected_2 = direct.predict(images, verbose=0)
    np.testing.assert_allclose(conv_1, expected_1, rtol=1e-6)
    np.testing.assert_allclose(conv_2, expected_2, rtol=1e-6)
    np.testing.assert_allclose(output, model.predict(images, verbose=0), rtol=1e-6)


def test_feature_model_mixes_outer_and_nested_layers_and_shares_weights():
    model = book_finetuning_model("functional")
    features = feature_model(model, ["dense", "conv_base/pool_2"])
    assert [tuple(t.shape) for t in features.outputs] == [(None, 8), (None, 4, 4, 8)]
    assert {id(w) for w in features.weights} <= {id(w) for w in model.weights}


def test_nested_layer_gradcam_equals_an_eager_layer_by_layer_reference():
    import tensorflow as tf

    model = book_finetuning_model("functional")
    base = model.get_layer("conv_base")
    image = np.random.default_rng(1).uniform(0, 255, (1, 24, 24, 3)).astype(np.float32)

    batch, _ = maps(model, "conv_base/conv_2", "probability", 1, image)

    with tf.GradientTape() as tape:  # keras.io's recipe, on the layers called one by one
        x = tf.constant(image)
        for layer in base.layers[1:]:
            x = layer(x)
            if layer.name == "conv_2":
                features = x
        for name in ("flatten", "dense", "predictions"):
            x = model.get_layer(name)(x)
        score = x[0, 0]
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(0, 1, 2))
    reference = tf.reduce_sum(features[0] * weights, axis=-1).numpy()
    np.testing.assert_allclose(batch.raw[0], reference, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("outer", ["functional", "sequential"])
def test_sigmoid_head_gives_two_class_probabilities_and_opposite_maps(outer):
    model = book_finetuning_model(outer)
    image = np.random.default_rng(2).uniform(0, 255, (1, 24, 24, 3)).astype(np.float32)
    p = float(model.predict(image, verbose=0)[0, 0])

    for score in ("probability", "logit"):
        cats, _ = maps(model, "conv_base/conv_2", score, 0, image)
        dogs, _ = maps(model, "conv_base/conv_2", score, 1, image)
        np.testing.assert_allclose(cats.probabilities[0], [1 - p, p], rtol=1e-5)
        np.testing.assert_allclose(cats.raw, -dogs.raw, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(dogs.scores[0], np.log(p / (1 - p)), rtol=1e-3)  # the logit of the last loop


# --------------------------------------------------------------------- (c) MobileNetV2 on chelsea


def test_mobilenet_heatmap_of_egyptian_cat_lies_on_the_cats_muzzle(mobilenet, tracking, tmp_path):
    spec = CentreCropped(mobilenet, MobileNetV2().class_names)
    chelsea = skimage.data.chelsea()  # 300x451; the model sees rows 19..281, cols 94..357

    artifacts = run_task(spec, OnePhoto("chelsea", chelsea), tmp_path, class_index=EGYPTIAN_CAT)

    saved = np.load(artifacts / "chelsea.npz")
    assert int(saved["class_index"]) == EGYPTIAN_CAT == int(saved["probabilities"].argmax())
    assert saved["crop_box"].tolist() == [19, 94, 281, 357]
    overlay = read_png(artifacts / "chelsea_overlay.png")
    assert overlay.shape == chelsea.shape
    np.testing.assert_array_equal(overlay[:, :90], chelsea[:, :90])  # left of the crop box: untouched
    heat = heat_from_overlay(overlay, chelsea, alpha=0.4)
    # Regions read off the saved overlay: the red blob covers the muzzle left of the nose (x 150-250,
    # y 180-270); forehead and left eye (x 100-200, y 25-150) stay blue.
    muzzle, forehead_and_eye = heat[180:270, 150:250], heat[25:150, 100:200]
    inside = heat[25:275, 100:350]
    peak_y, peak_x = np.unravel_index(inside.argmax(), inside.shape)
    assert 180 <= peak_y + 25 < 270 and 150 <= peak_x + 100 < 250
    assert muzzle.mean() > 0.6 > 0.15 > forehead_and_eye.mean()


# ------------------------------------------------------------------------ (d) placement in the photo


@pytest.mark.parametrize("spec_class", [Prebuilt, CentreCropped])
def test_heatmap_lands_on_the_off_centre_object_in_the_region_the_model_saw(spec_class, tracking, tmp_path):
    photo = np.zeros((224, 448, 3), np.uint8)
    photo[30:90, 140:200] = 255  # the object, top-left in the centre crop (rows 14..210, cols 126..322)
    photo[130:200, 20:90] = 255  # outside the centre crop
    spec = spec_class(quadrant_model(size=224, cells=28))  # 8-pixel cells, for a sharp map

    artifacts = run_task(spec, OnePhoto("wide", photo), tmp_path, class_index=0)

    overlay = read_png(artifacts / "wide_overlay.png")
    assert overlay.shape == photo.shape
    top, left, bottom, right = np.load(artifacts / "wide.npz")["crop_box"].tolist()
    margin = 3  # the outline of the crop box
    heat = np.zeros(photo.shape[:2])
    heat[top + margin:bottom - margin, left + margin:right - margin] = heat_from_overlay(
        overlay, photo, 0.4)[top + margin:bottom - margin, left + margin:right - margin]
    assert heat[35:85, 145:195].mean() > 0.7
    heat[20:100, 120:220] = 0
    assert heat.max() < 0.3  # nowhere else, in particular not stretched towards the left edge
    if spec_class is CentreCropped:
        assert (top, left, bottom, right) == (14, 126, 210, 322)
        np.testing.assert_array_equal(overlay[:, :left - margin], photo[:, :left - margin])
        np.testing.assert_array_equal(overlay[:, right + margin:], photo[:, right + margin:])
        assert (overlay[top, left:right] == 255).all()  # outlined
    heatmap_picture = read_png(artifacts / "wide_heatmap.png")
    assert heatmap_picture.shape[:2] == (bottom - top, right - left)


def test_task_logs_predictions_metric_and_tag(tracking, tmp_path):
    photo = np.full((32, 32, 3), 100, np.uint8)
    photo[16:, :16] = 200  # bottom-left brightest, then top-left
    photo[:16, :16] = 150
    spec = Prebuilt(quadrant_model(), ["tl", "tr", "bl", "br"])

    with mlflow.start_run() as active:
        gradcam.run(model=spec, dataset=OnePhoto("q", photo), **{**TASK_DEFAULTS, "top": 2})
    run = mlflow.get_run(active.info.run_id)

    assert run.data.tags["predicted_class"] == "bl"
    assert run.data.tags["gradcam.layer"] == "quadrants"
    predictions = mlflow.artifacts.load_dict(f"runs:/{active.info.run_id}/gradcam/predictions.json")
    [entry] = predictions["images"]
    assert [c["name"] for c in entry["top"]] == ["bl", "tl"] and entry["explained_class_name"] == "bl"
    assert run.data.metrics["top1_prob"] == pytest.approx(entry["top"][0]["probability"])


def test_binary_model_names_its_two_classes_after_the_dataset(tracking, tmp_path):
    dataset = OnePhoto("pet", np.random.default_rng(4).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    dataset.class_names = ["cats", "dogs"]
    model = book_finetuning_model("sequential")

    with mlflow.start_run() as active:
        gradcam.run(model=Prebuilt(model), dataset=dataset, **TASK_DEFAULTS)

    p = float(model.predict(Prebuilt(model).preprocess(dataset.images()[0][1])[0][None], verbose=0)[0, 0])
    [entry] = mlflow.artifacts.load_dict(f"runs:/{active.info.run_id}/gradcam/predictions.json")["images"]
    by_name = {c["name"]: c["probability"] for c in entry["top"]}
    assert by_name == pytest.approx({"cats": 1 - p, "dogs": p}, rel=1e-5)
    assert mlflow.get_run(active.info.run_id).data.tags["predicted_class"] == ("dogs" if p > 0.5 else "cats")


# ---------------------------------------------------------------------------- (e) nothing positive


@pytest.mark.parametrize("case", ["negative weights", "black image"])
def test_a_map_without_positive_evidence_is_all_zeros_with_a_warning(case, caplog):
    network = quadrant_model(sign=-1.0 if case == "negative weights" else 1.0)
    image = np.full((1, 32, 32, 3), 0.0 if case == "black image" else 150.0, np.float32)

    with caplog.at_level(logging.WARNING, logger="runner.explain"):
        batch, heatmaps = maps(network, "quadrants", "logit", 0, image)

    assert batch.raw.max() <= 0.0
    assert np.isfinite(heatmaps).all() and (heatmaps == 0).all()
    assert "<= 0 everywhere" in caplog.text


# -------------------------------------------------------------------------- (f) probability vs logit


def test_probability_and_logit_maps_differ_on_chelsea(mobilenet, chelsea_input):
    model_input, _ = chelsea_input
    by_probability, probability_map = maps(mobilenet, "out_relu", "probability", EGYPTIAN_CAT, model_input[None])
    by_logit, logit_map = maps(mobilenet, "out_relu", "logit", EGYPTIAN_CAT, model_input[None])

    r = np.corrcoef(probability_map.ravel(), logit_map.ravel())[0, 1]
    print(f"r(probability map, logit map) on chelsea/out_relu/{EGYPTIAN_CAT} = {r:.3f}")
    assert 0.3 < r < 0.95
    logits = feature_model(mobilenet, ["logits"]).predict(model_input[None], verbose=0)
    np.testing.assert_allclose(by_logit.scores[0], logits[0, EGYPTIAN_CAT], rtol=1e-5)
    np.testing.assert_allclose(by_probability.scores[0], by_probability.probabilities[0, EGYPTIAN_CAT])


def test_logit_of_a_folded_softmax_is_the_linear_part_of_its_dense():
    folded, separate = quadrant_model(head="folded"), quadrant_model(head="separate")
    images = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)

    from_folded, _ = maps(folded, "quadrants", "logit", 2, images)
    from_separate, _ = maps(separate, "quadrants", "logit", 2, images)

    dense = folded.get_layer("predictions")
    kernel, bias = dense.get_weights()
    penultimate = feature_model(folded, ["gap"]).predict(images, verbose=0)
    np.testing.assert_allclose(from_folded.scores, (penultimate @ kernel + bias)[:, 2], rtol=1e-5)
    np.testing.assert_allclose(from_folded.raw, from_separate.raw, rtol=1e-5, atol=1e-9)
    assert "linear part of 'predictions'" in from_folded.score


# ------------------------------------------------------------------------------- (g) bad input


@pytest.mark.parametrize(("overrides", "message"), [
    ({"layer": "nope"}, "has no layer 'nope'; its layers are: input_layer"),
    ({"layer": "gap"}, "layer 'gap' outputs shape (None, 4), not a (batch, height, width, channels) feature map"),
    ({"class_index": 4}, "task.class_index=4 is out of range: the model has 4 classes (0..3)"),
    ({"class_index": -1}, "the model has 4 classes"),
    ({"score": "softmax"}, "task.score='softmax' is not one of probability, logit"),
    ({"alpha": 1.5}, "task.alpha=1.5 is outside [0, 1]"),
    ({"top": 0}, "task.top=0 shows no class"),
])
def test_bad_input_is_reported(overrides, message):
    spec = Prebuilt(quadrant_model())
    with pytest.raises(ConvlabError) as error:
        gradcam.run(model=spec, dataset=OnePhoto("x", np.zeros((32, 32, 3), np.uint8)),
                    **{**TASK_DEFAULTS, **overrides})
    assert message in str(error.value)
    if overrides.get("layer") == "nope":
        assert "quadrants" in str(error.value)


def test_logit_score_needs_a_classifier():
    spec = Prebuilt(quadrant_model(head="linear"))
    with pytest.raises(ConvlabError, match="'quadrants_linear' is not a classifier"):
        gradcam.run(model=spec, dataset=OnePhoto("x", np.zeros((32, 32, 3), np.uint8)),
                    **{**TASK_DEFAULTS, "score": "logit"})


# ------------------------------------------------------------------------------- (h) end to end


@pytest.mark.e2e
def test_cli_gradcam_on_chelsea_logs_artifacts_metric_and_tag(run_cli, mlflow_client):
    run_cli("task=gradcam", "model=mobilenet_v2", "dataset=photos")

    [run] = all_runs(mlflow_client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["predicted_class"] == "Egyptian cat"
    assert run.data.tags["gradcam.layer"] == "out_relu"
    assert run.data.params["task.score"] == "probability"
    assert run.data.metrics["top1_prob"] == pytest.approx(0.714, abs=0.01)
    names = {item.path for item in mlflow_client.list_artifacts(run.info.run_id, "gradcam")}
    assert names == {f"gradcam/{name}" for name in
                     ("chelsea_overlay.png", "chelsea_heatmap.png", "chelsea.npz", "predictions.json")}
    local = Path(mlflow_client.download_artifacts(run.info.run_id, "gradcam/predictions.json"))
    [entry] = json.loads(local.read_text())["images"]
    assert entry["top"][0] == {"index": EGYPTIAN_CAT, "name": "Egyptian cat",
                               "probability": pytest.approx(0.714, abs=0.01)}
