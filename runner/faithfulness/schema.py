"""``task.faithfulness`` of ``task=explain``: its settings, one place for each (no TensorFlow loaded)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runner.faithfulness.deletion import Substrate
from runner.faithfulness.road import DEFAULT_PERCENTILES, PERCENTILES
from runner.validation import bounded


@dataclass
class FaithfulnessConfig:
    """Deletion / insertion AUC and Average Drop / Increase of every map, ROAD on request (runner/faithfulness)."""

    enabled: bool = True
    steps: int = bounded(112, ge=1)  # RISE: 112 steps at 224 px (448 pixels a step)
    substrate: Substrate = Substrate.zero  # what deleted pixels become: zero (black) | mean (the image's colour)
    batch_size: int = bounded(32, ge=1)  # perturbed images per forward pass
    road: bool = False  # ROAD MoRF / LeRF with noisy linear imputation (a sparse solve per percentage and order)
    road_percentiles: list[float] = bounded(factory=lambda: [float(p) for p in DEFAULT_PERCENTILES],
                                            **dataclasses.asdict(PERCENTILES))  # percent of the pixels removed
