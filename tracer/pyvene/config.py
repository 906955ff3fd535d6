"""pyvene's configuration objects and unit locations, read into Interlace's terms.

A config names components the pyvene way (``{"layer": 3, "component": "mlp_output"}``), as
an Interlace site or alias, or as a module path; unit locations follow pyvene:
``{"sources->base": 4}``, ``{"sources->base": (src, base)}`` with each side an int, a list of
positions, ``[batch][positions]`` or ``[intervention][batch][positions]``; ``{"base": ...}``
when there is no source.  For ``"h.pos"`` units each side is
``[heads_locations, position_locations]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import torch

from ..interventions import Source

UNITS = ("pos", "h", "h.pos", "t")  # t: a recurrent model's time step (tracer.pyvene.steps)


@dataclass
class RepresentationConfig:
    """Where one intervention goes (pyvene's ``RepresentationConfig``; its fields in
    pyvene's order, so positional tuples read the same; ``name`` is Interlace's key)."""

    layer: Optional[int] = None
    component: str = "block_output"
    unit: str = "pos"
    max_number_of_units: int = 1
    low_rank_dimension: Optional[int] = None
    intervention_type: Any = None
    intervention: Any = None
    subspace_partition: Any = None
    group_key: Any = None
    intervention_link_key: Any = None
    moe_key: Any = None
    source_representation: Any = None
    hidden_source_representation: Any = None
    latent_dim: Optional[int] = None
    name: Optional[str] = None

    def _asdict(self) -> dict:
        """The fields as a dict (pyvene's namedtuple has ``_asdict``)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


IntervenableRepresentationConfig = RepresentationConfig
MODES = ("parallel", "serial")


def _representation(rep: Any, i: int) -> RepresentationConfig:
    """One representation in any form pyvene takes: a RepresentationConfig, a dict, or a
    positional list/tuple."""
    if isinstance(rep, RepresentationConfig):
        return rep
    if isinstance(rep, dict):
        known = set(RepresentationConfig.__dataclass_fields__)
        unknown = set(rep) - known
        if unknown:
            raise ValueError(f"representation {i}: unknown keys {sorted(unknown)}; valid keys "
                             f"are {sorted(known)}")
        return RepresentationConfig(**rep)
    if isinstance(rep, (list, tuple)):
        if len(rep) > len(RepresentationConfig.__dataclass_fields__):
            raise ValueError(f"representation {i}: {len(rep)} positional fields; RepresentationConfig "
                             f"has {len(RepresentationConfig.__dataclass_fields__)}")
        return RepresentationConfig(*rep)
    raise ValueError(f"representation {i}: {rep!r} is not a RepresentationConfig, a dict or a list")


class IntervenableConfig:
    """A list of representations and the intervention type(s) they use, as pyvene's
    ``IntervenableConfig(representations, intervention_types=VanillaIntervention,
    mode="parallel", sorted_keys=None, model_type=None)``: a representation without an
    intervention gets ``intervention_types`` (one class, or one per representation);
    ``mode="serial"`` chains sources (``"source_0->source_1"``, ..., ``"source_N->base"``);
    ``model_type`` (a model class or a transformers ``model_type`` string) is checked
    against the model the config is mounted on."""

    def __init__(self, representations: Any = None, intervention_types: Any = None,
                 mode: str = "parallel", sorted_keys: Any = None, model_type: Any = None,
                 intervention_dimensions: Any = None, intervention_constant_sources: Any = None,
                 intervenable_representations: Any = None, intervenable_interventions_type: Any = None,
                 **kwargs: Any) -> None:
        from .interventions import VanillaIntervention

        if intervenable_representations is not None:
            representations = intervenable_representations
        if intervenable_interventions_type is not None:
            intervention_types = intervenable_interventions_type
        if representations is None:
            representations = [RepresentationConfig(0)]
        if not isinstance(representations, list):
            representations = [representations]
        if mode not in MODES:
            raise ValueError(f"mode must be 'parallel' or 'serial', not {mode!r}")
        self.representations = [_representation(r, i) for i, r in enumerate(representations)]
        self.intervention_types = VanillaIntervention if intervention_types is None else intervention_types
        self.mode, self.sorted_keys, self.model_type = mode, sorted_keys, model_type
        self.intervention_dimensions = intervention_dimensions
        self.intervention_constant_sources = intervention_constant_sources
        for key, value in kwargs.items():  # pyvene's PretrainedConfig keeps extra fields
            setattr(self, key, value)

    def add_intervention(self, representations: Any) -> None:
        """Append representations (any form); each must name its intervention type, as in pyvene."""
        if not isinstance(representations, list):
            representations = [representations]
        if not isinstance(self.intervention_types, list):
            self.intervention_types = [self.intervention_types] * len(self.representations)
        for rep in representations:
            rep = _representation(rep, len(self.representations))
            if rep.intervention_type is None and rep.intervention is None:
                raise ValueError("add_intervention: the representation needs an intervention_type "
                                 "(or an intervention), as pyvene requires")
            self.representations.append(rep)
            self.intervention_types.append(rep.intervention_type if rep.intervention_type is not None
                                           else rep.intervention)

    def __repr__(self) -> str:
        return (f"IntervenableConfig(mode={self.mode!r}, representations={self.representations!r}, "
                f"intervention_types={self.intervention_types!r})")


def representations(config: Any) -> list[RepresentationConfig]:
    """Every accepted config form as a list of RepresentationConfig, each with its
    intervention type filled in (pyvene's default: ``VanillaIntervention``)."""
    from .interventions import VanillaIntervention

    if isinstance(config, IntervenableConfig):
        reps, types = list(config.representations), config.intervention_types
    elif isinstance(config, (dict, RepresentationConfig)):
        reps, types = [config], None
    elif isinstance(config, (list, tuple)):
        reps, types = list(config), None
    else:
        raise TypeError(f"config must be a dict, a list of dicts, a RepresentationConfig or an "
                        f"IntervenableConfig, not {type(config).__name__}")
    out = []
    if isinstance(types, (list, tuple)) and len(types) != len(reps):
        raise ValueError(f"{len(types)} intervention_types for {len(reps)} representations: give one "
                         f"type, or one per representation")
    for i, rep in enumerate(reps):
        rep = _representation(rep, i)
        if rep.intervention is not None and rep.intervention_type is not None:
            raise ValueError(f"representation {i}: give intervention_type or intervention, not both")
        if rep.intervention is None and rep.intervention_type is None:
            given = types[i] if isinstance(types, (list, tuple)) else types
            rep = replace(rep, intervention_type=VanillaIntervention if given is None else given)
        out.append(rep)
    return out


def mode_of(config: Any) -> str:
    """A config's mode (``"parallel"`` unless an IntervenableConfig says otherwise)."""
    return config.mode if isinstance(config, IntervenableConfig) else "parallel"


def locations(units: list, unit_locations: Any, batch: int) -> list[tuple]:
    """Per unit (in config order): (source positions, base positions, heads)."""
    n = len(units)
    if unit_locations is None:
        return [(None, None, None)] * n
    if not isinstance(unit_locations, dict):
        raise ValueError(f"unit_locations must be a dict such as {{'sources->base': 4}} or "
                         f"{{'base': 4}}, not {type(unit_locations).__name__}")
    unknown = set(unit_locations) - {"sources->base", "base"}
    if unknown:
        raise ValueError(f"unit_locations keys must be 'sources->base' or 'base', not "
                         f"{sorted(unknown)}")
    if "sources->base" in unit_locations:
        value = unit_locations["sources->base"]
        # pyvene reads a pair of ints, tuple or list ([2, 5]), as source 2 -> base 5
        pair = isinstance(value, tuple) and len(value) == 2 or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value))
        src, base = tuple(value) if pair else (value, value)
    else:
        src, base = None, unit_locations["base"]
    def per_unit(value: Any, k: int) -> Any:
        # several interventions: a list with one location per intervention (depth >= 3)
        if n > 1 and isinstance(value, (list, tuple)) and len(value) == n and _depth(value) >= 3:
            return value[k]
        return value

    out = []
    for k, unit in enumerate(units):
        b_pos, heads = _side(per_unit(base, k), 0, 1, unit, batch)
        s_pos, _ = (_side(per_unit(src, k), 0, 1, unit, batch) if src is not None
                    else (b_pos, None))
        out.append((s_pos, b_pos, heads))
    return out

