"""PNG heatmaps for recipe results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from tracer.files import atomic


SCALES = ("auto", "unit", "symmetric")


def heatmap(values: np.ndarray, row_labels: Sequence, col_labels: Sequence, path: str | Path,
            title: str = "", xlabel: str = "", ylabel: str = "", cbar: str = "",
            cmap: str = "viridis", scale: str = "auto", marks: Sequence[tuple] = (),
            mark_label: str = "", line: Optional[float] = None) -> Path:
    """Write ``values`` (rows x cols) as a labelled heatmap PNG; returns the path.

    ``scale``: ``"auto"`` (the data's range), ``"unit"`` (fixed 0..1, for effects and
    probabilities: noise stays dark) or ``"symmetric"`` (around 0, a diverging map, for
    differences).  ``marks``: (row, col) cells outlined (e.g. chosen heads), named
    ``mark_label`` in the legend; ``line``: a value marked on the colorbar (e.g. chance).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * cols + 2.5), max(3.0, 0.22 * rows + 1.5)))
    limits: dict = {}
    if scale == "unit":
        limits = {"vmin": 0.0, "vmax": 1.0}
    elif scale == "symmetric":
        top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        limits, cmap = {"vmin": -top or -1.0, "vmax": top or 1.0}, "RdBu_r"
    im = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest", **limits)
    for n, (r, c) in enumerate(marks):
        ax.add_patch(matplotlib.patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red",
                                                  linewidth=1.2, label=mark_label if n == 0 else None))
    if marks and mark_label:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title(title, fontsize=9, wrap=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    step_c = max(1, cols // 24)
    step_r = max(1, rows // 32)
    ax.set_xticks(range(0, cols, step_c))
    ax.set_xticklabels([str(c) for c in list(col_labels)[::step_c]], rotation=60 if cols > 8 else 0,
                       fontsize=7, ha="right" if cols > 8 else "center")
    ax.set_yticks(range(0, rows, step_r))
    ax.set_yticklabels([str(r) for r in list(row_labels)[::step_r]], fontsize=7)
    bar = fig.colorbar(im, ax=ax, label=cbar)
    if line is not None:
        bar.ax.axhline(line, color="red", linewidth=1.5)
        bar.ax.text(-0.15, line, f"chance {line:g}", transform=bar.ax.get_yaxis_transform(),
                    color="red", fontsize=7, va="center", ha="right")
    return _write(fig, path)


def steering_plot(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Success and coherence against perplexity per steering method (points labelled with
    alpha), the clean run starred and its perplexity dotted; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    clean = [r for r in rows if r["method"] == "clean"]
    for ax, key, label in zip(axes, ("success", "coherence"),
                              ("intervention success (share of outputs naming the phrase)",
                               "coherence (mean token probability)")):
        for name in dict.fromkeys(r["method"] for r in rows):
            pts = [r for r in rows if r["method"] == name]
            style = "k*" if name == "clean" else "o-"
            ax.plot([r["perplexity"] for r in pts], [r[key] for r in pts], style, label=name,
                    markersize=10 if name == "clean" else 5)
            for r in pts:
                if r["alpha"] and name not in ("clean", "prompting"):
                    ax.annotate(f"{r['alpha']:g}", (r["perplexity"], r[key]), fontsize=7)
        if clean:
            ax.axvline(clean[0]["perplexity"], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("perplexity under the unsteered model (clean: dotted)")
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "steering: success and coherence vs perplexity (labels: alpha)", fontsize=9)
    return _write(fig, path)


def _write(fig: Any, path: str | Path) -> Path:
    """Lay out, write the figure as a PNG atomically, close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
