"""Tracking stores that cannot be used say so in one line, naming the URI and the cause, before MLflow's ~100 s
of retries; a fresh SQLite store is created safely by jobs that start at the same moment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from runner import tracking
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_a_file_that_is_not_a_database_fails_the_cli_in_one_line(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_text("these are my notes, not a database\n" * 100)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner"], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 1
    [line, fix, *_] = [text for text in proc.stderr.splitlines() if text.startswith(("[convlab]", "  fix:"))]
    assert line == (f"[convlab] FAILED: MLflow tracking store sqlite:///{store} is unusable: {store} is not an "
                    "SQLite database (file is not a database)")
    assert fix.startswith(f"  fix: move {store} away")
    assert "Traceback" not in proc.stderr and "could not be created" not in proc.stderr  # no MLflow retries
    print(f"[measured] not-a-database store: exit 1 after {seconds:.1f} s (load {os.getloadavg()[0]:.1f})")


PROBE = """
import sys
from runner.errors import ConvlabError
from runner.tracking import open_store
for uri in sys.argv[1:]:
    try:
        open_store(uri)
        print("usable", uri)
    except ConvlabError as error:
        print(str(error).splitlines()[0])
"""


def test_a_read_only_or_full_filesystem_is_named_with_its_cause(tmp_path):
    """Real filesystems, in a private mount namespace (``unshare -rm``, no root needed where user namespaces
    are allowed): a read-only tmpfs, and a full one."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (user + mount namespaces) is not allowed here")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {ro} && mount -o remount,ro {ro} && "
              f"mount -t tmpfs -o size=256k tmpfs {full} && (head -c 10M /dev/zero > {full}/filler || true) && "
              f'exec "$0" -c "$1" sqlite:///{ro}/mlflow.db sqlite:///{full}/mlflow.db')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, PROBE], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        f"MLflow tracking store sqlite:///{ro}/mlflow.db is unusable: cannot write in {ro} (Read-only file system)",
        f"MLflow tracking store sqlite:///{full}/mlflow.db is unusable: cannot write in {full} "
        "(No space left on device)",
    ]


def test_a_store_failure_mid_run_is_one_line(tmp_path):
    """Real errors: SQLite refusing to grow (SQLITE_FULL, what a full disk gives) and a write to /dev/full."""
    import sqlalchemy

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    engine = sqlalchemy.create_engine(uri)
    with pytest.raises(sqlalchemy.exc.OperationalError) as full_db, engine.begin() as db:
        db.exec_driver_sql("CREATE TABLE metrics (value BLOB)")
        db.exec_driver_sql("PRAGMA max_page_count = 4")
        db.exec_driver_sql("INSERT INTO metrics VALUES (zeroblob(100000))")
    assert tracking.store_failure(full_db.value, uri) == \
        f"MLflow tracking store {uri} failed: database or disk is full"
    message = tracking.user_message(full_db.value)
    assert len(message.splitlines()) == 2 and "[SQL:" not in message and "fix:" in message

    with pytest.raises(OSError) as no_space, open("/dev/full", "w") as device:
        device.write("x")
        device.flush()
    assert tracking.store_failure(no_space.value, uri) == \
        f"MLflow tracking store {uri} failed: No space left on device"
    assert tracking.store_failure(ValueError("a bug"), uri) is None


STARTER = """
import sys, time
import mlflow
from runner.tracking import open_store
uri, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
open_store(uri)
mlflow.set_tracking_uri(uri)
experiment = mlflow.set_experiment("train")
with mlflow.start_run(experiment_id=experiment.experiment_id):
    mlflow.log_metric("loss", 1.0)
print("ok")
"""


@pytest.mark.e2e
def test_jobs_starting_at_once_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 12  # after every process has imported MLflow: they reach the store together
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, uri, str(start)], env=ENV, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "train"]
    assert len(client.search_runs([experiment.experiment_id])) == 2
