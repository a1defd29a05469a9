"""Pictures of the metrics: the deletion and insertion curves of a run's images (and ROAD's when measured)."""

from __future__ import annotations

import numpy as np

from runner.faithfulness import Faithfulness


def curves_figure(scores: Faithfulness, names: list[str], title: str):
    """Deletion (left) and insertion curves, one line per image, the AUC in the legend; with ROAD a third
    panel: MoRF (solid) and LeRF (dashed) over the percentage removed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = 3 if scores.road is not None else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4), sharey=True)
    left, right = axes[:2]
    for index, name in enumerate(names):
        left.plot(scores.fractions, scores.deletion_curves[index], label=f"{name} ({scores.deletion_auc[index]:.3f})")
        right.plot(scores.fractions, scores.insertion_curves[index],
                   label=f"{name} ({scores.insertion_auc[index]:.3f})")
    top = max(1.0, float(np.max([scores.deletion_curves.max(), scores.insertion_curves.max()])))
    for axis, kind in ((left, "deletion (AUC: lower is better)"), (right, "insertion (AUC: higher is better)")):
        axis.set(title=kind, xlabel="fraction of pixels", xlim=(0, 1), ylim=(0, top))
        axis.legend(fontsize=7)
    if scores.road is not None:
        _road_panel(axes[2], scores, names)
    left.set_ylabel("probability of the explained class")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _road_panel(axis, scores: Faithfulness, names: list[str]) -> None:
    road = scores.road
    for index, name in enumerate(names):
        line, = axis.plot(road.percentiles, road.morf_curves[index], label=f"{name} MoRF ({road.morf[index]:.3f})")
        axis.plot(road.percentiles, road.lerf_curves[index], linestyle="--", color=line.get_color(),
                  label=f"{name} LeRF ({road.lerf[index]:.3f})")
    axis.set(title="ROAD (MoRF low, LeRF high is better)", xlabel="percent of pixels removed (imputed)", xlim=(0, 100))
    axis.legend(fontsize=7)
