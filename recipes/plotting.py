"""PNG heatmaps for recipe results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tracer.files import atomic


def heatmap(values: np.ndarray, row_labels: Sequence, col_labels: Sequence, path: str | Path,
            title: str = "", xlabel: str = "", ylabel: str = "", cbar: str = "",
            cmap: str = "viridis") -> Path:
    """Write ``values`` (rows x cols) as a labelled heatmap PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * cols + 2.5), max(3.0, 0.22 * rows + 1.5)))
    im = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    step_c = max(1, cols // 24)
    step_r = max(1, rows // 32)
    ax.set_xticks(range(0, cols, step_c))
    ax.set_xticklabels([str(c) for c in list(col_labels)[::step_c]], rotation=60 if cols > 8 else 0,
                       fontsize=7, ha="right" if cols > 8 else "center")
    ax.set_yticks(range(0, rows, step_r))
    ax.set_yticklabels([str(r) for r in list(row_labels)[::step_r]], fontsize=7)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    path = Path(path)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
