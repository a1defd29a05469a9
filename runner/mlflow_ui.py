"""Where a run shows in the MLflow UI: experiments that open in its model-training view, and each run's link."""

from __future__ import annotations

import urllib.parse

import mlflow

#: the experiment's kind as MLflow 3 records it (the UI's experiment-kind hook reads this tag)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: MLflow 3.17's UI has that hook's feature flag on, which takes the view from this URL parameter (or the
#: sidebar's GenAI / Model training toggle, kept in the browser) instead of the tag; GenAI by default
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
#: where `make ui` serves a local store
LOCAL_UI = "http://127.0.0.1:5000"


def set_experiment(name: str):
    """``mlflow.set_experiment(name)``, marked as model training unless its kind is set already."""
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        experiment = mlflow.get_experiment(experiment.experiment_id)
    return experiment


def without_credentials(uri: str) -> str:
    """``uri`` without user, password, query or fragment: what may be printed."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return uri  # as given: a round trip would drop a slash of sqlite:////abs/path
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def _served() -> bool:
    return urllib.parse.urlsplit(mlflow.get_tracking_uri()).scheme in ("http", "https")


def run_url(experiment_id: str, run_id: str) -> str:
    """The run's page in the UI's model-training view: on the tracking server, or on `make ui` for a local store."""
    base = without_credentials(mlflow.get_tracking_uri()).rstrip("/") if _served() else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def how_to_open() -> str:
    """For a local store, the command that serves it on :data:`LOCAL_UI`."""
    if _served():
        return ""
    store = without_credentials(mlflow.get_tracking_uri())
    return " (after `make ui`)" if store == "sqlite:///mlflow.db" else f" (after `mlflow ui --backend-store-uri {store}`)"