def _side(value: Any, k: int, n: int, unit: dict, batch: int) -> tuple:
    if value is None:  # pyvene: no locations for this intervention (its source is None too)
        return None, None
    depth = _depth
    if unit["unit"] == "h.pos":
        if depth(value) == 4:
            value = value[k]
        if depth(value) != 3 or len(value) != 2:
            raise ValueError("h.pos unit locations must be [heads[batch][units], "
                             "positions[batch][units]] per intervention")
        rows = [list(r) for r in value[0]]
        if len(rows) not in (1, batch):
            raise ValueError(f"h.pos unit locations give heads for {len(rows)} rows but the batch "
                             f"has {batch}")
        # one head list for all rows, or (pyvene allows it) one per row: PerRow
        heads = rows[0] if all(r == rows[0] for r in rows) else PerRow(rows)
        return _positions(value[1], batch), heads
    if isinstance(value, int):
        value = [value]
    d = depth(value)
    if d == 3:
        if len(value) != n:
            raise ValueError(f"unit locations list {len(value)} interventions but the config "
                             f"has {n}")
        value = value[k]
    elif d == 1 and unit["unit"] in ("pos", "t"):
        value = [list(value)] * batch
    if unit["unit"] == "h":
        rows = value if depth(value) == 2 else [value]
        return None, shared(rows, "heads")
    return _positions(value if depth(value) == 2 else [value] * batch, batch), None

