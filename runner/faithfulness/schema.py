"""``task.faithfulness`` of ``task=explain``: its settings, one place for each (no TensorFlow loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.faithfulness.deletion import Substrate
from runner.validation import bounded


@dataclass
class FaithfulnessConfig:
    """Deletion / insertion AUC and Average Drop / Increase of every map (runner/faithfulness)."""

    enabled: bool = True
    steps: int = bounded(112, ge=1)  # RISE: 112 steps at 224 px (448 pixels a step)
    substrate: Substrate = Substrate.zero  # what deleted pixels become: zero (black) | mean (the image's colour)
    batch_size: int = bounded(32, ge=1)  # perturbed images per forward pass
