"""`python -m runner.prefetch`: fetch every offline data set and weight file the configs name, and convert
the weights to cached `.keras` files, so later runs and tests start without waiting on a registry."""

from __future__ import annotations

import sys
import time

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from runner.cli import CONFIG_DIR

OFFLINE_DATASETS = ("cats_vs_dogs", "mnist")
OFFLINE_MODELS = ("mobilenet_v2", "efficientnet_lite0", "vgg16_hed")


def prefetch(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for dataset in OFFLINE_DATASETS:
            _timed(f"dataset {dataset}", lambda: instantiate(_group(dataset, "dataset", overrides)).split("train"))
        for model in OFFLINE_MODELS:
            _timed(f"model {model}", lambda: instantiate(_group(model, "model", overrides)).build())


def _group(option: str, group: str, overrides: list[str]):
    return compose("config", overrides=[f"{group}={option}", *overrides])[group]


def _timed(what: str, action) -> None:
    start = time.perf_counter()
    action()
    print(f"[convlab] {what} ready ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    prefetch(sys.argv[1:])
