"""A Hydra callback for the launcher tests: each job writes where it ran (pid, host, and whether TensorFlow
was already imported in that process) into its output directory. Used via
``+hydra.callbacks.probe._target_=tests.launcher_probe.WhereJobsRun``."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class WhereJobsRun(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        record = {"pid": os.getpid(), "host": platform.node(), "tensorflow_loaded": "tensorflow" in sys.modules,
                  "parent_run_env": os.environ.get("CONVLAB_PARENT_RUN_ID")}
        (Path(config.hydra.runtime.output_dir) / "where.json").write_text(json.dumps(record))
