"""Task `finetune`: feature cache, unfreezing, the nested base; end to end for each mode on MobileNetV2."""

from __future__ import annotations

import numpy as np
import pytest

from runner.data.base import ImageDataset
from runner.errors import ConvlabError
from runner.fetch import cache_root
from runner.mlflow_images import image_timelines
from runner.models.base import ModelSpec
from tasks import finetune
from tests.conftest import all_runs

HEAD = {"pooling": "avg", "units": 8, "dropout": 0.5, "optimizer": "rmsprop", "learning_rate": 1e-3, "epochs": 1}


# ------------------------------------------------------------------------------- tiny in-process parts


class ToyBase(ModelSpec):
    """A fixed 16x16 'pretrained' classifier: conv1 -> conv2 -> pool -> logits (same weights every build)."""

    name = "toy"
    input_size = (16, 16)

    def build(self, input_shape=None, num_classes=None):
        import keras

        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 3), name="input")
        x = keras.layers.Rescaling(1 / 255, name="normalize")(inputs)
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(x)
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="toy")


class ToyData(ImageDataset):
    name = "toy_data"
    class_names = ["a", "b"]

    def __init__(self, image_size: int = 20):
        self.image_size = (image_size, image_size)
        self.batch_size = 3

    def split(self, name):
        import tensorflow as tf

        rng = np.random.default_rng(len(name))
        images = rng.uniform(0, 255, (6, *self.image_size, 3)).astype(np.float32)
        labels = np.array([0, 1] * 3, dtype=np.int32)
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(self.batch_size)

    def content_hash(self) -> str:
        return "toy-data-v1"


def _features(cache_dir, image_size=20, cut_layer=None, use_cache=True):
    parts = finetune.build_parts(ToyBase(), ToyData(image_size), cut_layer=cut_layer, head=HEAD)
    return finetune.split_features(parts, ToyData(image_size), str(cache_dir), use_cache)


def test_feature_cache_is_hit_on_the_second_run_and_keyed_by_image_size_and_cut_layer(tmp_path):
    first, state = _features(tmp_path)
    assert state == "miss"
    files = sorted((tmp_path / "features").iterdir())
    assert len(files) == 3 and all(f.suffix == ".npz" and not f.name.startswith(".") for f in files)

    again, state = _features(tmp_path)  # a new build of the same base: same weights, same key
    assert state == "hit"
    for split in first:
        np.testing.assert_array_equal(again[split][0], first[split][0])
        np.testing.assert_array_equal(again[split][1], first[split][1])
    assert first["train"][0].shape == (6, 12, 12, 4)  # resized to 16, conv2's feature map

    assert _features(tmp_path, image_size=24)[1] == "miss"
    conv1, state = _features(tmp_path, cut_layer="conv1")
    assert state == "miss" and conv1["train"][0].shape == (6, 14, 14, 4)
    assert len(list((tmp_path / "features").iterdir())) == 9  # three keys per (image size, cut layer)
    assert _features(tmp_path, cut_layer="conv1")[1] == "hit"

    _stored, state = _features(tmp_path / "off", use_cache=False)
    assert state == "off" and not (tmp_path / "off" / "features").exists()


def test_the_cache_stores_float16_and_a_miss_trains_on_the_values_a_hit_loads(tmp_path):
    computed, _ = _features(tmp_path)
    loaded, state = _features(tmp_path)
    assert state == "hit"
    for path in (tmp_path / "features").iterdir():
        with np.load(path) as stored:
            assert stored["features"].dtype == np.float16
    for split in computed:
        assert computed[split][0].dtype == loaded[split][0].dtype == np.float32
        np.testing.assert_array_equal(computed[split][0], loaded[split][0])
    exact, _ = _features(tmp_path / "off", use_cache=False)
    np.testing.assert_allclose(computed["train"][0], exact["train"][0], rtol=1e-3, atol=1e-6)
    huge = np.array([1.0, 7e4], np.float32)
    assert finetune.storable(huge).dtype == np.float32 and finetune.storable(huge / 10).dtype == np.float16


