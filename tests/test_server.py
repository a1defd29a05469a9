"""convlab against a real MLflow tracking server on PostgreSQL (.ci/server.sh, what `make server` runs):
a sweep seen over HTTP and in the database, an outage in the middle of a run, a server that is down."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY_TRAIN
from tests.infra import artifact_paths, convlab, free_port, report, tracking_server, unavailable

pytestmark = [pytest.mark.server, pytest.mark.e2e]

PNG = b"\x89PNG\r\n\x1a\n"
TRAIN_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tracking_server(tmp_path_factory.mktemp("tracking-server")) as running:
        yield running


def _runs(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_three_job_sweep_is_seen_over_http_and_in_postgresql_without_secrets(server, tmp_path):
    secret = f"convlab-secret-{secrets.token_hex(8)}"
    proc = convlab("-m", "tracking=server", "tracking.experiment=sweep3", *TINY_TRAIN, "task.augment=false",
                   "task.learning_rate=0.001,0.002,0.003", cwd=tmp_path, tracking_uri=server.uri,
                   env={"MLFLOW_TRACKING_USERNAME": "convlab", "MLFLOW_TRACKING_PASSWORD": secret,
                        "AWS_SECRET_ACCESS_KEY": secret})
    report(f"3-job sweep (basic launcher, tiny train) against mlflow server + PostgreSQL: {proc.seconds:.1f} s")

    client = MlflowClient(tracking_uri=server.uri)
    runs = _runs(client, "sweep3")
    [parent] = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["task.learning_rate"] for c in children) == ["0.001", "0.002", "0.003"]
    for child in children:
        assert child.data.params["model.name"] == "small_convnet"
        assert child.data.params["dataset.image_size"] == "48"
        for metric in TRAIN_METRICS:
            assert [p.step for p in client.get_metric_history(child.info.run_id, metric)] == [0], metric
        assert 0.0 <= child.data.metrics["test_accuracy"] <= 1.0
        # artifacts go through the server (mlflow-artifacts:), land in its --artifacts-destination
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {"plots/accuracy.png", "plots/loss.png", "config/config.yaml"} <= \
            artifact_paths(client, child.info.run_id)
        assert client.get_run(child.info.run_id).outputs.model_outputs  # the model, an MLflow LoggedModel
        local = client.download_artifacts(child.info.run_id, "plots/accuracy.png", str(tmp_path))
        assert Path(local).read_bytes().startswith(PNG)
    assert len(list(server.artifacts.rglob("plots/accuracy.png"))) == 3

    # the same, read from PostgreSQL's tables
    ids = {r.info.run_id for r in runs}
    with server.pg.connect(server.pg_database) as db:
        rows = db.execute("SELECT r.run_uuid, r.status FROM runs r JOIN experiments e "
                          "ON r.experiment_id = e.experiment_id WHERE e.name = 'sweep3'").fetchall()
        assert {row[0] for row in rows} == ids and {row[1] for row in rows} == {"FINISHED"}
        nested = db.execute("SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = %s",
                            (parent.info.run_id,)).fetchall()
        assert {row[0] for row in nested} == {c.info.run_id for c in children}
        rates = db.execute("SELECT value FROM params WHERE key = 'task.learning_rate' AND run_uuid = ANY(%s)",
                           (list(ids),)).fetchall()
        assert sorted(row[0] for row in rates) == ["0.001", "0.002", "0.003"]
        points = db.execute("SELECT run_uuid, step FROM metrics WHERE key = 'loss' AND run_uuid = ANY(%s)",
                            (list(ids),)).fetchall()
        assert sorted(points) == sorted((c.info.run_id, 0) for c in children)
        # security: no credential from the environment in any param, tag or stored config
        leaked = db.execute("SELECT 'params', key FROM params WHERE value LIKE %s UNION ALL "
                            "SELECT 'tags', key FROM tags WHERE value LIKE %s",
                            (f"%{secret}%", f"%{secret}%")).fetchall()
        assert leaked == []
    for child in children:
        assert "tracking.uri" not in child.data.params
        assert not any(key.startswith(("env.", "MLFLOW_", "AWS_")) for key in child.data.params)
        config_dir = Path(client.download_artifacts(child.info.run_id, "config", str(tmp_path / child.info.run_id)))
        for file in config_dir.rglob("*"):
            if file.is_file():
                assert secret not in file.read_text(errors="replace"), file
    assert secret not in proc.stdout + proc.stderr
    assert not any(secret in path.read_text(errors="replace") for path in tmp_path.rglob("*.log"))


@pytest.mark.search
def test_an_optuna_sweep_against_the_server_nests_its_trials_and_names_the_best_over_http(server, tmp_path):
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ModuleNotFoundError:
        unavailable("hydra-optuna-sweeper is not installed: pip install -e '.[search]'")
    proc = convlab("-m", "tracking=server", f"hydra.searchpath=[file://{REPO}/tests/conf]", "task=quadratic",
                   "dataset.limit=8", "hparams_search=quadratic_optuna", "task.fail_above=0.7",
                   "tracking.experiment=optuna_server", cwd=tmp_path, tracking_uri=server.uri, expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # a failed trial is reported, the study went on
    report(f"4-trial Optuna sweep (quadratic task) against mlflow server + PostgreSQL: {proc.seconds:.1f} s")

    client = MlflowClient(tracking_uri=server.uri)
    runs = _runs(client, "optuna_server")
    [parent] = [r for r in runs if r.data.tags.get("convlab.sweep") == "true"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 4 and len(runs) == 5
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert finished and all(float(t.data.params["task.x"]) > 0.7 for t in trials if t.info.status == "FAILED")
    best = client.get_run(parent.data.tags["convlab.best_run_id"])
    assert float(parent.data.tags["convlab.best_value"]) == best.data.metrics["score"] == max(
        t.data.metrics["score"] for t in finished)
    assert {"sweep/summary.csv", "sweep/children.json", "sweep/optimization_history.png"} <= \
        artifact_paths(client, parent.info.run_id)


def test_the_server_stopped_in_the_middle_of_a_run_loses_no_metric_point(server, tmp_path):
    """MLflow's client retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, backoff factor 2: 0, 4, 8, 16 ... s,
    about 4 minutes in all) while Keras' MlflowCallback logs asynchronously: measured here, defaults kept."""
    epochs = 150
    args = ["tracking=server", "tracking.experiment=outage",
            *[a for a in TINY_TRAIN if not a.startswith("task.epochs")], f"task.epochs={epochs}", "task.augment=false"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "PYTHONPATH": str(REPO)}
    env.pop("CONVLAB_PARENT_RUN_ID", None)
    log = tmp_path / "job.log"
    client = MlflowClient(tracking_uri=server.uri)
    started = time.monotonic()
    with open(log, "w") as out:
        job = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and job.poll() is None:
                runs = _runs(client, "outage")
                if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"training never logged two epochs:\n{log.read_text()[-3000:]}")
            [run] = runs
            down_at = time.time()
            server.stop()
            time.sleep(5)
            server.start()
            up_at = time.time()
            job.wait(timeout=420)
        finally:
            job.kill()
    output = log.read_text()
    assert job.returncode == 0, output[-4000:]

    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    histories = {m: client.get_metric_history(run.info.run_id, m) for m in TRAIN_METRICS}
    for metric, history in histories.items():
        assert sorted(p.step for p in history) == list(range(epochs)), f"{metric}: points lost or doubled"
    during = [p for p in histories["loss"] if down_at * 1000 <= p.timestamp <= up_at * 1000]
    assert during, "no epoch ended while the server was down: the outage missed the training"
    retry_lines = [line for line in output.splitlines() if "Retrying (" in line]
    retries = re.findall(r"Retrying \(.*?\) after connection broken by '(\w+)", output)
    assert retries, "the client never retried"
    (REPO / "outputs").mkdir(exist_ok=True)
    (REPO / "outputs" / "outage-retries.log").write_text("\n".join(retry_lines) + "\n")
    # urllib3 counts down: total=6 on a request's 1st retry, total=0 on its 7th (MLflow's default maximum)
    worst = 7 - min(int(t) for t in re.findall(r"Retrying \(\w+\(total=(\d+)", output))
    assert client.get_run(run.info.run_id).outputs.model_outputs  # the model, logged after the outage
    report(f"outage: server down {up_at - down_at:.1f} s (stop + 5 s + restart) during a {epochs}-epoch run; "
           f"{len(during)} epochs ended meanwhile; client retries logged: {len(retries)} "
           f"({', '.join(sorted(set(retries)))}), at most {worst} for one request; "
           f"metric points lost: 0 of {epochs * len(TRAIN_METRICS)}; job {time.monotonic() - started:.1f} s")


def test_a_server_that_is_down_at_start_fails_fast_naming_its_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    for args in (["tracking=server"], ["-m", "tracking=server", "task.epochs=1,2"]):
        proc = convlab(*args, cwd=tmp_path, tracking_uri=uri, expect_ok=False, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.seconds < 60
        assert f"MLflow tracking server {uri} is not reachable" in proc.stderr
        assert "make server" in proc.stderr
        assert "Traceback" not in proc.stderr
    report(f"server down at start: convlab exits 1 in {proc.seconds:.1f} s naming {uri}")
