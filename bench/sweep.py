"""Wall time of the 4-job head sweep of ``experiment=features`` with the feature cache vs without it:
``python bench/sweep.py`` (or ``python -m bench.sweep``).

Both sweeps run the real CLI in a subprocess, one after the other in this run::

    convlab -m experiment=features task.head.learning_rate=1e-4,2e-5 task.head.dropout=0.3,0.5

* cached: a fresh feature cache, so the first job computes the conv base (miss) and the others load it;
* disabled: ``task.feature_cache=false``, every job runs the conv base over every split.

Each sweep gets a temporary MLflow store and a temporary cache directory that shares the fetched wheels,
data and converted models of the default cache (so nothing is downloaded or converted inside the timing),
but not its ``features/``. Extra arguments are passed to both sweeps as Hydra overrides, e.g.
``python bench/sweep.py dataset.limit=200`` for a quicker, smaller run.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["-m", "experiment=features", "task.head.learning_rate=1e-4,2e-5", "task.head.dropout=0.3,0.5"]
SHARED_CACHE = ("pypi", "npm", "datasets", "models")


def timed_sweep(workdir: Path, overrides: list[str]) -> dict:
    """Run the sweep in ``workdir``; its wall time and the jobs' statuses and feature cache tags."""
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(REPO))
    from runner.fetch import cache_root

    cache = workdir / "cache"
    cache.mkdir(parents=True)
    for shared in SHARED_CACHE:
        target = cache_root() / shared
        target.mkdir(exist_ok=True)
        (cache / shared).symlink_to(target, target_is_directory=True)
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(REPO)}
    env.pop("CONVLAB_PARENT_RUN_ID", None)
    command = [sys.executable, "-m", "runner", *SWEEP, f"cache_dir={cache}", *overrides]
    print(f"[bench] {' '.join(command[2:])}", file=sys.stderr, flush=True)
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    if proc.returncode != 0:
        sys.exit(f"the sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attributes.start_time ASC"])
    jobs = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "jobs": len(jobs),
        "statuses": [run.info.status for run in jobs],
        "cache": [run.data.tags.get("feature_cache", "?") for run in jobs],
        "extraction_seconds": [run.data.metrics.get("feature_extraction_seconds", float("nan")) for run in jobs],
        "test_accuracy": [run.data.metrics.get("test_accuracy", float("nan")) for run in jobs],
    }


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_sweep(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="convlab-bench-sweep-") as tmp:
        cached = timed_sweep(Path(tmp) / "cached", overrides)
        disabled = timed_sweep(Path(tmp) / "disabled", ["task.feature_cache=false", *overrides])
    return {"cached": cached, "disabled": disabled, "speedup": disabled["seconds"] / cached["seconds"],
            "cpu_speedup": disabled["cpu_seconds"] / cached["cpu_seconds"],
            "load_average": os.getloadavg(), "overrides": overrides}


def _print_table(result: dict) -> None:
    overrides = " ".join(result["overrides"]) or "(none)"
    print(f"4-job sweep: {' '.join(SWEEP[1:])}; extra overrides: {overrides}; "
          f"load average {', '.join(f'{load:.1f}' for load in result['load_average'])}")
    print(f"{'feature cache':<15}{'wall s':>9}{'CPU s':>9}{'jobs':>6}  {'cache per job':<28}base/cache s per job")
    for name in ("cached", "disabled"):
        row = result[name]
        extraction = ", ".join(f"{s:.1f}" for s in row["extraction_seconds"])
        print(f"{name:<15}{row['seconds']:>9.1f}{row['cpu_seconds']:>9.1f}{row['jobs']:>6}  "
              f"{', '.join(row['cache']):<28}{extraction}")
    print(f"speed-up with the feature cache: {result['speedup']:.2f}x wall, {result['cpu_speedup']:.2f}x CPU "
          "(wall time depends on the machine's other load; CPU time less so)")


if __name__ == "__main__":
    _print_table(bench_sweep(sys.argv[1:]))
