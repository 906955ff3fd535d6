"""pyvene's ``"t"`` unit: interventions at time steps of a recurrent model.

A GRU cell runs once per step, so ``unit_locations={"sources->base": (6, 3)}`` means: the
source's cell output at its seventh call replaces the base's at its fourth.  A step of the
base comes before a later step of the source in one batched pass, so the sources' values
are read first (``reads``: one collect per source step, all in one pass) and then written
as tensors at the base's steps (``writes``: one record per base step, in step order).  With
several steps per row, a row's k-th base step takes its k-th source step, as in pyvene.

pyvene 0.1.8 itself gets this unit wrong: it fails on batches of more than one row, and it
writes at every step (zeros where a row has no step), so ``{"base": 3}`` zeroes or swaps
every step; ``tests/test_pyvene_toy_models.py`` shows both beside hand-written hooks.
"""

from __future__ import annotations

from typing import Any

import torch

from ..interventions import Intervention, Source
from . import interventions as it


def _steps(positions: Any, rows: int) -> list[list[int]]:
    """Per destination row, its steps (a shared list or a per-row tensor)."""
    if positions is None:
        raise ValueError("a 't' unit needs its time steps: unit_locations={'base': 3} or "
                         "{'sources->base': (source step, base step)}")
    if isinstance(positions, torch.Tensor):
        grid = positions.tolist() if positions.dim() > 1 else [positions.tolist()]
    else:
        grid = [list(positions)]
    grid = grid * rows if len(grid) == 1 and rows > 1 else grid
    for row in grid:
        if any(s < 0 for s in row):
            raise ValueError(f"time steps count from 0 (got {row}): a recurrent model's steps "
                             f"have no end to count back from before it has run")
    return grid


def reads(records: list[Intervention]) -> tuple[list, list[Intervention]]:
    """Collect records reading every source step the ``"t"`` records need (one pass), and
    the key ``(record index, step)`` of each."""
    keys, out = [], []
    for k, record in enumerate(records):
        src = record.source
        if not isinstance(src, Source):
            continue
        for step in sorted({s for row in _steps(src.positions, len(src.row)) for s in row}):
            keys.append((k, step))
            out.append(Intervention(it.CollectIntervention(), f"{record.site}.i{step}",
                                    rows=list(src.row)))
    return keys, out


def writes(records: list[Intervention], values: dict) -> list[tuple[int, Intervention]]:
    """Per ``"t"`` record, one record per base step on the rows that intervene there, with
    the source values ``values[(record index, step)]`` (``reads``' collected values) as
    tensors; each as ``(record index, record)``."""
    out = []
    for k, record in enumerate(records):
        rows = list(record.rows)
        base = _steps(record.positions, len(rows))
        src = record.source
        src_steps = _steps(src.positions, len(rows)) if isinstance(src, Source) else None
        if src_steps is not None and any(len(a) != len(b) for a, b in zip(base, src_steps)):
            raise ValueError(f"{record.site}: each row needs as many source steps as base steps "
                             f"(got {src_steps} -> {base})")
        for step in sorted({s for row in base for s in row}):
            take = [i for i, row in enumerate(base) if step in row]
            source = src
            if src_steps is not None:
                source = torch.stack([values[(k, src_steps[i][base[i].index(step)])][i]
                                      for i in take])
            out.append((k, record.replace(site=f"{record.site}.i{step}", positions=None,
                                          rows=[rows[i] for i in take], source=source)))
    return out
