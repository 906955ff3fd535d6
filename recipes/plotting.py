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
            mark_label: str = "", line: Optional[float] = None, annotate: int = 5,
            note: str = "") -> Path:
    """Write ``values`` (rows x cols) as a labelled heatmap PNG; returns the path.

    ``scale``: ``"auto"`` (the data's own range, written on the colour bar), ``"unit"``
    (fixed 0..1) or ``"symmetric"`` (a diverging map centred at 0, for signed quantities
    such as a change from a baseline).  The ``annotate`` strongest cells carry their values.
    ``marks``: (row, col) cells outlined (e.g. chosen heads), named ``mark_label`` in the
    legend; ``line``: a value marked on the colour bar (e.g. chance); ``note``: a line under
    the axes (e.g. the baseline the values are measured from).  The layout is constrained,
    so no label or title is cut, and long titles are wrapped.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    width = max(5.0, 0.35 * cols + 3.0)
    fig, ax = plt.subplots(figsize=(width, max(3.2, 0.22 * rows + 2.0)), layout="constrained")
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    limits: dict = {}
    if scale == "unit":
        limits = {"vmin": 0.0, "vmax": 1.0}
    elif scale == "symmetric":
        top = max(abs(lo), abs(hi)) or 1.0
        limits, cmap = {"vmin": -top, "vmax": top}, "RdBu_r"
    elif lo == hi:
        limits = {"vmin": lo - 0.5, "vmax": hi + 0.5}  # one value: a mid colour, not the bottom
    im = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest", **limits)
    if annotate and finite.size > 1:
        key = np.abs(values) if scale == "symmetric" else values
        order = np.argsort(-np.nan_to_num(key, nan=-np.inf), axis=None)[:annotate]
        for flat in order:
            r, c = np.unravel_index(flat, values.shape)
            ax.text(c, r, f"{values[r, c]:.2g}", ha="center", va="center", fontsize=6,
                    color="black", bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.6, lw=0))
    for n, (r, c) in enumerate(marks):
        ax.add_patch(matplotlib.patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red",
                                                  linewidth=1.2, label=mark_label if n == 0 else None))
    if marks and mark_label:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    chars = max(40, int(width * 13))
    ax.set_title("\n".join(textwrap.fill(t, chars) for t in title.splitlines()) if title else "", fontsize=8)
    ax.set_xlabel(xlabel + (f"\n{textwrap.fill(note, chars)}" if note else ""), fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    step_c = max(1, cols // 24)
    step_r = max(1, rows // 32)
    ax.set_xticks(range(0, cols, step_c))
    tilt = cols > 8 or max((len(str(c)) for c in col_labels), default=0) * cols > width * 9
    ax.set_xticklabels([str(c) for c in list(col_labels)[::step_c]], rotation=40 if tilt else 0,
                       fontsize=7, ha="right" if tilt else "center")
    ax.set_yticks(range(0, rows, step_r))
    ax.set_yticklabels([str(r) for r in list(row_labels)[::step_r]], fontsize=7)
    span = f"range {lo:.3g} to {hi:.3g}" if finite.size else "no values"
    label = "\n".join(textwrap.wrap(cbar, 38)) + f"\n({span})"
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(label, fontsize=7)
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
    import matplotlib.ticker

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
        # plain numbers at the decades only: minor log ticks' labels run together
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("perplexity under the unsteered model (clean: dotted)")
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "steering: success and coherence vs perplexity (labels: alpha)", fontsize=9)
    return _write(fig, path)


def _node_place(name: str, n_heads: int, n_kv: int, n_layers: int) -> tuple[float, float]:
    """(x, y) of a circuit node: input at the top (y 0), layer L's heads on row L + 1 (x the
    head; a whole attention layer at the centre), a key-value group (its key and value
    inputs) a little above, at its heads' middle; the layer's MLP half a row lower in a
    column right of the heads; the logits at the bottom."""
    mid = (n_heads - 1) / 2
    if name == "input":
        return mid, 0.0
    if name == "logits":
        return mid, n_layers + 1.0
    layer, _, part = name[1:].partition(".")
    if name.startswith("m"):
        return n_heads + 0.5, int(layer) + 1.5
    if not part:  # the whole attention of a layer (output normed before it is added)
        return mid, int(layer) + 1.0
    k = int(part[1:])
    if part[0] == "g":
        size = n_heads // max(1, n_kv)
        return k * size + (size - 1) / 2, int(layer) + 0.55
    return float(k), int(layer) + 1.0


def circuit_graph(edges: Sequence[tuple], n_layers: int, n_heads: int, n_kv: int, path: str | Path,
                  title: str = "") -> Path:
    """A circuit as a layered graph PNG: each edge (sender, receiver, score) an arrow from
    the sender's node down to the receiver's, width by |score|, red positive and blue
    negative; query, key and value inputs drawn solid, dashed and dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt

    n_heads = max(1, n_heads)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.8 * n_heads + 4), max(4.5, 0.5 * (n_layers + 2) + 1.5)))
    top = max((abs(e[2]) for e in edges), default=1.0) or 1.0
    styles = {"q": "-", "k": "--", "v": ":"}
    used: dict = {}
    for sender, receiver, score in sorted(edges, key=lambda e: abs(e[2])):  # strongest on top
        x0, y0 = _node_place(sender, n_heads, n_kv, n_layers)
        x1, y1 = _node_place(receiver.split("<")[0], n_heads, n_kv, n_layers)
        kind = receiver.split("<")[1].rstrip(">") if "<" in receiver else ""
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(
            arrowstyle="-|>", color="tab:red" if score > 0 else "tab:blue",
            alpha=0.35 + 0.6 * abs(score) / top, linewidth=0.3 + 3.7 * abs(score) / top,
            linestyle=styles.get(kind, "-"), shrinkA=8, shrinkB=8, connectionstyle="arc3,rad=0.08"))
        used[sender] = used[receiver.split("<")[0]] = True
    for name in used:
        x, y = _node_place(name, n_heads, n_kv, n_layers)
        square = name.startswith("m") or name in ("input", "logits")
        group = ".g" in name
        ax.scatter([x], [y], s=200 if group else 360, marker="s" if square else "D" if group else "o",
                   color="white", edgecolor="grey" if group else "black", zorder=3)
        label = name.split(".", 1)[1] if "." in name else name  # the row says the layer
        ax.text(x, y, label, fontsize=7, ha="center", va="center", zorder=4)
    ax.set_ylim(n_layers + 1.6, -0.6)
    ax.set_xlim(-0.8, n_heads + 1.3)
    ax.set_yticks([0] + [layer + 1 for layer in range(n_layers)] + [n_layers + 1])
    ax.set_yticklabels(["input"] + [f"layer {layer}" for layer in range(n_layers)] + ["logits"], fontsize=7)
    ax.set_xticks(list(range(n_heads)) + [n_heads + 0.5])
    ax.set_xticklabels([f"h{h}" for h in range(n_heads)] + ["MLP"], fontsize=7)
    ax.set_xlabel("attention head (diamonds g: a key-value group's key/value inputs); MLPs right, "
                  "half a row below their layer's heads", fontsize=7)
    handles = [matplotlib.lines.Line2D([], [], color="tab:red", label="positive score"),
               matplotlib.lines.Line2D([], [], color="tab:blue", label="negative score")]
    handles += [matplotlib.lines.Line2D([], [], color="grey", linestyle=st, label=f"into {k} input")
                for k, st in styles.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.035), ncol=5,
              frameon=False)
    ax.set_title(title if len(title) < 110 else title[:107] + "...", fontsize=9)
    if not edges:
        ax.text(0.5, 0.5, "no edges", transform=ax.transAxes, ha="center", fontsize=12)
    return _write(fig, path)


