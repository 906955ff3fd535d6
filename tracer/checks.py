"""Validation at the boundary: each check raises one ``ValueError`` naming the argument, what
was given and what is valid, before any work is done.

Trace-time module (interventions validate their parameters with it): imports only torch.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Optional, Sequence

import torch


class SiteError(ValueError, IndexError):
    """A site, layer, row, position, head or value that does not exist or does not fit; the
    message names what was given and what is valid."""


def text(name: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def texts(name: str, values: Any) -> list[str]:
    """A non-empty list of non-empty strings (one string is one item)."""
    items = [values] if isinstance(values, str) else values
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"{name} must be a non-empty list of strings, got {values!r}")
    return [text(f"{name}[{i}]", v) for i, v in enumerate(items)]


def integer(name: str, value: Any, low: Optional[int] = None, high: Optional[int] = None,
            error: type = ValueError) -> int:
    """An int (not a bool or float; a 0-d integer tensor or a numpy integer is one) in
    ``[low, high]`` when those are given; ``error`` is the class raised."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value)
    elif not isinstance(value, (bool, torch.Tensor)) and str(getattr(value, "dtype", "")).startswith(("int", "uint")):
        value = operator.index(value)  # numpy's integers (np.int64 from argsort, arange, ...)
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "" if low is None else f">= {low}"
        hi = "" if high is None else f"<= {high}"
        raise error(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")
    return value


def integers(name: str, values: Any, error: type = ValueError) -> list[int]:
    """One int or a non-empty list of ints (strings, floats and bools refused)."""
    if isinstance(values, (str, bytes)):
        raise error(f"{name} must be an integer or a list of integers, got {values!r}")
    items = [values] if not isinstance(values, (list, tuple, range)) else list(values)
    if not items:
        raise error(f"{name}: an empty list selects nothing; give at least one, or None for all")
    return [integer(name, v, error=error) for v in items]


def indices(name: str, values: Any, size: int, what: str) -> list[int]:
    """A non-empty list of indices into ``size`` items (negative counts from the end), as
    non-negative ints; ``what`` names the items in the error."""
    if isinstance(values, (list, tuple, range)) and not len(values):
        raise ValueError(f"{name} is empty: give at least one of the {size} {what}, or None for all")
    out = []
    for v in integers(name, values):
        if not -size <= v < size:
            raise ValueError(f"{name}: {v} is out of range; there are {size} {what}, valid "
                             f"values are 0..{size - 1} (or -{size}..-1)")
        out.append(v % size)
    return out


def finite(name: str, value: Any) -> Any:
    """A number or tensor with no NaN or infinity."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a tensor, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def shape(name: str, value: torch.Tensor, want: Sequence[int], where: str) -> torch.Tensor:
    """``value`` broadcasts to ``want`` (the shape of what it is applied to)."""
    try:
        fits = tuple(torch.broadcast_shapes(tuple(value.shape), tuple(want))) == tuple(want)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, which does not fit {where} of "
                         f"shape {tuple(want)}")
    return value


def selected_rows(rows: Any, batch: int, name: str, error: type = ValueError) -> list[int]:
    """Row indices (None: all ``batch`` rows) checked against the batch, at site ``name``."""
    if rows is None:
        return list(range(batch))
    rows = integers(f"rows at site {name}", rows, error)
    for r in rows:
        if not -batch <= r < batch:
            raise error(f"row {r} out of range at site {name}: this invoke has {batch} "
                        f"rows, valid rows are 0..{batch - 1}")
    return [r % batch for r in rows]


def selected_positions(positions: Any, seq: int, n_rows: int, name: str,
                       error: type = ValueError) -> Optional[torch.Tensor]:
    """Positions (None: all; ints, or a ``(rows, P)`` tensor per row) as a ``(1 or rows, P)``
    tensor in ``0..seq-1``, checked at site ``name``."""
    if positions is None:
        return None
    if isinstance(positions, torch.Tensor):
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise error(f"positions at site {name} must be integers, got a {positions.dtype} tensor")
        if positions.numel() == 0:
            raise error(f"positions at site {name} select nothing: give at least one, or None for all")
        pos = positions.long()
        if pos.dim() == 1:
            pos = pos[None, :]
        if pos.dim() != 2 or pos.shape[0] not in (1, n_rows):
            raise error(f"per-row positions at site {name} must have shape (rows, P) "
                        f"with rows = {n_rows}; got {tuple(positions.shape)}")
    else:
        given = integers(f"positions at site {name}", positions, error)
        for p in given:  # before building a tensor: a huge int would overflow it
            if not -seq <= p < seq:
                raise error(f"position {p} out of range at site {name}: the sequence has "
                            f"{seq} tokens, valid positions are 0..{seq - 1} (or -{seq}..-1)")
        pos = torch.tensor(given, dtype=torch.long)[None, :]
    bad = (pos >= seq) | (pos < -seq)
    if bool(bad.any()):
        first = int(pos[bad][0])
        raise error(f"position {first} out of range at site {name}: the sequence has "
                    f"{seq} tokens, valid positions are 0..{seq - 1} (or -{seq}..-1)")
    return pos % seq
