"""Models as MLflow models: the Keras flavor's LoggedModel, its registry entries, every URI form
``model=from_run`` takes, the format runs logged before (``model/model.keras``), and serving."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from runner.mlflow_models import load_keras_model, log_keras_model, register_run_model
from runner.models.from_run import FromRun

CLASSES = ["cats", "dogs"]


def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(2, 3),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])


def _images(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, 8, 8, 3)).astype("float32")


@pytest.fixture(scope="module")
def logged(tracking):
    """A run that logged a tiny model the way task=train does, then registered it as ``tiny``."""
    model = _tiny_model()
    with mlflow.start_run() as run:
        mlflow.log_metric("test_accuracy", 0.75)
        model_id = log_keras_model(model, CLASSES, _images())
        register_run_model(run.info.run_id, "tiny")
    return model, run.info.run_id, model_id


def test_a_logged_model_is_an_mlflow_model_with_signature_example_pins_and_metrics(logged):
    import keras

    _, run_id, model_id = logged
    logged_model = mlflow.get_logged_model(model_id)
    assert logged_model.source_run_id == run_id and logged_model.name == "model"
    assert {metric.key: metric.value for metric in logged_model.metrics}["test_accuracy"] == 0.75

    info = mlflow.models.get_model_info(f"models:/{model_id}")
    assert "keras" in info.flavors
    [spec] = info.signature.inputs.inputs
    assert spec.shape == (-1, 8, 8, 3) and spec.type == np.dtype("float32")
    assert info.signature.outputs.inputs[0].shape == (-1, 2)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}"))
    assert (local / "input_example.json").is_file() and (local / "data" / "model.keras").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert f"keras=={keras.__version__}" in requirements and f"mlflow=={mlflow.__version__}" in requirements


@pytest.mark.parametrize("reference", ["runs", "registered version", "alias", "logged model id"])
def test_from_run_loads_the_same_model_from_every_uri_form(logged, reference):
    model, run_id, model_id = logged
    mlflow.MlflowClient().set_registered_model_alias("tiny", "champion", "1")
    uri = {"runs": f"runs:/{run_id}/model", "registered version": "models:/tiny/1",
           "alias": "models:/tiny@champion", "logged model id": model_id}[reference]
    spec = FromRun(uri=uri)
    assert spec.class_names == CLASSES
    assert spec.input_size == (8, 8)
    np.testing.assert_allclose(spec.build().predict(_images(), verbose=0), model.predict(_images(), verbose=0),
                               rtol=1e-6)


def test_runs_logged_before_mlflow_models_keep_loading(tracking):
    """Runs of earlier convlab versions hold ``model/model.keras`` + ``model/class_names.json`` artifacts."""
    model = _tiny_model()
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model.keras")
        (Path(tmp) / "class_names.json").write_text(json.dumps(CLASSES))
        mlflow.log_artifacts(tmp, "model")
    loaded, class_names = load_keras_model(f"runs:/{run.info.run_id}/model")
    assert class_names == CLASSES
    np.testing.assert_allclose(loaded.predict(_images(), verbose=0), model.predict(_images(), verbose=0), rtol=1e-6)
    assert FromRun(run_id=run.info.run_id).class_names == CLASSES


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.serving
def test_mlflow_models_serve_answers_like_model_predict(logged):
    """``mlflow models serve -m models:/tiny/1 --env-manager local``, one real image posted to it."""
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    if mlflow_cli is None:
        pytest.skip("the mlflow command is not installed beside this Python")
    model, _, _ = logged
    port = _free_port()
    # the server runs `uvicorn` from PATH, as in an activated virtualenv
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": f"{Path(mlflow_cli).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", "models:/tiny/1", "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        image = _images(1)
        answer = _post_when_up(f"http://127.0.0.1:{port}/invocations", {"inputs": image.tolist()}, server)
        np.testing.assert_allclose(np.array(answer["predictions"]), model.predict(image, verbose=0), rtol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _post_when_up(url: str, payload: dict, server: subprocess.Popen, timeout: float = 180) -> dict:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited {server.returncode}:\n{server.stderr.read()[-3000:]}")
        try:
            response = requests.post(url, json=payload, timeout=30)
        except requests.ConnectionError:
            time.sleep(1)
            continue
        assert response.status_code == 200, response.text
        return response.json()
    pytest.fail(f"mlflow models serve did not answer on {url} within {timeout:.0f} s")
