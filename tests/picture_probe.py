"""Run a script with a readability check of every figure ``recipes.plotting`` writes.

    python tests/picture_probe.py REPORT.json SCRIPT [ARGS ...]

Each figure is checked as it is written (drawn first, as ``savefig`` draws it):
- nothing cut: every text, tick label, title and colour bar lies inside the figure;
- labels present: a title, and tick labels on both axes of every axes with data;
- colours that carry the data: a heatmap whose values vary shows more than one colour,
  and as many colours as it has distinct values up to the colour map's resolution;
- a colour bar that says what it shows.
REPORT gets ``[{"path", "title", "rows", "cols", "colorbar", "problems": [...]}, ...]``.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np

PAD = 0.02  # inches of anti-aliasing slack at the figure's edge


def check(fig, path: str) -> dict:
    """What a reader of ``fig`` would trip on, with the labels it carries."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    problems = []
    box, tight = fig.bbox_inches, fig.get_tightbbox(renderer)
    if (tight.x0 < box.x0 - PAD or tight.x1 > box.x1 + PAD or tight.y0 < box.y0 - PAD
            or tight.y1 > box.y1 + PAD):
        problems.append(f"drawn extent {tight.bounds} leaves the figure {box.bounds}")
    main = [ax for ax in fig.axes if ax.images or ax.lines or ax.collections or ax.texts or ax.patches]
    images = [ax for ax in fig.axes if ax.images]
    bars = [ax for ax in fig.axes if not ax.images and ax.get_label() == "<colorbar>"]
    data_axes = [ax for ax in main if ax not in bars]
    title = " ".join(ax.get_title() for ax in data_axes).strip() or fig.get_suptitle()
    if not title:
        problems.append("no title")
    for ax in data_axes:
        if not [t for t in ax.get_yticklabels() if t.get_text()]:
            problems.append("an axes without row (y tick) labels")
        if not [t for t in ax.get_xticklabels() if t.get_text()] and not ax.get_xlabel():
            problems.append("an axes without column (x tick) labels")
    first = data_axes[0] if data_axes else None
    report = {"path": str(path), "title": title, "problems": problems, "colorbar": "",
              "rows": [t.get_text() for t in first.get_yticklabels()] if first else [],
              "cols": [t.get_text() for t in first.get_xticklabels()] if first else []}
    for ax in images:
        im = ax.images[0]
        values = np.ma.masked_invalid(np.asarray(im.get_array(), dtype=float))
        colours = im.to_rgba(values).reshape(-1, 4)
        distinct_values = len(np.unique(values.compressed().round(12)))
        distinct_colours = len({tuple(c) for c in np.round(colours, 3)})
        if distinct_values > 1 and distinct_colours < min(distinct_values, 2):
            problems.append(f"{distinct_values} distinct values drawn in one colour")
        if distinct_values > 1 and distinct_colours < min(distinct_values, 24) // 2:
            problems.append(f"{distinct_values} distinct values drawn in only {distinct_colours} colours")
        report["rows"] = [t.get_text() for t in ax.get_yticklabels()]
        report["cols"] = [t.get_text() for t in ax.get_xticklabels()]
        report["marks"] = sum(1 for p in ax.patches if not p.get_fill())
    for ax in bars:
        report["colorbar"] = ax.get_ylabel() or ax.get_xlabel()
        if not report["colorbar"]:
            problems.append("a colour bar without a label")
    if images and not bars:
        problems.append("a heatmap without a colour bar")
    return report


def recording(seen: list, write):
    """A stand-in for ``recipes.plotting._write`` that lays a figure out as ``write`` does,
    appends its ``check`` to ``seen``, then writes it with ``write``."""
    def wrapped(fig, path):
        if not fig.get_constrained_layout():
            fig.tight_layout()  # as _write lays it out, before the check draws it
        seen.append(check(fig, str(path)))
        return write(fig, path)
    return wrapped


def main() -> None:
    report_path, script, *args = sys.argv[1:]
    from recipes import plotting

    seen: list = []
    plotting._write = recording(seen, plotting._write)
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        Path(report_path).write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main()
