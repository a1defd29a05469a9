"""Config checks that Hydra's composition cannot make, run on the composed config before any MLflow run
exists and before TensorFlow is imported: numeric ranges declared on the schema fields, and keys that are
no setting of their schema (``+task.epoch=3`` force-adds one past Hydra's own unknown-key check), and
required values left unset (``???``, e.g. ``dataset=folder`` without ``dataset.path``).

A schema field declares its range with :func:`bounded`::

    @dataclass
    class GradcamConfig:
        alpha: float = bounded(0.4, ge=0, le=1)
        top: int = bounded(3, ge=1)
        sizes: list[int] = bounded(factory=lambda: [64, 64], ge=1)   # every element
        steps: Optional[int] = bounded(None, ge=1)                   # null is always allowed
        levels: list[float] = bounded(factory=lambda: [10, 50], gt=0, lt=100, increasing=True)

and :func:`check_config` (called by the CLI) reports every value outside its range in one error.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.errors import ConvlabError

BOUNDS_KEY = "convlab.bounds"


class ConfigError(ConvlabError, CompactHydraException):
    """A config rejected before the job starts; Hydra prints a CompactHydraException without a traceback."""

    def __init__(self, problems: list[str], fixes: list[str]):
        super().__init__("[convlab] config rejected: " + "; ".join(problems), fix="; ".join(dict.fromkeys(fixes)))


@dataclass(frozen=True)
class Bounds:
    """Allowed numeric range: ``ge``/``gt`` below, ``le``/``lt`` above (None: unbounded on that side);
    ``increasing``: a list field must be non-empty and each element above the one before."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    increasing: bool = False

    def admits(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"


def bounded(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, increasing: bool = False) -> Any:
    """A dataclass field with a default (or default ``factory``) whose value must lie in the given range.

    None (null) always passes: a range applies to the values a field takes, not to "unset". For a list
    field the range applies to each element.
    """
    metadata = {BOUNDS_KEY: Bounds(ge=ge, gt=gt, le=le, lt=lt, increasing=increasing)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every out-of-range value, every key its schema lacks and every
    required value left unset."""
    problems: list[str] = []
    fixes: list[str] = []
    _check_node(cfg, "", problems, fixes, _choices(cfg))
    if problems:
        raise ConfigError(problems, fixes)


def check_sweep(config: DictConfig) -> None:
    """:func:`check_config` on every job of a basic-sweeper multirun (``task.epochs=1,0``), composed as the
    sweeper will compose them, so one bad value stops the sweep before its first job. Other sweepers
    (Optuna, ...) pick values as they go; their jobs are checked one by one when they start."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if OmegaConf.select(config, "hydra.sweeper._target_") != f"{BasicSweeper.__module__}.BasicSweeper":
        return
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    loader = GlobalHydra.instance().config_loader()
    for batch in BasicSweeper.split_arguments(overrides, None):
        for job_overrides in batch:
            check_config(loader.load_sweep_config(config, list(job_overrides)))


def _choices(cfg: DictConfig) -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    choices = OmegaConf.select(cfg, "hydra.runtime.choices")
    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    return {str(group): str(choice) for group, choice in (choices or {}).items()}


def _check_node(node: DictConfig, prefix: str, problems: list[str], fixes: list[str],
                choices: dict[str, str]) -> None:
    schema = OmegaConf.get_type(node)
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        key = str(key)
        path = f"{prefix}{key}"
        if key == "hydra" and not prefix:
            continue
        if fields is not None and key not in fields:
            _unknown_key(node, key, path, prefix, fields, problems, fixes, choices)
            continue
        child = node._get_node(key)
        if child._is_missing() and not isinstance(child, DictConfig):
            problems.append(f"{path} is not set")
            fixes.append(f"pass {path}=<value>")
            continue
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_node(child, f"{path}.", problems, fixes, choices)
        bounds = fields[key].metadata.get(BOUNDS_KEY) if fields is not None else None
        if bounds is not None:
            _check_range(node, key, path, bounds, problems, fixes)


def _check_range(node: DictConfig, key: str, path: str, bounds: Bounds, problems: list[str], fixes: list[str]) -> None:
    problem = range_problem(path, node[key], bounds)
    if problem:
        problems.append(problem[0])
        fixes.append(problem[1])


def range_problem(path: str, value: Any, bounds: Bounds) -> tuple[str, str] | None:
    """(problem, fix) when ``value`` (a number or a list of them) is outside ``bounds``, else None; for a
    library that checks its arguments by the same rule as a schema field."""
    values = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    shown = value if isinstance(value, (int, float)) else list(values)
    bad = [v for v in values if v is not None and not isinstance(v, bool) and not bounds.admits(v)]
    if bad:
        return (f"{path}={shown} must be {bounds.describe()}"
                + (" (each element)" if len(values) > 1 or not isinstance(value, (int, float)) else ""),
                f"set {path} {bounds.describe()}")
    if bounds.increasing and (not values or any(b <= a for a, b in zip(values, values[1:]))):
        example = sorted(set(values)) if values else "[10, 50]"
        return (f"{path}={shown} must be a non-empty list in increasing order",
                f"set {path} to increasing values, each once, e.g. {example}")
    return None


def _unknown_key(node: DictConfig, key: str, path: str, prefix: str, fields: dict, problems: list[str],
                 fixes: list[str], choices: dict[str, str]) -> None:
    settings = [name for name in fields if not name.startswith("_")]
    close = difflib.get_close_matches(key, settings, n=1)
    suggestion = f"; did you mean {prefix}{close[0]}?" if close else ""
    problems.append(f"{path} is not a setting of {_owner(prefix, choices)}{suggestion}")
    if close:
        fixes.append(f"write {prefix}{close[0]}={node._get_node(key)._value()} (no leading +)")
    else:
        fixes.append(f"drop it; the settings of {_owner(prefix, choices)} are: {', '.join(settings)}")


def _owner(prefix: str, choices: dict[str, str]) -> str:
    """``task=train`` for a config group's node, else the node's path."""
    path = prefix.rstrip(".")
    if not path:
        return "the config"
    return f"{path}={choices[path]}" if path in choices else path


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
