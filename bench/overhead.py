"""Per-job overhead: ``python -m bench.overhead [--runs N]``.

A tiny job (the small convnet, 48 px, 16 images a split, 1 training step, validation, test evaluation,
the model saved) run two ways, alternately, each in a fresh Python process as a user starts it:

* ``convlab``: ``python -m runner task=train ...`` into a sqlite MLflow store that earlier jobs used
  (params, tags, config artifacts, per-epoch metrics, curves, test metrics, the logged model);
* ``convlab_first``: the same into a fresh store, as a user's first job (MLflow creates its tables);
* ``bare``: the same Keras work written as a plain script, nothing recorded;
* ``import``: ``python -c "import tensorflow, keras"``, the floor both pay.

Prints the median and spread (min-max) of the wall times and of the CPU time each child process used
(user + system, all its threads: on shared CPUs the wall time swings with the other jobs' load, the CPU
time much less), and the overhead convlab adds over the bare script (difference of the medians).
``--profile`` also writes a cProfile of one convlab job timed in CPU seconds (``time.process_time``, so
the other jobs' load does not enter it) and ``python -X importtime`` of the CLI's imports.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOB = ["task=train", "dataset.image_size=48", "dataset.limit=16", "dataset.batch_size=16", "task.epochs=1",
       "task.steps_per_epoch=1", "task.augment=false"]

BARE = """
import keras
from keras import layers
from pathlib import Path
from runner.fetch import cache_root

root = cache_root(None) / "datasets" / "cats_vs_dogs"
def split(name):
    return keras.utils.image_dataset_from_directory(root / name, image_size=(48, 48), batch_size=16,
                                                    label_mode="int", shuffle=name == "train").take(1)
inputs = keras.Input((48, 48, 3))
x = layers.Rescaling(1 / 255)(inputs)
for filters in (32, 64, 128, 128):
    x = layers.MaxPooling2D(2)(layers.Conv2D(filters, 3, activation="relu")(x))
x = layers.Dense(512, activation="relu")(layers.Dropout(0.5)(layers.Flatten()(x)))
model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))
model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(split("train").repeat(), validation_data=split("validation"), epochs=1, steps_per_epoch=1, verbose=2)
print(model.evaluate(split("test"), verbose=0))
model.save(Path(__import__("tempfile").mkdtemp()) / "model.keras")
"""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``command`` run to its end in a fresh process."""
    start, cpu_start = time.perf_counter(), _children_cpu_s()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_s() - cpu_start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, cpu_seconds


def bench(runs: int = 5) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("CONVLAB_PARENT_RUN_ID", None)
    commands = {"convlab": [sys.executable, "-m", "runner", *JOB],
                "convlab_first": [sys.executable, "-m", "runner", *JOB],
                "bare": [sys.executable, "-c", BARE],
                "import": [sys.executable, "-c", "import tensorflow, keras"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        used = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        _timed(commands["convlab"], tmp, {**env, **used})  # the store's tables, data and caches made once
        for index in range(runs):
            for name, command in commands.items():
                fresh = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/first-{index}.db"}
                wall, cpu_s = _timed(command, tmp, {**env, **(fresh if name == "convlab_first" else used)})
                times[name].append(wall)
                cpu[name].append(cpu_s)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    return {"runs": runs, "times_s": times, "median_s": medians, "cpu_s": cpu, "cpu_median_s": cpu_medians,
            "overhead_s": medians["convlab"] - medians["bare"],
            "first_job_overhead_s": medians["convlab_first"] - medians["bare"],
            "cpu_overhead_s": cpu_medians["convlab"] - cpu_medians["bare"],
            "first_job_cpu_overhead_s": cpu_medians["convlab_first"] - cpu_medians["bare"],
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


def profile(target: Path) -> None:
    """cProfile of one convlab job (run in this process) and ``-X importtime`` of the CLI's import."""
    import pstats

    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        script = ("import cProfile, sys, time; sys.argv = ['convlab', *sys.argv[1:]]; "
                  "profiler = cProfile.Profile(time.process_time); "
                  "profiler.runctx('from runner.cli import main; main()', {}, {}); "
                  f"profiler.dump_stats({str(target)!r})")
        store = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        _timed([sys.executable, "-m", "runner", *JOB], tmp, store)  # a store earlier jobs used
        subprocess.run([sys.executable, "-c", script, *JOB], cwd=tmp, check=True, capture_output=True, env=store)
        imports = subprocess.run([sys.executable, "-X", "importtime", "-c", "import runner.cli"], cwd=tmp,
                                 capture_output=True, text=True, env=env).stderr
    rows = [line.split("|") for line in imports.splitlines() if line.startswith("import time:") and "|" in line]
    cumulative = sorted(((int(row[1]), row[2].rstrip()) for row in rows if row[1].strip().isdigit()),
                        reverse=True)
    print("slowest imports of `import runner.cli` (cumulative us):")
    for micros, name in cumulative[:15]:
        print(f"  {micros:>9}  {name}")
    print(f"\nprofile of one job into a used store ({target}), CPU seconds, top cumulative:")
    pstats.Stats(str(target)).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--profile", action="store_true", help="also profile one job and the CLI's imports")
    arguments = parser.parse_args()
    if arguments.profile:
        profile(Path(tempfile.gettempdir()) / "convlab-overhead.prof")
    results = bench(arguments.runs)
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    for name, values in results["times_s"].items():
        cpu = results["cpu_s"][name]
        print(f"{name:<14} wall median {results['median_s'][name]:5.1f} s (min {min(values):.1f}, max {max(values):.1f})"
              f"   CPU median {results['cpu_median_s'][name]:5.1f} s (min {min(cpu):.1f}, max {max(cpu):.1f})")
    print(f"convlab overhead over the bare script: {results['overhead_s']:.1f} s wall "
          f"({results['cpu_overhead_s']:.1f} s CPU) per job, {results['first_job_overhead_s']:.1f} s wall "
          f"({results['first_job_cpu_overhead_s']:.1f} s CPU) for the first job into a fresh store")


if __name__ == "__main__":
    main()
