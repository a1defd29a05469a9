"""Runs whose process is gone: SIGKILL, the OOM killer or a lost machine leave a run RUNNING forever, since
nothing in the process can react. Each job's run records where it runs (pid + hostname tags) and a heartbeat
tag; afterwards a RUNNING run is *vanished* when

- it ran on this host and its pid is no longer alive (or is another process now), or
- it ran on another host and its heartbeat is older than ``stale_after_s`` (that host cannot be asked).

:func:`mark_vanished` ends such runs KILLED with the reason ``process vanished``; ``resume=true`` and
``model.run_id=latest`` call it before they choose runs, and ``convlab-runs --stale`` reports (``--mark``:
marks) them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator

PID_TAG = "convlab.pid"
PROCESS_START_TAG = "convlab.process_start"
HOST_TAG = "convlab.hostname"
HEARTBEAT_TAG = "convlab.heartbeat"
VANISHED = "process vanished"
#: a run on another host with no heartbeat for this long counts as vanished (tracking.stale_after_s)
STALE_AFTER_S = 900.0


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc): tells a live pid from a reused one."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def where_tags() -> dict[str, str]:
    """Tags that say which process runs this job."""
    pid = os.getpid()
    return {PID_TAG: str(pid), HOST_TAG: platform.node(), PROCESS_START_TAG: process_start(pid) or "",
            HEARTBEAT_TAG: str(time.time())}


@contextlib.contextmanager
def heartbeat(run_id: str, every_s: float) -> Iterator[None]:
    """Refresh the run's heartbeat tag every ``every_s`` seconds from a daemon thread while the job runs."""
    from mlflow.tracking import MlflowClient

    stop = threading.Event()
    client = MlflowClient()

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # a missed beat is harmless; the job must not die of it
                client.set_tag(run_id, HEARTBEAT_TAG, str(time.time()))

    thread = threading.Thread(target=beat, name="convlab-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)  # a beat in flight lands before the run ends, never after


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not started or process_start(pid) in (started, None)


def vanished_reason(run, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a RUNNING convlab run's process is gone (None: it may still be running, or the run is not RUNNING).

    A run from before these tags existed (no pid, no heartbeat) is judged by its start time."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or HOST_TAG not in tags:
        return None  # ended, or not made by convlab (another tool's runs in the same store are not ours to end)
    if tags.get(HOST_TAG) == platform.node() and tags.get(PID_TAG, "").isdigit():
        pid = int(tags[PID_TAG])
        return None if _alive(pid, tags.get(PROCESS_START_TAG, "")) else f"pid {pid} on {tags[HOST_TAG]} is gone"
    last = float(tags.get(HEARTBEAT_TAG) or run.info.start_time / 1000)
    age = (now if now is not None else time.time()) - last
    if age > stale_after_s:
        return f"no heartbeat from {tags.get(HOST_TAG, 'its host')} for {age:.0f} s (> {stale_after_s:.0f} s)"
    return None


def vanished_runs(client, experiment_ids: list[str], stale_after_s: float | None = None) -> list[tuple]:
    """``(run, why)`` for each RUNNING run in these experiments whose process is gone (``stale_after_s``:
    None is the job's ``tracking.stale_after_s``, else 900 s)."""
    if not experiment_ids:
        return []
    running = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=5000)
    now, limit = time.time(), STALE_AFTER_S if stale_after_s is None else stale_after_s
    return [(run, why) for run in running if (why := vanished_reason(run, now, limit))]


def mark_vanished(client, experiment_ids: list[str], stale_after_s: float | None = None) -> list[str]:
    """End every vanished run KILLED with the reason ``process vanished``; their ids (one line printed each)."""
    from runner.tracking import REASON_TAG

    marked = []
    for run, why in vanished_runs(client, experiment_ids, stale_after_s):
        client.set_tag(run.info.run_id, REASON_TAG, f"{VANISHED} ({why})")
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"[convlab] run {run.info.run_id} KILLED: {VANISHED} ({why})", file=sys.stderr)
        marked.append(run.info.run_id)
    return marked


def main(argv: list[str] | None = None) -> None:
    """``convlab-runs --stale [--mark]``: the RUNNING runs whose process is gone (exit 1 if any, unmarked)."""
    from mlflow.tracking import MlflowClient

    from runner.redact import redact

    parser = argparse.ArgumentParser(prog="convlab-runs", description=main.__doc__)
    parser.add_argument("--stale", action="store_true", required=True,
                        help="list RUNNING runs whose process vanished (SIGKILL, OOM, a lost machine)")
    parser.add_argument("--mark", action="store_true", help="end them KILLED with the reason 'process vanished'")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                        help="runs on other hosts: no heartbeat for this long counts as vanished (default 900)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    from runner.errors import ConvlabError
    from runner.tracking import open_store, sqlite_path

    path = sqlite_path(args.tracking_uri) if args.tracking_uri.startswith("sqlite:") else None
    if path is not None and not path.exists():
        print(f"[convlab] no tracking store at {args.tracking_uri}: no runs", file=sys.stderr)
        return
    try:
        open_store(args.tracking_uri)
    except ConvlabError as error:
        print(f"[convlab] {error}", file=sys.stderr)
        sys.exit(2)
    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if args.mark:
        marked = mark_vanished(client, experiments, args.stale_after)
        print(f"[convlab] {len(marked)} stale run(s) marked KILLED in {redact(args.tracking_uri)}")
        return
    stale = vanished_runs(client, experiments, args.stale_after)
    for run, why in stale:
        print(f"{run.info.run_id}  {run.info.run_name or ''}  RUNNING, {VANISHED}: {why}")
    print(f"[convlab] {len(stale)} stale run(s) in {redact(args.tracking_uri)}"
          + ("; `convlab-runs --stale --mark` ends them KILLED" if stale else ""))
    sys.exit(1 if stale else 0)


if __name__ == "__main__":
    main()
