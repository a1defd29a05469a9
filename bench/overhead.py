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

``--imports`` times the imports alone, each in a fresh process, alternating: the CPU seconds each step adds
over the ones before it (TensorFlow + Keras, then ``runner.cli``, then MLflow's SQL store opened at head; and
the other order), and serial vs threaded (MLflow and its store in a thread while the main thread imports
TensorFlow: wall and CPU, and the CPU / wall ratio, which exceeds 1 only when the two run in parallel).
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


IMPORT_STEPS = """
import sys, threading, time
def tensorflow_and_keras():
    import keras, tensorflow
    tensorflow.config.list_physical_devices()
def convlab_cli():
    import runner.cli
def sql_store():
    import mlflow.store.tracking.sqlalchemy_store
    from mlflow.tracking import MlflowClient
    MlflowClient(tracking_uri=sys.argv[2]).search_experiments(max_results=1)
steps = {"tf": tensorflow_and_keras, "cli": convlab_cli, "store": sql_store}
start, cpu_start = time.perf_counter(), time.process_time()
if sys.argv[1] == "threaded":
    thread = threading.Thread(target=lambda: (convlab_cli(), sql_store()))
    thread.start()
    tensorflow_and_keras()
    thread.join()
    print("total", time.process_time() - cpu_start, time.perf_counter() - start)
else:
    for name in sys.argv[1].split(","):
        cpu = time.process_time()
        steps[name]()
        print(name, time.process_time() - cpu)
    print("total", time.process_time() - cpu_start, time.perf_counter() - start)
"""
IMPORT_ORDERS = ("tf,cli,store", "cli,store,tf", "threaded")


def bench_imports(runs: int = 3) -> dict:
    """CPU seconds per import step (both orders) and serial vs threaded wall / CPU, alternating fresh processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    figures: dict[str, dict[str, list[float]]] = {order: {} for order in IMPORT_ORDERS}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        subprocess.run([sys.executable, "-c", IMPORT_STEPS, "store", uri], env=env, check=True, capture_output=True)
        for _ in range(runs):
            for order in IMPORT_ORDERS:
                lines = subprocess.run([sys.executable, "-c", IMPORT_STEPS, order, uri], env=env, check=True,
                                       capture_output=True, text=True).stdout.splitlines()
                print(f"  {order}: {' '.join(lines)} (load {os.getloadavg()[0]:.1f})", flush=True)
                for line in lines:
                    name, *values = line.split()
                    if name == "total":
                        figures[order].setdefault("cpu", []).append(float(values[0]))
                        figures[order].setdefault("wall", []).append(float(values[1]))
                    else:
                        figures[order].setdefault(name, []).append(float(values[0]))
    return {"runs": runs, "figures": figures, "load_average_before": load_before,
            "load_average_after": os.getloadavg()}


def report_imports(results: dict) -> None:
    print(f"imports alone, {results['runs']} alternating rounds, median (min-max) in seconds; "
          f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    for order, figures in results["figures"].items():
        shown = "  ".join(f"{name} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                          for name, values in figures.items())
        ratio = statistics.median(c / w for c, w in zip(figures["cpu"], figures["wall"]))
        print(f"  {order:<14} {shown}  CPU/wall {ratio:.2f}")


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
    parser.add_argument("--imports", action="store_true", help="only time the imports (orders, threaded)")
    arguments = parser.parse_args()
    if arguments.imports:
        report_imports(bench_imports(arguments.runs))
        return
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
