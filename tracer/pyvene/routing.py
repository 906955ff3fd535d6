"""Which source each pyvene intervention reads and which rows it writes: groups, serial
chains and the config's ``model_type`` check.

pyvene runs interventions in groups (``group_key``; by default one group per
representation): in ``"parallel"`` mode group g reads ``sources[g]`` and writes into the
base; in ``"serial"`` mode group g reads source g and writes into source g+1 (its run then
carries the change), the last group into the base, at the unit locations
``"source_g->source_{g+1}"`` / ``"source_{last}->base"``.  A ``None`` source skips its
group.  In one batched pass the chain holds because units apply in the model's execution
order and, at one site, in config order (each reads the tensor its predecessors edited).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .config import locations

SKIPPED = "skipped"  # a unit whose group's source is None (pyvene skips it)


def check_model_type(model: Any, model_type: Any) -> None:
    """pyvene's ``model_type``: a model class (or tuple of them) or a transformers
    ``model_type`` string, which the mounted model must be."""
    if model_type is None:
        return
    inner = getattr(model, "_module", model)
    if isinstance(model_type, str):
        have = getattr(getattr(inner, "config", None), "model_type", None)
        if have != model_type:
            raise ValueError(f"the config's model_type is {model_type!r} but the model is {have!r}")
    elif isinstance(model_type, type) or (isinstance(model_type, tuple) and
                                          all(isinstance(t, type) for t in model_type)):
        if not isinstance(inner, model_type):
            names = model_type.__name__ if isinstance(model_type, type) else \
                " or ".join(t.__name__ for t in model_type)
            raise ValueError(f"the config's model_type is {names} but the model is {type(inner).__name__}")
    else:
        raise ValueError(f"model_type must be a model class or a transformers model_type string, "
                         f"not {model_type!r}")


def groups_of(representations: Sequence[Any]) -> list[int]:
    """Per representation (config order), its group: pyvene's ``group_key`` (every
    representation has one, ascending in config order), else one group each."""
    keys = [rep.group_key for rep in representations]
    if all(k is None for k in keys):
        return list(range(len(keys)))
    if any(k is None for k in keys):
        raise ValueError(f"group_key: give every representation a group key or none (pyvene's "
                         f"rule); got {keys}")
    if any(a > b for a, b in zip(keys, keys[1:])):
        raise ValueError(f"group keys must ascend in config order (groups run in that order, as "
                         f"in pyvene); got {keys}")
    order = sorted(set(keys))
    return [order.index(k) for k in keys]


def source_blocks(reads: Sequence[bool], group: Sequence[int], sources: Optional[list]) -> list[Any]:
    """Per unit, which source input it reads in parallel mode: an index, None (it reads
    none) or ``SKIPPED``; ``reads[k]``: whether unit k takes a source at all."""
    groups = max(group) + 1 if group else 0
    if not sources:
        return [None] * len(reads)
    if len(sources) not in (1, groups):
        raise ValueError(f"{len(sources)} sources for {groups} intervention "
                         f"{'group' if groups == 1 else 'groups'}: give one shared source or one "
                         f"per group (a group is one intervention unless group_key joins several)")
    out: list = []
    for k, reading in enumerate(reads):
        b = 0 if len(sources) == 1 else group[k]
        out.append(None if not reading else SKIPPED if sources[b] is None else b)
    return out


def plan(mode: str, units: list, reads: Sequence[bool], group: Sequence[int], sources: Optional[list],
         unit_locations: Any, batch: int, constants: bool) -> list[Optional[tuple]]:
    """Per unit (config order): (source index or None, destination (None: the base, or a
    source index), its locations), or None when the unit does not run."""
    if mode == "parallel":
        locs = locations(units, unit_locations, batch)
        blocks = source_blocks(reads, group, sources) if not constants else [None] * len(units)
        return [None if b is SKIPPED else (b, None, loc) for b, loc in zip(blocks, locs)]
    groups = max(group) + 1
    if not sources or len(sources) != groups:
        raise ValueError(f"serial mode needs one source per intervention group ({groups}), "
                         f"got {0 if not sources else len(sources)}")
    names = [f"source_{g}->source_{g + 1}" for g in range(groups - 1)] + [f"source_{groups - 1}->base"]
    if not isinstance(unit_locations, dict) or set(unit_locations) - set(names):
        raise ValueError(f"serial mode's unit_locations are a dict with the keys {', '.join(names)}; "
                         f"got {unit_locations!r:.200}")
    out: list = [None] * len(units)
    for g, name in enumerate(names):
        members = [k for k in range(len(units)) if group[k] == g]
        if sources[g] is None or name not in unit_locations:
            continue  # pyvene's rule: a group without a source (or locations) is skipped
        locs = locations([units[k] for k in members], {"sources->base": unit_locations[name]}, batch)
        dst = g + 1 if g < groups - 1 else None
        for k, loc in zip(members, locs):
            out[k] = (g if reads[k] else None, dst, loc)
    return out