def test_the_cache_cap_deletes_the_least_recently_used_files_but_never_this_runs(tmp_path):
    import os

    sizes = {"old": 300, "used": 300, "mid": 300, "new": 300}
    paths = {}
    for age, (name, size) in enumerate(sizes.items()):
        paths[name] = tmp_path / f"{name}.npz"
        paths[name].write_bytes(b"x" * size)
        os.utime(paths[name], (1000 + age, 1000 + age))
    os.utime(paths["used"], (900, 900))  # the oldest, but this run's
    deleted = finetune.prune_cache(tmp_path, max_gb=700 / 1e9, keep=[paths["used"]])
    assert deleted == [paths["old"], paths["mid"]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new.npz", "used.npz"]
    assert finetune.prune_cache(tmp_path, max_gb=1.0, keep=[]) == []


def test_cache_key_covers_weights_cut_layer_dataset_split_size_and_preprocessing():
    base = {"name": "b", "weights_sha256": "w", "cut_layer": "c", "input_shape": [1], "output_shape": [2]}
    data = {"name": "d", "loader": "l", "content_sha256": "h", "split": "train", "image_size": [48, 48],
            "channels": 3}
    key = finetune.cache_key(finetune.cache_meta(base, data, "resize_bilinear_224x224"))
    assert key == finetune.cache_key(finetune.cache_meta(dict(base), dict(data), "resize_bilinear_224x224"))
    changed = [
        finetune.cache_meta({**base, "weights_sha256": "w2"}, data, "resize_bilinear_224x224"),
        finetune.cache_meta({**base, "cut_layer": "c2"}, data, "resize_bilinear_224x224"),
        finetune.cache_meta(base, {**data, "image_size": [64, 64]}, "resize_bilinear_224x224"),
        finetune.cache_meta(base, {**data, "split": "test"}, "resize_bilinear_224x224"),
        finetune.cache_meta(base, {**data, "content_sha256": "h2"}, "resize_bilinear_224x224"),
        finetune.cache_meta(base, data, "none"),
    ]
    assert len({key, *(finetune.cache_key(meta) for meta in changed)}) == 1 + len(changed)


def test_a_corrupt_cache_file_is_recomputed(tmp_path):
    _features(tmp_path)
    for path in (tmp_path / "features").iterdir():
        path.write_bytes(b"not an npz")
    stored, state = _features(tmp_path)
    assert state == "miss" and stored["test"][0].shape == (6, 12, 12, 4)
    assert _features(tmp_path)[1] == "hit"


def test_unfreezing_leaves_exactly_the_layers_from_unfreeze_from_on_trainable():
    parts = finetune.build_parts(ToyBase(), ToyData(), cut_layer=None, head=HEAD)
    base = parts.base
    base.trainable = False
    assert finetune.unfreeze(base, "toy/conv2") == "conv2"  # the Grad-CAM style <base>/<layer> path too
    assert [(layer.name, layer.trainable) for layer in base.layers] == [
        ("input", False), ("normalize", False), ("conv1", False), ("conv2", True)]
    assert [v.path for v in parts.network.trainable_weights][:2] == ["conv2/kernel", "conv2/bias"]

    finetune.unfreeze(base, "conv1")
    assert [layer.trainable for layer in base.layers] == [False, False, True, True]
    with pytest.raises(ConvlabError, match="no layer 'block5_conv1' to unfreeze from; its layers are: input, "):
        finetune.unfreeze(base, "block5_conv1")


def test_the_classifier_nests_the_base_named_after_it_with_the_resize_in_front():
    import keras

    from runner.layers import find_layer

    parts = finetune.build_parts(ToyBase(), ToyData(20), cut_layer=None, head=HEAD)
    network = parts.network
    assert [layer.name for layer in network.layers] == [
        "image", "resize", "toy", "head_avg_pool", "head_dense", "head_dropout", "predictions"]
    assert isinstance(network.get_layer("toy"), keras.Model)
    assert find_layer(network, "toy/conv2").name == "conv2"
    assert network.input_shape == (None, 20, 20, 3) and network.output_shape == (None, 1)
    assert parts.cut_layer == "conv2" and parts.preprocessing == "resize_bilinear_16x16"
    with pytest.raises(ConvlabError, match="no layer 'nope' to cut at; its feature maps are: .*conv1, conv2"):
        finetune.build_parts(ToyBase(), ToyData(20), cut_layer="nope", head=HEAD)


def test_features_mode_refuses_augmentation():
    with pytest.raises(ConvlabError, match="task.mode=features cannot augment"):
        finetune.check_options("features", HEAD, augment=True)
    assert finetune.check_options("features", HEAD, augment=None) is False
    assert finetune.check_options("frozen", HEAD, augment=None) is True


# ----------------------------------------------------------------------------------------- end to end


@pytest.fixture
def cache_dir(tmp_path):
    """A cache of its own (empty features/) that shares the fetched wheels, data and converted models."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for shared in ("pypi", "npm", "datasets", "models"):
        target = cache_root() / shared
        target.mkdir(exist_ok=True)
        (cache / shared).symlink_to(target, target_is_directory=True)
    return cache


def _tiny(cache_dir) -> list[str]:
    return ["experiment=features", "dataset.image_size=48", "dataset.limit=8", "dataset.batch_size=4",
            "task.head.pooling=avg", "task.head.epochs=1", "task.finetune.epochs=1", "task.steps_per_epoch=2",
            "task.augmentation_samples=4", f"cache_dir={cache_dir}"]


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _load_model(mlflow_store, run_id):
    import mlflow

    from runner.tracking import load_keras_model

    mlflow.set_tracking_uri(mlflow_store)
    return load_keras_model(f"runs:/{run_id}/model")


def _latest(client):
    return max(all_runs(client), key=lambda run: run.info.start_time)


HEAD_PARAMS = 1280 * 256 + 256 + 257  # avg pool -> Dense 256 -> Dense 1 on MobileNetV2's 1280 channels


def _children(client):
    runs = all_runs(client)
    [parent] = [run for run in runs if run.data.tags.get("convlab.sweep") == "true"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(children, key=lambda run: run.info.start_time)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_features_sweep_computes_the_base_once(run_cli, mlflow_client, mlflow_store, cache_dir):
    run_cli("-m", *_tiny(cache_dir), "task.head.learning_rate=1e-3,1e-4")

    parent, (first, second) = _children(mlflow_client)
    assert [parent.info.status, first.info.status, second.info.status] == ["FINISHED"] * 3
    assert mlflow_client.get_experiment(parent.info.experiment_id).name == "features"  # the preset's
    assert first.data.tags["feature_cache"] == "miss" and second.data.tags["feature_cache"] == "hit"
    assert len(list((cache_dir / "features").glob("*.npz"))) == 3  # one file per split
    assert second.data.tags["finetune.cut_layer"] == "out_relu"
    assert second.data.tags["finetune.preprocessing"] == "resize_bilinear_224x224"
    assert second.data.params["task.mode"] == "features"

    metrics = second.data.metrics
    assert metrics["head_trainable_params"] == HEAD_PARAMS
    assert metrics["head_non_trainable_params"] > 2_000_000  # the frozen MobileNetV2 base
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert metrics["feature_extraction_seconds"] < first.data.metrics["feature_extraction_seconds"]
    for metric in ("accuracy", "loss", "val_accuracy", "val_loss"):
        assert [p.step for p in mlflow_client.get_metric_history(second.info.run_id, metric)] == [0], metric
    assert {"plots/accuracy.png", "plots/loss.png"} <= _artifacts(mlflow_client, second.info.run_id)
    assert mlflow_client.get_run(second.info.run_id).outputs.model_outputs  # the model, an MLflow LoggedModel
    # task.probes on the classifier, the head trained on stored features copied in before each probe
    probes = image_timelines(second.info.run_id, mlflow_client)
    assert probes and all(key.startswith("probe/test_") and steps == [0] for key, steps in probes.items())

    model, class_names = _load_model(mlflow_store, second.info.run_id)
    assert class_names == ["cats", "dogs"] and model.input_shape == (None, 48, 48, 3)
    base = model.get_layer("mobilenet_v2")  # task.layer=mobilenet_v2/out_relu for Grad-CAM
    assert base.layers[-1].name == "out_relu" and not base.trainable
    prediction = model.predict(np.zeros((2, 48, 48, 3), np.float32), verbose=0)
    assert prediction.shape == (2, 1) and np.all((prediction >= 0) & (prediction <= 1))

    # what Grad-CAM differentiates: the prediction with respect to the nested base's feature map
    import tensorflow as tf

    from runner.layers import feature_model

    probe = feature_model(model, ["mobilenet_v2/out_relu"], include_output=True)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        feature_map, output = probe(images)
        score = tf.reduce_sum(output)
    gradients = tape.gradient(score, feature_map).numpy()
    assert gradients.shape == (2, 7, 7, 1280) and np.isfinite(gradients).all() and np.abs(gradients).max() > 0
    np.testing.assert_allclose(output.numpy(), model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
@pytest.mark.slow
def test_frozen_and_finetune_modes_and_finetuning_a_logged_classifier(run_cli, mlflow_client, mlflow_store,
                                                                     cache_dir):
    import keras

    run_cli("-m", *_tiny(cache_dir), "task.mode=frozen,finetune")
    _parent, children = _children(mlflow_client)
    frozen, tuned = sorted(children, key=lambda run: run.data.params["task.mode"] != "frozen")
    assert [frozen.info.status, tuned.info.status] == ["FINISHED", "FINISHED"]

    # frozen: one phase, the head on the frozen base, with augmentation
    assert frozen.data.metrics["head_trainable_params"] == HEAD_PARAMS
    assert "finetune_trainable_params" not in frozen.data.metrics
    assert {"plots/augmentation.png", "plots/accuracy.png"} <= _artifacts(mlflow_client, frozen.info.run_id)
    assert mlflow_client.get_run(frozen.info.run_id).outputs.model_outputs

    # finetune: the head phase, then the base unfrozen from block_14_expand; one curve over both
    assert tuned.data.tags["finetune.unfreeze_from"] == "block_14_expand"
    metrics = tuned.data.metrics
    assert metrics["head_trainable_params"] == HEAD_PARAMS
    assert metrics["finetune_trainable_params"] > HEAD_PARAMS
    assert metrics["finetune_non_trainable_params"] < metrics["head_non_trainable_params"]
    assert (metrics["finetune_trainable_params"] + metrics["finetune_non_trainable_params"]
            == metrics["head_trainable_params"] + metrics["head_non_trainable_params"])
    assert [p.step for p in mlflow_client.get_metric_history(tuned.info.run_id, "val_loss")] == [0, 1]
    probes = image_timelines(tuned.info.run_id, mlflow_client)  # one probe per epoch of both phases
    assert probes and all(steps == [0, 1] for steps in probes.values())
    assert {"plots/accuracy.png", "plots/loss.png", "model_summary.txt", "model_summary_finetune.txt"} <= \
        _artifacts(mlflow_client, tuned.info.run_id)
    assert mlflow_client.get_run(tuned.info.run_id).outputs.model_outputs
    model, _ = _load_model(mlflow_store, tuned.info.run_id)
    base = model.get_layer("mobilenet_v2")
    assert isinstance(base, keras.Model)
    start = [layer.name for layer in base.layers].index("block_14_expand")
    weighted = [(i, layer.trainable) for i, layer in enumerate(base.layers) if layer.weights]
    assert all(trainable == (i >= start) for i, trainable in weighted)

    # fine-tuning the frozen run's classifier (model=from_run): its head is trained, only phase 2 runs
    run_cli(*_tiny(cache_dir), "task.mode=finetune", "model=from_run", f"model.run_id={frozen.info.run_id}",
            "task.unfreeze_from=mobilenet_v2/block_13_expand", "task.augment=false")
    later = _latest(mlflow_client)
    assert later.info.status == "FINISHED"
    assert later.data.tags["finetune.head_phase"].startswith("skipped")
    assert later.data.tags["finetune.unfreeze_from"] == "block_13_expand"
    assert "head_trainable_params" not in later.data.metrics
    assert later.data.metrics["finetune_trainable_params"] > metrics["finetune_trainable_params"]
    assert [p.step for p in mlflow_client.get_metric_history(later.info.run_id, "loss")] == [0]
    model, _ = _load_model(mlflow_store, later.info.run_id)
    assert model.get_layer("mobilenet_v2").get_layer("block_13_expand").trainable
