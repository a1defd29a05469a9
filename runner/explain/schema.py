"""Structured configs of ``task=explain`` and of each method (``conf/task/method/<name>.yaml``).

A method's schema is derived from the method's own dataclass (its fields are its settings), plus the
``_target_`` that instantiates it: one place for each setting and its default. Importing this module
loads no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from runner.explain import METHODS
from runner.explain.targets import Score
from runner.faithfulness.schema import FaithfulnessConfig
from runner.validation import bounded


@dataclass
class ExplainConfig:
    """``task=explain``: one attribution method (``task/method=<name>``) over the photos."""

    _target_: str = "tasks.explain.run"
    _partial_: bool = True
    method: Any = MISSING  # the task/method group
    layer: Optional[str] = None  # CAM family: None = the last 4-D non-pooling layer; input-space methods: None
    class_index: Optional[int] = None  # None: each image's top-1 class
    score: Score = Score.probability
    alpha: float = bounded(0.4, ge=0, le=1)
    top: int = bounded(3, ge=1)
    images: int = bounded(4, ge=1)  # images taken from a dataset split (dataset=photos: every photo)
    split: str = "test"
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)  # docs/faithfulness.md
    sanity: bool = False  # cascading + independent weight randomization (Adebayo et al. 2018)
    sanity_blocks: Optional[int] = bounded(None, ge=1)  # the top blocks randomized; None: every block


def method_schema(name: str) -> type:
    """``<Method>Config``: ``_target_`` and the fields of the method's dataclass, with their types and defaults."""
    module = importlib.import_module(f"runner.explain.{name}")
    cls = module.METHOD
    hints = typing.get_type_hints(cls)
    settings = [(f.name, hints[f.name], field(default=f.default, metadata=f.metadata)) for f in dataclasses.fields(cls)]
    target = ("_target_", str, field(default=f"{cls.__module__}.{cls.__name__}"))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", [target, *settings])


def explain_schemas() -> dict[str, dict[str, type]]:
    """``{group: {option: schema}}`` for runner.schema.SCHEMAS."""
    return {"task": {"explain": ExplainConfig}, "task/method": {name: method_schema(name) for name in METHODS}}