def faithfulness_plot(sizes: Sequence[int], values: Sequence[float], path: str | Path, title: str = "",
                      of_edges: int = 0) -> Path:
    """Faithfulness against the number of edges kept (log scale past 0), with the clean (1)
    and corrupted (0) levels dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(list(sizes), list(values), "o-", color="tab:purple")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.text(0.99, 1.0, "clean", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", ha="right",
            color="grey")
    ax.text(0.99, 0.0, "corrupted", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", ha="right",
            color="grey")
    if max(sizes or [0]) > 10:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(-0.3, max(sizes or [1]) * (1.6 if max(sizes or [0]) > 10 else 1.05))
    ax.set_xticks(list(sizes))
    ax.set_xticklabels([str(k) for k in sizes], rotation=45 if len(sizes) > 6 else 0, fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel(f"edges in the circuit (top-k by |score|{f', of {of_edges}' if of_edges else ''})")
    ax.set_ylabel("faithfulness\n(circuit - corrupted) / (clean - corrupted)", fontsize=8)
    ax.set_title(title if len(title) < 80 else title[:77] + "...", fontsize=9)
    return _write(fig, path)


def _write(fig: Any, path: str | Path) -> Path:
    """Lay out, write the figure as a PNG atomically, close it."""
    import matplotlib.pyplot as plt

    if not fig.get_constrained_layout():
        fig.tight_layout()
    path = Path(path)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
