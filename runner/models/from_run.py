"""A model logged by an earlier convlab run (``model=from_run model.run_id=<id>``)."""

from __future__ import annotations

import re

from runner.errors import ConvlabError
from runner.mlflow_models import model_uri
from runner.models.base import ModelSpec

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")
#: ``model.run_id=latest``: the most recent FINISHED run, in any experiment, that logged a model
LATEST = "latest"


def _latest_model_run() -> str:
    from mlflow.tracking import MlflowClient

    from runner.liveness import mark_vanished
    from runner.tracking import MODEL_TAG

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    mark_vanished(client, experiments)  # a model of a run killed before it ended must not pass for a result
    runs = client.search_runs(experiments, filter_string=f"tags.`{MODEL_TAG}` = 'true' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.end_time DESC"], max_results=1)
    if not runs:
        raise ConvlabError("model.run_id=latest: no finished run has logged a model in this tracking store",
                           fix="train one first (`convlab task=train`), or pass model.run_id=<id>")
    print(f"[convlab] model.run_id=latest -> {runs[0].info.run_id}")
    return runs[0].info.run_id


def _missing_model(uri: str) -> ConvlabError | None:
    """Why ``runs:/<id>/<path>`` holds no model: no such run here, or a run that logged other things
    (naming the run, its task and what it did log). None when neither explains the failure."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    match = RUNS_URI.match(uri)
    if not match:
        return None
    run_id, path = match["run_id"], match["path"].strip("/")
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return ConvlabError(f"there is no run {run_id} in the tracking store {_shown_store()}",
                            fix="check model.run_id, and use the tracking.uri / MLFLOW_TRACKING_URI of the run")
    logged = sorted(item.path + ("/" if item.is_dir else "") for item in client.list_artifacts(run_id))
    if path in {entry.rstrip("/") for entry in logged}:
        return None
    task = run.data.params.get("task.name") or client.get_experiment(run.info.experiment_id).name
    return ConvlabError(
        f"run {run_id} ({run.info.run_name}, task={task}, {run.info.status}) logged no {path}/; "
        f"it logged: {', '.join(logged) or 'no artifacts'}",
        fix="pick a run of task=train or task=finetune (they log model/), or model.run_id=latest for the newest",
    )


def _shown_store() -> str:
    import urllib.parse

    import mlflow

    uri = mlflow.get_tracking_uri()
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri  # (geturl() would also turn sqlite:////abs/path into sqlite://abs/path)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # never print credentials


class FromRun(ModelSpec):
    name = "from_run"

    def __init__(self, run_id: str | None = None, uri: str | None = None):
        if bool(run_id) == bool(uri):
            raise ConvlabError(
                "model=from_run needs exactly one of model.run_id and model.uri",
                fix="pass model.run_id=<32-hex MLflow run id> or model.uri=runs:/<run_id>/model",
            )
        if run_id and run_id != LATEST and not RUN_ID.match(run_id):
            raise ConvlabError(f"model.run_id={run_id!r} is not an MLflow run id (32 hex characters)",
                               fix="copy the run id from the MLflow UI or `mlflow runs list`, or use latest")
        self.uri = model_uri(uri) if uri else f"runs:/{_latest_model_run() if run_id == LATEST else run_id}/model"
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from runner.tracking import load_keras_model

            self._loaded = self._reporting_errors(load_keras_model)
        return self._loaded

    def weights_sha256(self) -> str:
        from runner.fetch import sha256_file
        from runner.tracking import download_keras_model

        return sha256_file(self._reporting_errors(download_keras_model))

    def _reporting_errors(self, load):
        try:
            return load(self.uri)
        except Exception as error:
            diagnosis = _missing_model(self.uri)
            if diagnosis:
                raise diagnosis from error
            if isinstance(error, ConvlabError):
                raise
            raise ConvlabError(f"cannot load a model from {self.uri}: {error}".splitlines()[0],
                               fix="check the run id and that the run logged a model "
                                   "(same tracking.uri / MLFLOW_TRACKING_URI)") from error

    @property
    def input_size(self):
        return tuple(self._load()[0].input_shape[1:3])

    @property
    def class_names(self):
        return self._load()[1]

    def build(self, input_shape=None, num_classes=None):
        model = self._load()[0]
        if input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
            raise ConvlabError(
                f"the model from {self.uri} takes inputs of shape {tuple(model.input_shape[1:])}, "
                f"the dataset gives {tuple(input_shape)}",
                fix="set dataset.image_size to the size the model was trained at",
            )
        return model
