"""Models as MLflow models: logged with MLflow's Keras flavor (an MLflow 3 LoggedModel in Keras 3's
``.keras`` format, with a signature, an input example and pinned requirements), registered on request,
and loaded back from any MLflow model URI, including runs logged before (``model/model.keras`` artifacts).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow

from runner.errors import ConvlabError

MODEL_TAG = "convlab.logged_model"
MODEL_NAME = "model"  # the LoggedModel's name: ``runs:/<run id>/model`` resolves to it
#: what serving a logged model needs, pinned to the versions it was trained with (no inference at log time)
REQUIREMENTS = ("mlflow", "keras", "tensorflow", "numpy")
LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
SIGNATURE_IMAGES = 4


class _KerasFlavor:
    """``mlflow.keras`` whose model directory exists before it is saved into: MLflow 3.17's Keras flavor
    writes the input example before it creates the directory, so ``log_model(input_example=...)`` fails."""

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path, validate_serving_input=True, **kwargs):  # Model.log's option, not the flavor's
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


def pinned_requirements() -> list[str]:
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


def log_keras_model(model, class_names: list[str] | None, examples, with_optimizer: bool = False) -> str:
    """Log ``model`` to the active run as the MLflow model ``model``; return its LoggedModel id.

    ``examples``: the images it takes (a tf.data split of ``(images, labels)`` batches, or an array); its
    first images give the signature and the input example. The class names go into the model's metadata.
    Without ``with_optimizer`` the optimizer's slots are left out (RMSprop's double a Flatten head's size):
    the model loads compiled, and training it on starts a fresh optimizer with the same settings.
    """
    import numpy as np
    from mlflow.models import Model, infer_signature

    images = _first_images(examples)
    # the outputs' shape and dtype, without tracing a predict function for them (~0.3 s)
    outputs = np.zeros((len(images), *model.output_shape[1:]), np.dtype(model.outputs[0].dtype))
    signature = infer_signature(images, outputs)
    with _fresh_optimizer(model, keep=with_optimizer):
        info = Model.log(
            artifact_path=None, name=MODEL_NAME, flavor=_KerasFlavor, model=model, signature=signature,
            input_example=images[:1], pip_requirements=pinned_requirements(),
            # MLflow would load the saved model back and predict the example (only warning if it fails):
            # ~0.2 s CPU a job; tests/test_mlflow_models.py loads logged models back instead
            validate_serving_input=False,
            metadata={"class_names": list(class_names)} if class_names is not None else None,
        )
    mlflow.set_tag(MODEL_TAG, "true")
    return info.model_id


@contextlib.contextmanager
def _fresh_optimizer(model, keep: bool) -> Iterator[None]:
    """``model`` with an unbuilt copy of its optimizer (no slot variables) for the time of a save."""
    trained = getattr(model, "optimizer", None)
    if keep or trained is None:
        yield
        return
    model.optimizer = type(trained).from_config(trained.get_config())
    try:
        yield
    finally:
        model.optimizer = trained


def _first_images(examples):
    import numpy as np

    if not isinstance(examples, np.ndarray):
        examples = next(iter(examples))[0].numpy()
    return examples[:SIGNATURE_IMAGES].astype("float32")


def register_run_model(run_id: str, name: str) -> str:
    """Register the model run ``run_id`` logged under ``name``; return the new version."""
    outputs = mlflow.get_run(run_id).outputs
    model_ids = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    if not model_ids:
        raise ConvlabError(f"tracking.register_model={name}: this job logged no model to register",
                           fix="register the models of task=train or task=finetune, or drop tracking.register_model")
    version = mlflow.register_model(f"models:/{model_ids[-1]}", name)
    print(f"[convlab] registered models:/{name}/{version.version}")
    return version.version


def model_uri(reference: str) -> str:
    """An MLflow model URI for ``reference``: ``runs:/<id>/model``, ``models:/<name>/<version>``,
    ``models:/<name>@<alias>``, or a bare LoggedModel id (``m-<32 hex>``)."""
    return f"models:/{reference}" if LOGGED_MODEL_ID.match(reference) else reference


def download_keras_model(uri: str) -> Path:
    """The local ``.keras`` file of the model at ``uri`` (see :func:`model_uri`)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri(uri)))
    for candidate in (local / "data" / "model.keras", local / "model.keras", local):
        if candidate.is_file() and candidate.suffix == ".keras":
            return candidate
    raise ConvlabError(f"{uri} holds no Keras model", fix="point at a run logged by `convlab task=train`")


def load_keras_model(uri: str):
    """Load the model at ``uri`` (see :func:`model_uri`); returns ``(model, class_names or None)``.

    An MLflow model directory keeps the class names in its MLmodel metadata; runs logged before that
    (``model/model.keras``) keep them beside it in ``class_names.json``.
    """
    import keras

    model_file = download_keras_model(uri)
    with warnings.catch_warnings():  # a model logged without its optimizer's slots (log_keras_model)
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.models.load_model(model_file), _class_names(model_file)


def _class_names(model_file: Path) -> list[str] | None:
    from mlflow.models import Model

    mlmodel = model_file.parent.parent / "MLmodel"
    if mlmodel.is_file():
        return (Model.load(str(mlmodel)).metadata or {}).get("class_names")
    names_file = model_file.with_name("class_names.json")
    return json.loads(names_file.read_text()) if names_file.exists() else None
