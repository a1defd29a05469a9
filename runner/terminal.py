"""What a job prints: no TensorFlow start-up chatter, progress bars only for a person at a terminal, and a
short summary at its end."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")

#: TensorFlow's C++ start-up lines (Abseil logs to fd 2 before InitializeLog; no environment variable
#: silences them): Abseil INFO/WARNING lines, the InitializeLog notice, the CPU-instructions note, and the
#: failed CUDA initialization of a machine without a GPU. Anything else written meanwhile is shown.
CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    r"|E\d{4} \d+:\d+:\d+\.\d+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .*rebuild TensorFlow"
)
#: metrics of the end-of-job summary: per-layer ones (``sparsity/<layer>``) stay in the UI
MAX_SUMMARY_METRICS = 8


@contextlib.contextmanager
def without_tensorflow_chatter() -> Iterator[None]:
    """Capture file descriptor 2 (where C++ writes) meanwhile, then write back what is not :data:`CHATTER`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not CHATTER.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow and Keras and initialize TF's devices, where it logs its start-up lines, quietly."""
    with without_tensorflow_chatter():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()


def watched() -> bool:
    """A person watches the job: stdout and stderr are both terminals (not a log file, a pipe or pytest)."""
    return all(hasattr(stream, "isatty") and stream.isatty() for stream in (sys.stdout, sys.stderr))


def fit_verbosity() -> int:
    """``verbose`` of Keras' ``fit``: its progress bar (1) for a person at a terminal, else one line per
    epoch (2), which a log keeps readable."""
    return 1 if watched() else 2


def progress(items: Iterable[Item], total: int | None, unit: str) -> Iterator[Item]:
    """``items`` with Keras' progress bar (``total`` of them, counted in ``unit``s) while :func:`watched`;
    else ``items`` as they are, printing nothing."""
    if not watched():
        yield from items
        return
    from keras.utils import Progbar

    bar = Progbar(total, unit_name=unit)
    for done, item in enumerate(items, start=1):
        yield item
        bar.update(done)


def say(line: str) -> None:
    """Print ``line`` for a person at a terminal (a heading above a progress bar); nothing in a log."""
    if watched():
        print(line, flush=True)


class CompiledProgress:
    """Keras' progress bar for a loop compiled into a ``tf.function`` (Score-CAM's masked batches, the
    ascent steps), where no Python runs between steps.

    While tracing, the loop calls :meth:`advance` after each step; while :func:`watched`, that traces a
    ``tf.py_function`` moving the bar by ``count`` once the step's ``after`` tensors exist, else nothing
    (the loop's graph is unchanged). Each run of the loop gets a new bar, which ends at ``total``. Counts
    are added, not set, so steps that run in parallel tick in any order."""

    def __init__(self, unit: str):
        self.unit = unit
        self._bar, self._done, self._lock = None, 0, threading.Lock()

    def advance(self, count, total, after=()) -> None:
        """Trace a tick of ``count`` of ``total`` (int tensors) after ``after`` (tensors; nests allowed)."""
        if not watched():
            return
        import tensorflow as tf

        with tf.control_dependencies(tf.nest.flatten(after)):
            tf.py_function(self._tick, [count, total], [])

    def _tick(self, count, total) -> None:
        from keras.utils import Progbar

        with self._lock:
            if self._bar is None:
                self._bar, self._done = Progbar(int(total), unit_name=self.unit), 0
            self._done += int(count)
            self._bar.update(self._done)
            if self._done >= int(total):
                self._bar = None


def print_summary(run_id: str) -> None:
    """``[convlab] run <id> FINISHED`` with the run's key metrics and its page in the MLflow UI (stdout)."""
    import mlflow

    from runner import mlflow_ui

    run = mlflow.MlflowClient().get_run(run_id)
    metrics = run.data.metrics
    key = sorted(name for name in metrics if "/" not in name) or sorted(metrics)
    shown = "  ".join(f"{name} {metrics[name]:.4g}" for name in key[:MAX_SUMMARY_METRICS])
    print(f"[convlab] run {run_id} {run.info.status}" + (f": {shown}" if shown else ""))
    print(f"[convlab] {mlflow_ui.run_url(run.info.experiment_id, run_id)}{mlflow_ui.how_to_open()}")
