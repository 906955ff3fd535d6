"""Exact reuse: a patching plan computes only what its patches can change.

A plan fits when its first group is a reference run (clean prompts, or prompts with fixed
edits such as causal tracing's noise) and every other group has the same rows, the same
reference edits and a few more: copies between its rows, additions, or values to set.  An
edit at layer L and token position p changes nothing below layer L and nothing before p,
so each group (a *cell*) runs only:

- the rows it edits (a copy from an unedited row reads that row's value from the
  reference run; a readout of an unedited row is the reference run's);
- the layers from its lowest edited layer on (the layers below are skipped with nnsight's
  ``Envoy.skip``, the first layer run receiving the reference run's residual stream), cells
  batched by that layer;
- the token positions from its earliest edited or read position on (the earlier positions'
  keys and values come from the reference run's KV cache).

Rows keep the reference run's left padding, so sliding-window attention and position ids
are what the full run computes; results equal the full recomputation (``exact_reuse=False``
in ``tracer.execute.run``) to float rounding.  Client side: ``compile_plan`` lays out every
batch before anything runs, with what each cell takes from the reference run (constants,
the skipped layers' output, the cache) as indices that ``patches.prepare`` gathers, so a
remote run is one NDIF session in which the reference run's states never leave the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from . import branch
from .costs import Costs
from .interventions import Intervention, Source
from .plan import (Activations, Distribution, Group, Logprobs, _is_add, _is_copy, _is_set,
                   compile_batch, split_results)
from .plan import pack as plan_pack
from .sites import config, dims_of, family_of, module, site as resolve_site
from .tokens import pad_id


@dataclass
class _Cell:
    """One group of the plan, reduced to the reference rows it must compute."""

    index: int
    rows: list                                   # reference rows computed, in local order
    layer: int                                   # the first layer that must run
    column: int                                  # the first padded column that must run
    edits: list = field(default_factory=list)    # (Intervention, constant read or None)
    reads: list = field(default_factory=list)    # per group read: ("local" | "ref", read)


class _Plan:
    """The reference group with the extra readouts cells need, and the cells."""

    def __init__(self, groups: Sequence[Group], base: list, cells: list, width: int,
                 extra: list):
        self.groups, self.base, self.cells, self.width = groups, base, cells, width
        self.extra = extra                      # readouts added to the reference run
        self._layout: Optional[tuple] = None    # (max_batch, costs, (batches, seconds))

    def layout(self, max_batch: int, n_layers: int, costs: Costs) -> tuple[list, float]:
        """``pack``'s batches of the cells and their predicted time, computed once for the
        choice between reuse and full recomputation and the compiled plan alike."""
        if self._layout is None or self._layout[:2] != (max_batch, costs):
            self._layout = (max_batch, costs, pack(self.cells, max_batch, n_layers, self.width, costs))
        return self._layout[2]


def plan(model: Any, groups: Sequence[Group]) -> Optional[_Plan]:
    """The reuse plan of ``groups``, or None when they do not have its shape."""
    if len(groups) < 2:
        return None
    ref = groups[0]
    base = list(ref.interventions)
    if any(not _is_add(iv) for iv in base):
        return None
    rows = ref.rows
    width = max(len(r) for r in rows)
    extra: dict = {}
    known: dict = {}   # site name -> its layer
    cells = []
    for gi, g in enumerate(groups[1:], 1):
        if g.rows != rows or len(g.interventions) < len(base) or any(
                a is not b for a, b in zip(g.interventions, base)):
            return None
        cell = _cell(model, gi, g, g.interventions[len(base):], width, extra, known)
        if cell is None:
            return None
        cells.append(cell)
    return _Plan(groups, base, cells, width, list(extra))


def _layer(model: Any, name: str, known: Optional[dict] = None) -> int:
    """The first layer whose computation a change at this site can alter (0 for embed; the
    last layer for the final norm and the logits, whose input the last layer computes).
    ``known`` remembers names already resolved (a plan names few sites many times)."""
    if known is not None and name in known:
        return known[name]
    last = dims_of(config(model)).n_layers - 1
    layer = min(last, max(0, resolve_site(model, name).order[0]))
    if known is not None:
        known[name] = layer
    return layer


def _cell(model: Any, gi: int, g: Group, edits: list, width: int, extra: dict,
          known: Optional[dict] = None) -> Optional[_Cell]:
    rows = g.rows
    if not edits:  # the reference run again: every readout is the reference run's
        for rd in g.reads:
            extra.setdefault(rd, None)
        return _Cell(gi, [], 0, 0, [], [("ref", rd) for rd in g.reads])
    edited = []
    for iv in edits:
        if not (_is_copy(iv) or _is_add(iv) or _is_set(iv)):
            return None
        edited.append(iv.rows[0] % len(rows))
    local = sorted(set(edited))
    first = {r: len(rows[r]) for r in local}

    def need(r: int, positions: Optional[Sequence[int]]) -> None:
        n = len(rows[r])
        first[r] = min(first[r], 0 if positions is None else min(p % n for p in positions))

    layer = min(_layer(model, iv.site, known) for iv in edits)
    cell_edits = []
    for iv in edits:
        r = iv.rows[0] % len(rows)
        need(r, iv.positions)
        if _is_copy(iv):
            src = iv.source.row % len(rows)
            if src in first:
                need(src, iv.source.positions)
                cell_edits.append((iv, None))
            else:  # an unedited source row: its value is the reference run's
                read = Activations(resolve_site(model, iv.site).name, src, tuple(iv.source.positions))
                extra.setdefault(read, None)
                cell_edits.append((iv, read))
        else:
            cell_edits.append((iv, None))
    reads = []
    for rd in g.reads:
        r = rd.row % len(rows)
        if r in first:
            need(r, rd.positions)
            if isinstance(rd, Activations):
                layer = min(layer, _layer(model, rd.site, known))
            reads.append(("local", rd))
        else:
            extra.setdefault(rd, None)
            reads.append(("ref", rd))
    column = min(width - len(rows[r]) + first[r] for r in local)
    return _Cell(gi, local, layer, column, cell_edits, reads)


def _local_group(cell: _Cell, rows: list, base: list, layer: int, column: int, width: int,
                 where_read: dict, model: Any, symbolic: dict) -> Group:
    """The cell as a group of its own rows: edits re-indexed, the reference edits that still
    run (at layers and columns this batch computes), and each copy from an unedited row as a
    set whose values ``patches.prepare`` gathers from the reference run's readouts: its
    (slot, flat index[, head]) entries are appended to ``symbolic[site]`` in the order the
    compiler lays the sets out."""
    where = {r: i for i, r in enumerate(cell.rows)}
    ivs = []
    for iv in base:
        r = iv.rows[0] % len(rows)
        if r not in where or (layer > 0 and _layer(model, iv.site) < layer):
            continue
        pad = width - len(rows[r])
        keep = [j for j, p in enumerate(iv.positions) if p % len(rows[r]) + pad >= column]
        if keep:
            ivs.append(Intervention("add", iv.site, tuple(iv.positions[j] for j in keep),
                                    rows=[where[r]], params={"vector": iv.params["vector"][keep]}))
    for iv, read in cell.edits:
        dst = where[iv.rows[0] % len(rows)]
        if read is not None:
            slot, start = where_read[read]
            heads = None if iv.heads is None else list(iv.heads)
            entries = symbolic.setdefault(resolve_site(model, iv.site).name, [])
            for j in range(len(iv.positions)):
                entries.extend([(slot, start + j, None)] if heads is None else
                               [(slot, start + j, h) for h in heads])
            shape = (len(iv.positions),) + ((len(heads),) if heads else ()) + (1,)
            ivs.append(Intervention("interchange", iv.site, iv.positions, iv.heads, rows=[dst],
                                    source=torch.zeros(shape)))  # a placeholder: see prepare
        elif _is_copy(iv):
            src = Source(row=where[iv.source.row % len(rows)], positions=iv.source.positions)
            ivs.append(iv.replace(rows=[dst], source=src))
        else:
            ivs.append(iv.replace(rows=[dst]))
    reads = [_relocated(rd, where[rd.row % len(rows)]) for kind, rd in cell.reads if kind == "local"]
    return Group([rows[r] for r in cell.rows], ivs, reads, key=cell.index)


def _relocated(rd: Any, row: int) -> Any:
    if isinstance(rd, Logprobs):
        return Logprobs(row, rd.positions, rd.tokens)
    if isinstance(rd, Distribution):
        return Distribution(row, rd.positions)
    return Activations(rd.site, row, rd.positions)


# What a batch costs where it cannot be measured (a remote server), in units of one token
# through one layer: a trace, and a pass over a layer's weights (memory-bound at small
# batches).  Locally ``tracer.costs.measure`` gives the model's own, once per process.
COSTS = {"cpu": Costs(80.0, 10.0, 1.0), "cuda": Costs(8000.0, 200.0, 1.0)}


def pack(cells: list, max_batch: int, n_layers: int, width: int, costs: Costs,
         span: int = 64) -> tuple[list[list[_Cell]], float]:
    """Cells sorted by (layer, column) and cut into batches of at most ``max_batch`` rows so
    that the predicted time (``costs``) is least: few rows per cell favour fewer batches
    that start lower; many favour one batch per layer.  Returns (batches, predicted time)."""
    cells = sorted((c for c in cells if c.rows), key=lambda c: (c.layer, c.column))
    n = len(cells)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        rows, column = 0, width
        for i in range(j - 1, max(-1, j - 1 - span), -1):
            rows += len(cells[i].rows)
            if rows > max_batch and i < j - 1:
                break
            column = min(column, cells[i].column)
            cost = best[i] + costs.batch_seconds(n_layers - cells[i].layer, rows * (width - column))
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], n
    while j > 0:
        batches.append(cells[cut[j]:j])
        j = cut[j]
    return batches[::-1], best[n]


def worth_it(model: Any, reuse: _Plan, max_batch: int, costs: Costs) -> bool:
    """Whether exact reuse is predicted to take no longer than the full recomputation of the
    same plan (``plan.pack``'s batches, every layer over every column)."""
    n_layers = dims_of(config(model)).n_layers
    width = reuse.width
    rows = [len(g.rows) for g in reuse.groups]
    full = 0.0
    for batch in plan_pack(reuse.groups, max_batch):
        full += costs.batch_seconds(n_layers, sum(rows[i] for i in batch) * width)
    _, cells = reuse.layout(max_batch, n_layers, costs)
    return costs.batch_seconds(n_layers, rows[0] * width) + cells <= full


@dataclass
class Compiled:
    """A reuse plan as batches: the reference batch (it fills ``ref.cache``) and the cell
    batches, whose constants, skipped layers and cache ``patches.prepare`` gathers from the
    reference run's outputs."""

    ref: Any
    ref_layout: tuple
    n_reads: int
    cells: list        # (cells, batch, layout) per batch


def compile_plan(model: Any, reuse: _Plan, max_batch: int, costs: Optional[Costs] = None) -> Compiled:
    """Every batch of a reuse plan, before anything runs (remote runs ship them all), laid
    out by ``costs`` (default: ``COSTS`` of the model's device type)."""
    groups, rows, width = reuse.groups, reuse.groups[0].rows, reuse.width
    if costs is None:
        costs = COSTS.get(next(module(model).parameters()).device.type, COSTS["cpu"])
    n_layers = dims_of(config(model)).n_layers
    batches, _ = reuse.layout(max_batch, n_layers, costs)
    starts = sorted({min(c.layer for c in b) for b in batches} - {0})
    states = [Activations(f"resid_pre.{layer}", r, None) for layer in starts for r in range(len(rows))]
    ref = groups[0]
    augmented = Group(rows, list(ref.interventions), list(ref.reads) + reuse.extra + states, key=ref.key)
    batch, layout = compile_batch(model, [augmented])
    slots, places = layout
    where_read = {rd: (slots.index(place[0]), place[1])
                  for rd, place in zip(augmented.reads, places[0])}
    compiled = []
    for cells in batches:
        layer = min(c.layer for c in cells)
        column = min(c.column for c in cells)
        symbolic: dict = {}
        local = [_local_group(c, rows, reuse.base, layer, column, width, where_read, model, symbolic)
                 for c in cells]
        index = [r for c in cells for r in c.rows]
        parts = None if symbolic else branch.split(model, local, n_layers - layer, width - column, costs)
        if parts is not None:
            b, lay = _branched(model, parts, rows, index, layer, width, where_read, n_layers)
            compiled.append((cells, b, lay))
            continue
        b, lay = compile_batch(model, local, width=width, start=column)
        for ops in b.ops:
            entries = symbolic.get(ops.site.name)
            if entries:
                if len(entries) != len(ops.set_val):
                    return None  # user sets beside constants at one site: run in full
                heads = None if entries[0][2] is None else torch.tensor([e[2] for e in entries])
                ops.set_from = (entries[0][0], torch.tensor([e[1] for e in entries]), heads)
                ops.set_val = None
        if column > 0:
            b.cache_from = (torch.tensor(index), column)
        if layer > 0:
            b.skip_from = _skip_from(model, where_read, layer, index,
                                     [width - len(rows[r]) for r in index],
                                     [len(rows[r]) for r in index], column, width - column)
        compiled.append((cells, b, lay))
    return Compiled(batch, layout, len(ref.reads), compiled)


def _skip_from(model: Any, where_read: dict, layer: int, refs: list, pads: list, lengths: list,
               start: int, columns: int) -> tuple:
    """``Batch.skip_from`` for rows of reference rows ``refs`` whose token 0 sits at column
    ``pads[i]``, computing ``columns`` columns from ``start``: each column's flat index into
    the reference run's ``resid_pre`` readout at ``layer`` (-1 where a row has no token)."""
    flat = torch.full((len(refs), columns), -1, dtype=torch.long)
    for i, (r, pad, n) in enumerate(zip(refs, pads, lengths)):
        slot, first = where_read[Activations(f"resid_pre.{layer}", r, None)]
        lo, hi = max(start, pad), min(start + columns, pad + n)
        if hi > lo:
            flat[i, lo - start:hi - start] = torch.arange(first + lo - pad, first + hi - pad)
    paths = [f"{family_of(config(model)).layers}.{i}" for i in range(layer)]
    return paths, slot, flat


def _branched(model: Any, parts: branch.Split, rows: list, index: list, layer: int,
              width: int, where_read: dict, n_layers: int) -> tuple:
    """A batch as ``tracer.branch``'s two passes: the suffix pass (returned, with its layout)
    holds the prefix pass, whose earlier columns come from the reference run's cache."""
    a, _ = compile_batch(model, parts.prefix, width=parts.width, start=parts.start)
    refs = [index[i] for i in parts.reps]
    pads = [parts.width - parts.shared[i] for i in parts.reps]
    if parts.start > 0:  # each class's earlier columns, from its row's place in the reference run
        cols = torch.tensor([[j - pad + width - len(rows[r]) for j in range(parts.start)]
                             for r, pad in zip(refs, pads)]).clamp(0, width - 1)
        a.cache_from = (torch.tensor(refs), cols)
    inputs = branch.suffix_inputs(parts, [rows[r] for r in index], a.inputs["attention_mask"],
                                  pad_id(model.tokenizer))
    b, lay = compile_batch(model, parts.suffix, placed=(inputs, [-s for s in parts.shared]))
    if layer > 0:
        a.skip_from = _skip_from(model, where_read, layer, refs, pads,
                                 [parts.shared[i] for i in parts.reps], parts.start,
                                 parts.width - parts.start)
        b.skip_from = _skip_from(model, where_read, layer, index, [-s for s in parts.shared],
                                 [len(rows[r]) for r in index], 0, parts.suffix_width)
    a.keep = torch.zeros(0, dtype=torch.long)  # no logits: the prefix pass reads nothing
    b.prefix = a
    b.branch_from = (torch.tensor(parts.of_row), parts.width, n_layers)
    return b, lay


def results(reuse: _Plan, plan: Compiled, ref_out: list, outputs: list) -> list[list[torch.Tensor]]:
    """Every group's readouts, as ``execute.run`` returns them, from the reference batch's
    outputs and each cell batch's."""
    cpu = lambda flat: [torch.as_tensor(t).detach().float().cpu() for t in flat]  # noqa: E731
    ref_values = split_results(plan.ref_layout, cpu(ref_out))[0]
    values = dict(zip(reuse.extra, ref_values[plan.n_reads:plan.n_reads + len(reuse.extra)]))
    out: list = [None] * len(reuse.groups)
    out[0] = ref_values[:plan.n_reads]
    for cell in reuse.cells:
        if not cell.rows:
            out[cell.index] = [values[rd] for _, rd in cell.reads]
    for (cells, _, lay), flat in zip(plan.cells, outputs):
        for cell, local_values in zip(cells, split_results(lay, cpu(flat))):
            it = iter(local_values)
            out[cell.index] = [next(it) if kind == "local" else values[rd] for kind, rd in cell.reads]
    return out


def cache_argument(model: Any) -> str:
    """The forward's name for a key-value cache: ``cache`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated and warns) or ``past_key_values`` (earlier)."""
    import inspect

    from .sites import module

    params = inspect.signature(module(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run(model: Any, reuse: _Plan, max_batch: int, trace: Callable[[Any, Any], list],
        each: Callable[[list, Callable], list],
        costs: Optional[Costs] = None) -> Optional[list[list[torch.Tensor]]]:
    """Locally: the reference batch, then the cell batches through ``each(batches, compute)``
    (progress, resume); ``trace(batch, within)`` runs one batch, ``within`` hearing of its
    progress.  Every group's readouts, or None when the plan cannot be compiled."""
    from transformers.cache_utils import DynamicCache

    from .patches import branch as branch_cache, prepare

    plan = compile_plan(model, reuse, max_batch, costs)
    if plan is None:
        return None
    plan.ref.cache = DynamicCache()   # filled by the run: the reference keys and values
    ref_out = trace(plan.ref, None)
    by_batch = {id(b): b for _, b, _ in plan.cells}

    def compute(part: list, within: Any = None) -> list:
        out = []
        for b in part:
            b = by_batch[id(b)]
            b.cache = prepare(b, ref_out, plan.ref.cache)
            if b.prefix is not None:  # tracer.branch: the shared prompts first
                a = b.prefix
                a.cache = prepare(a, ref_out, plan.ref.cache, empty=True)
                trace(a, None)
                b.cache = branch_cache(b, a.cache)
                a.cache = a.skip = None
            out.append(trace(b, within))
            b.cache = b.skip = None
        return out

    outputs = each([b for _, b, _ in plan.cells], compute)
    return results(reuse, plan, ref_out, outputs)


def session(model: Any, ref: Any, work: list, remote: bool = True) -> tuple[list, list]:
    """A reuse plan (``tracer.reuse``) as one remote session: a one-token trace gives the
    server's cache type, the reference run fills a cache of it, and every cell batch gathers
    its constants, skipped layers' output and earlier keys and values from that run there."""
    import nnsight

    from .patches import branch as branch_cache, prepare, run_batch

    # only trace-time objects (patches.Batch) travel: the server cannot import tracer.reuse
    first = {k: v[:1, -1:] for k, v in ref.inputs.items() if k != "attention_mask"}
    name = cache_argument(model)  # the server's transformers is the client's (check_versions)
    with torch.no_grad():
        with model.session(remote=remote):
            outputs = nnsight.save([])
            with model.trace(first, use_cache=True):
                seed = model.output[name]
            cache = type(seed)()  # without a config: full layers, even under sliding windows
            with model.trace(ref.inputs, logits_to_keep=ref.keep, use_cache=True, **{name: cache}):
                ref_out = run_batch(model, ref)
                outputs.append(nnsight.save(ref_out))
            for batch in work:
                own = prepare(batch, ref_out, cache)
                if batch.prefix is not None:  # tracer.branch: the shared prompts first
                    first = prepare(batch.prefix, ref_out, cache, empty=True)
                    with model.trace(batch.prefix.inputs, logits_to_keep=batch.prefix.keep, use_cache=True,
                                     **{name: first}):
                        run_batch(model, batch.prefix)
                    own = branch_cache(batch, first)
                if own is None:
                    with model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=False):
                        outputs.append(nnsight.save(run_batch(model, batch)))
                else:
                    with model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=True,
                                     **{name: own}):
                        outputs.append(nnsight.save(run_batch(model, batch)))
    outputs = [list(o) for o in outputs]
    return outputs[0], outputs[1:]