class PerRow(list):
    """Heads that differ between batch rows: one head list per row."""

    def groups(self) -> list[tuple[list, list[int]]]:
        """(heads, the rows using them), in first-seen order."""
        out: dict = {}
        for i, heads in enumerate(self):
            out.setdefault(tuple(heads), []).append(i)
        return [(list(h), rows) for h, rows in out.items()]


def shared(rows: Sequence, what: str) -> list:
    first = list(rows[0])
    if any(list(r) != first for r in rows):
        raise ValueError(f"every batch row must use the same {what} ({list(rows)})")
    return first

def _positions(rows: Sequence, batch: int) -> Any:
    rows = [list(r) for r in rows]
    if len(rows) not in (1, batch):
        raise ValueError(f"unit locations give {len(rows)} rows but the batch has {batch}")
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every batch row must have the same number of units")
    if all(r == rows[0] for r in rows):
        return rows[0]
    return torch.tensor(rows, dtype=torch.long)


def _depth(v: Any) -> int:
    """Nesting depth of a location list, along first elements."""
    d = 0
    while isinstance(v, (list, tuple)) and v:
        v, d = v[0], d + 1
    return d


def per_row(record: Any, values: PerRow, field: str) -> list:
    """A record whose ``field`` (heads or subspaces) differs between rows, as one record
    per distinct value (its rows, their positions and their source rows)."""
    out = []
    n = len(record.rows)
    for value, idx in values.groups():
        take = lambda x: x[idx] if isinstance(x, torch.Tensor) and x.dim() > 1 and x.shape[0] == n else x  # noqa: E731
        src = record.source
        if isinstance(src, Source):
            row = src.row if not isinstance(src.row, (list, tuple)) else [src.row[i] for i in idx]
            src = Source(row=row, positions=take(src.positions), site=src.site)
        elif isinstance(src, torch.Tensor) and src.dim() > 1 and src.shape[0] == n:
            src = src[idx]
        elif isinstance(src, torch.Tensor) and field == "heads":
            raise ValueError("source_representations with different heads per batch row are not "
                             "supported; give every row the same heads")
        out.append(record.replace(rows=[record.rows[i] for i in idx], positions=take(record.positions),
                                  source=src, **{field: value}))
    return out


def shift_positions(positions: Any, pad: int, rows: int) -> Any:
    """Unit positions (a shared list or a per-row tensor) moved right by ``pad`` left-pad
    tokens; negative positions count from the end and stay."""
    if positions is None:
        return None
    pos = positions if isinstance(positions, torch.Tensor) else torch.tensor([list(positions)])
    pos = torch.where(pos >= 0, pos + pad, pos)
    return pos.expand(rows, -1) if pos.shape[0] == 1 and rows > 1 else pos


def subspaces_of(subspaces: Any, k: int, n: int, partition: Any) -> Any:
    """Intervention k's (of n) subspace dims from pyvene's ``subspaces`` (an int, a list of
    dims, ``[intervention][row][dims]``): one list, or a ``PerRow`` when rows differ (pyvene
    allows it); with a ``subspace_partition`` (``[[start, end), ...]`` or index lists) the
    subspaces name partitions."""
    if isinstance(subspaces, int) and not isinstance(subspaces, bool):
        subspaces = [subspaces]  # pyvene broadcasts an int to every row and intervention
    sub = subspaces
    if isinstance(subspaces, (list, tuple)) and subspaces and isinstance(subspaces[0], (list, tuple)):
        sub = subspaces[k] if len(subspaces) == n else subspaces[0]
        if sub and isinstance(sub[0], (list, tuple)):  # one list per row
            rows = [list(r) for r in sub]
            sub = rows[0] if all(r == rows[0] for r in rows) else PerRow(rows)
    if isinstance(sub, PerRow):
        return PerRow([_partitioned(r, partition) for r in sub])
    return _partitioned(sub, partition)


def _partitioned(sub: Any, partition: Any) -> Any:
    """Subspace indices read through pyvene's ``subspace_partition`` (when there is one)."""
    if sub is None or not partition:
        return sub
    parts = [list(range(p[0], p[1])) if len(p) == 2 and isinstance(p[0], int) else list(p)
             for p in partition]
    if any(not 0 <= i < len(parts) for i in sub):
        raise ValueError(f"subspaces {list(sub)} name partitions outside 0-{len(parts) - 1} "
                         f"of subspace_partition {partition}")
    return [d for i in sub for d in parts[i]]
