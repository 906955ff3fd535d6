"""The web app's charts and downloads: results as Altair heatmaps and lines with their true
labels, as CSV and NPZ bytes, and an NPZ file's arrays as what the result viewer draws."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np


def long_table(values: np.ndarray, rows: list, cols: list, row_name: str, col_name: str,
               value_name: str) -> list[dict]:
    """A heatmap's cells as records (one per cell), for charts, tables and CSV."""
    return [{row_name: str(r), col_name: str(c), value_name: float(values[i, j]),
             "_row": i, "_col": j}
            for i, r in enumerate(rows) for j, c in enumerate(cols)]


def heatmap_chart(records: list[dict], row_name: str, col_name: str, value_name: str,
                  title: str, domain: Optional[tuple] = None, diverging: bool = False) -> Any:
    """An Altair heatmap whose tooltip shows the row, the column and the value: coloured over
    the data's own range (or ``domain``), or, ``diverging``, blue to red centred at 0."""
    import re

    import altair as alt

    field = re.sub(r"[^\w ]", "_", value_name)  # Vega reads quotes and brackets as a path
    if field != value_name:
        records = [{(field if k == value_name else k): v for k, v in r.items()} for r in records]
    if diverging:
        top = max((abs(r[field]) for r in records), default=1.0) or 1.0
        scale = alt.Scale(scheme="redblue", reverse=True, domain=[-top, top], domainMid=0)
    else:
        scale = alt.Scale(scheme="viridis", domain=list(domain)) if domain else alt.Scale(scheme="viridis")
    rows = list(dict.fromkeys(r[row_name] for r in records))
    cols = list(dict.fromkeys(r[col_name] for r in records))
    return (alt.Chart(alt.Data(values=records), title=title)
            .mark_rect()
            .encode(x=alt.X(f"{col_name}:O", sort=cols, title=col_name),
                    y=alt.Y(f"{row_name}:O", sort=rows, title=row_name),
                    color=alt.Color(f"{field}:Q", scale=scale, title=value_name),
                    tooltip=[alt.Tooltip(f"{row_name}:O"), alt.Tooltip(f"{col_name}:O"),
                             alt.Tooltip(f"{field}:Q", format=".4f", title=value_name)])
            .properties(height=max(200, 14 * len(rows))))


def line_chart(records: list[dict], x: str, y: str, title: str) -> Any:
    """An Altair line with points (x on a symmetric log scale when it spans decades)."""
    import altair as alt

    top = max((r[x] for r in records), default=1)
    scale = alt.Scale(type="symlog") if top > 10 else alt.Scale()
    return (alt.Chart(alt.Data(values=records), title=title).mark_line(point=True)
            .encode(x=alt.X(f"{x}:Q", scale=scale, title=x), y=alt.Y(f"{y}:Q", title=y),
                    tooltip=[alt.Tooltip(f"{x}:Q"), alt.Tooltip(f"{y}:Q", format=".3f")]))


def csv_bytes(records: list[dict]) -> bytes:
    import csv

    keys = [k for k in records[0] if not k.startswith("_")] if records else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


MAX_CHARTS = 8  # per NPZ file: the rest is a table of names and shapes


def npz_views(arrays: dict, info: dict) -> tuple[list, list[dict]]:
    """What the viewer draws of an NPZ file: its result grids (2-D numbers) as
    ``(name, grid, (row axis, labels), (column axis, labels))`` with the true labels where the
    file or its JSON holds them (a sweep's ``labels_*``, an interchange run's layers), at most
    ``MAX_CHARTS``; every other array as a row of a table (name, shape, min, max)."""
    labels = {k[len("labels_"):]: [str(x) for x in v] for k, v in arrays.items() if k.startswith("labels_")}
    axes = list(info.get("axes") or labels)
    layers = (info.get("config") or {}).get("layers")
    charts, rest = [], []
    for name, arr in arrays.items():
        if name.startswith("labels_"):
            continue
        grid = arr.dtype.kind in "fiu" and arr.ndim == 2 and len(charts) < MAX_CHARTS
        if not grid:
            numbers = arr.dtype.kind in "fiu" and arr.size
            rest.append({"array": name, "shape": str(tuple(arr.shape)),
                         "min": float(np.nanmin(arr)) if numbers else None,
                         "max": float(np.nanmax(arr)) if numbers else None})
            continue
        rows: tuple = ("row", list(range(arr.shape[0])))
        cols: tuple = ("column", list(range(arr.shape[1])))
        if len(axes) == 2 and all(a in labels for a in axes) and arr.shape == (len(labels[axes[0]]),
                                                                                 len(labels[axes[1]])):
            rows, cols = (axes[0], labels[axes[0]]), (axes[1], labels[axes[1]])
        elif isinstance(layers, list) and len(layers) == arr.shape[0]:  # an interchange run
            rows, cols = ("layer", layers), ("head" if arr.shape[1] > 1 else "heads", list(range(arr.shape[1])))
        charts.append((name, arr.astype(float), rows, cols))
    return charts, rest


