"""Pictures of the metrics: the deletion and insertion curves of a run's images."""

from __future__ import annotations

import numpy as np

from runner.faithfulness import Faithfulness


def curves_figure(scores: Faithfulness, names: list[str], title: str):
    """Deletion (left) and insertion (right) curves, one line per image, the AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for index, name in enumerate(names):
        left.plot(scores.fractions, scores.deletion_curves[index], label=f"{name} ({scores.deletion_auc[index]:.3f})")
        right.plot(scores.fractions, scores.insertion_curves[index],
                   label=f"{name} ({scores.insertion_auc[index]:.3f})")
    for axis, kind in ((left, "deletion (AUC: lower is better)"), (right, "insertion (AUC: higher is better)")):
        axis.set(title=kind, xlabel="fraction of pixels", xlim=(0, 1), ylim=(0, max(1.0, float(np.max(
            [scores.deletion_curves.max(), scores.insertion_curves.max()])))))
        axis.legend(fontsize=7)
    left.set_ylabel("probability of the explained class")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure
