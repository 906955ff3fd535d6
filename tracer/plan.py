"""Plans: what to run, as data, before anything runs.

A plan is a list of ``Group``s.  A group is a few token rows that belong together (a prompt
and its counterfactual, a noisy copy and the clean run), the interventions among them
(``tracer.interventions.Intervention`` records whose ``rows`` and ``Source(row=...)`` count
within the group and whose positions are unpadded token positions) and its readouts:

* ``Logprobs(row, positions, tokens)``: log p(token) predicted at each position;
* ``Activations(site, row, positions)``: the site's values (after the group's edits);
* ``Distribution(row, positions)``: the whole next-token log-distribution.

Positions count from the row's first token; negative ones from its end (-1 = last).
``compile_batch`` packs groups into one ``patches.Batch``: left-padded inputs with position
ids, all interchanges between rows and all additions of a site as one gather/scatter, other
interventions through their record, readouts as flat index tensors.  Client side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch

from .interventions import Intervention, Source
from .patches import Batch, SiteOps
from .sites import Site, module, site as resolve_site
from .tokens import build_inputs, pad_id


@dataclass(frozen=True)
class Logprobs:
    """Log-probabilities of ``tokens`` predicted at ``positions`` of ``row``."""

    row: int
    positions: tuple
    tokens: tuple


@dataclass(frozen=True)
class Activations:
    """``site`` values of ``row`` at ``positions`` (None: every token of the row)."""

    site: str
    row: int
    positions: Optional[tuple] = None


@dataclass(frozen=True)
class Distribution:
    """The next-token log-distribution of ``row`` at ``positions`` (None: every token)."""

    row: int
    positions: Optional[tuple] = None


@dataclass
class Group:
    """Token rows that run together, their interventions and their readouts."""

    rows: list
    interventions: list = field(default_factory=list)
    reads: list = field(default_factory=list)
    key: Any = None


def copy(site: str, dst_row: int, src_row: int, dst_pos: Sequence[int], src_pos: Sequence[int],
         heads: Optional[Sequence[int]] = None) -> Intervention:
    """Interchange: ``site`` of ``dst_row`` at ``dst_pos`` takes ``src_row``'s at ``src_pos``."""
    if len(dst_pos) != len(src_pos):
        raise ValueError(f"interchange at {site}: {len(dst_pos)} destination positions but "
                         f"{len(src_pos)} source positions")
    return Intervention("interchange", site, tuple(dst_pos), None if heads is None else tuple(heads),
                        rows=[dst_row], source=Source(row=src_row, positions=tuple(src_pos)))


def add(site: str, row: int, positions: Sequence[int], value: torch.Tensor) -> Intervention:
    """Add ``value`` (``(len(positions), *site shape)``) to ``row`` at ``positions``."""
    return Intervention("add", site, tuple(positions), rows=[row], params={"vector": value})


def _is_copy(iv: Intervention) -> bool:
    s = iv.source
    return (iv.kind == "interchange" and isinstance(s, Source) and s.site is None
            and s.row is not None and iv.positions is not None and s.positions is not None
            and iv.subspaces is None and iv.rows is not None and len(iv.rows) == 1)


def _is_set(iv: Intervention) -> bool:
    """An interchange whose source is a tensor, one value per position (``(P, [heads,] d)``)."""
    return (iv.kind == "interchange" and isinstance(iv.source, torch.Tensor)
            and iv.positions is not None and iv.subspaces is None and iv.rows is not None
            and len(iv.rows) == 1 and iv.source.dim() >= 2
            and iv.source.shape[0] == len(iv.positions))


def _is_add(iv: Intervention) -> bool:
    vector = iv.params.get("vector")
    return (iv.kind == "add" and iv.positions is not None and iv.subspaces is None
            and iv.rows is not None and len(iv.rows) == 1 and iv.heads is None
            and isinstance(vector, torch.Tensor) and vector.dim() >= 2
            and vector.shape[0] == len(iv.positions) and "alpha" not in iv.params)


def _padded(p: int, row_len: int, pad: int, where: str) -> int:
    if not -row_len <= p < row_len:
        raise IndexError(f"position {p} out of range for {where}: the row has {row_len} tokens, "
                         f"valid positions are 0..{row_len - 1} (or -{row_len}..-1)")
    if p % row_len + pad < 0:  # a bug in tracer.reuse, not bad input
        raise AssertionError(f"position {p} of {where} lies in the cached columns")
    return p % row_len + pad


def compile_batch(model: Any, groups: Sequence[Group], width: Optional[int] = None,
                  start: int = 0, placed: Optional[tuple[dict, list[int]]] = None) -> tuple[Batch, tuple]:
    """One ``Batch`` running ``groups`` side by side (rows in group order), and the layout
    that ``split_results`` needs to hand each group its readouts.

    ``width`` pads every row to that many tokens (default: the longest row); with ``start``
    the batch computes only the padded columns from ``start`` on, the earlier ones coming
    from a cache (``tracer.reuse``): positions are then counted from that column.
    ``placed`` = (inputs, per row the column of its token 0) lays rows out otherwise
    (``tracer.branch``'s suffix pass)."""
    return _Compiler(model, groups, width, start, placed).batch()


class _Compiler:
    """Builds one batch: padded inputs, per-site operations, readout indices."""

    def __init__(self, model: Any, groups: Sequence[Group], width: Optional[int] = None,
                 start: int = 0, placed: Optional[tuple[dict, list[int]]] = None):
        self.model, self.groups = model, list(groups)
        self.rows, self.offsets = [], []
        for g in self.groups:
            self.offsets.append(len(self.rows))
            self.rows.extend(g.rows)
        self.sites: dict[str, SiteOps] = {}
        self.resolved: dict[str, Site] = {}
        if placed is not None:
            self.inputs, self.pad = placed[0], list(placed[1])
            self.width = int(self.inputs["input_ids"].shape[1])
            return
        full = width or max(len(r) for r in self.rows)
        self.inputs = build_inputs(self.rows, pad_id(model.tokenizer), full)
        self.pad = [full - len(r) - start for r in self.rows]
        if start:
            self.inputs = {"input_ids": self.inputs["input_ids"][:, start:],
                           "attention_mask": self.inputs["attention_mask"],
                           "position_ids": self.inputs["position_ids"][:, start:]}
        self.width = full - start

    def ops(self, name: str) -> SiteOps:
        """The operations of a site (aliases and canonical names share one entry)."""
        if name not in self.resolved:
            self.resolved[name] = resolve_site(self.model, name)
        s = self.resolved[name]
        if s.name not in self.sites:
            self.sites[s.name] = SiteOps(s)
        return self.sites[s.name]

    def at(self, p: int, row: int, where: str) -> int:
        """Row ``row``'s position ``p`` in the padded batch."""
        return _padded(p, len(self.rows[row]), self.pad[row], where)

    def at_rows(self, wanted: Any, on_rows: list, where: str) -> torch.Tensor:
        wanted = [wanted] if isinstance(wanted, int) else list(wanted)
        return torch.tensor([[self.at(p, r, where) for p in wanted] for r in on_rows], dtype=torch.long)

    def batch(self) -> tuple[Batch, tuple]:
        self.edits()
        tokens, dists, layout = self.readouts()
        first = min([p for _, p, _ in tokens] + [p for _, p in dists], default=self.width - 1)
        token_idx = dist_idx = None
        if tokens:
            r, p, t = (torch.tensor(c) for c in zip(*tokens))
            token_idx = (r, p - first, t)
        if dists:
            dist_idx = (torch.tensor([r for r, _ in dists]), torch.tensor([p - first for _, p in dists]))
        ordered = sorted(self.sites.values(), key=lambda o: o.site.order)
        slots = [o.site.name for o in ordered if o.read_idx is not None]
        slots += ["tokens"] * bool(tokens) + ["dist"] * bool(dists)
        return Batch(self.inputs, ordered, self.width - first, token_idx, dist_idx), (slots, layout)

    def edits(self) -> None:
        """Copies and additions become one index operation per site; every other record runs
        once on all the rows that share it."""
        copies: dict[str, list] = {}
        adds: dict[str, list] = {}
        sets: dict[str, list] = {}
        records: dict[Any, list] = {}   # merge key -> [record, batch rows, group offset]
        for g, base in zip(self.groups, self.offsets):
            for iv in g.interventions:
                name = self.ops(iv.site).site.name
                if _is_copy(iv):
                    d, s = base + iv.rows[0], base + iv.source.row
                    copies.setdefault(name, []).extend(
                        (d, self.at(dp, d, iv.site), s, self.at(sp, s, iv.site), iv.heads)
                        for dp, sp in zip(iv.positions, iv.source.positions))
                elif _is_add(iv):
                    r = base + iv.rows[0]
                    adds.setdefault(name, []).extend(
                        (r, self.at(p, r, iv.site), iv.params["vector"][j]) for j, p in enumerate(iv.positions))
                elif _is_set(iv) and not self.ops(iv.site).site.flat and (
                        iv.heads is None or self.ops(iv.site).site.n_heads is not None):
                    r = base + iv.rows[0]
                    for j, p in enumerate(iv.positions):
                        at = self.at(p, r, iv.site)
                        if iv.heads is None:
                            sets.setdefault(name, []).append(((r, at), iv.source[j]))
                        else:
                            sets.setdefault(name, []).extend(
                                ((r, at, h), iv.source[j][k]) for k, h in enumerate(iv.heads))
                else:
                    # a record shared by many groups runs once on all their rows, unless its
                    # source is a row of its own group
                    own_row = isinstance(iv.source, Source) and iv.source.row is not None
                    entry = records.setdefault((id(iv), base) if own_row else id(iv), [iv, [], base])
                    group_rows = range(len(g.rows)) if iv.rows is None else iv.rows
                    entry[1].extend(base + (r % len(g.rows)) for r in group_rows)
        for name, entries in copies.items():
            o = self.ops(name)
            o.copy_dst, o.copy_src = _copy_index(o.site, entries)
        for name, entries in adds.items():
            o = self.ops(name)
            o.add_idx = (torch.tensor([e[0] for e in entries]), torch.tensor([e[1] for e in entries]))
            o.add_val = torch.stack([e[2] for e in entries])
        for name, entries in sets.items():
            o = self.ops(name)
            o.set_idx = tuple(torch.tensor(c) for c in zip(*(e[0] for e in entries)))
            o.set_val = torch.stack([e[1] for e in entries])
        for iv, batch_rows, base in records.values():
            self.ops(iv.site).records.append(self.record(iv, batch_rows, base))

    def record(self, iv: Intervention, batch_rows: list, base: int) -> tuple:
        """(record with batch positions and sources, its rows, its padded positions)."""
        positions = None if iv.positions is None else self.at_rows(iv.positions, batch_rows, iv.site)
        if not isinstance(iv.source, Source):
            return iv, batch_rows, positions
        src = iv.source
        src_rows = batch_rows if src.row is None else [base + src.row]
        src_pos = src.positions if src.positions is not None else (
            iv.positions if src.row is not None else None)
        if src_pos is not None:
            src_pos = self.at_rows(src_pos, src_rows, iv.site)
        source = Source(None if src.row is None else src_rows[0], src_pos, src.site)
        return iv.replace(source=source), batch_rows, positions

    def readouts(self) -> tuple[list, list, list]:
        """Flat (row, position[, token]) lists and, per group, where its values land."""
        reads: dict[str, list] = {}
        tokens, dists, layout = [], [], []
        for g, base in zip(self.groups, self.offsets):
            places = []
            for rd in g.reads:
                r = base + rd.row
                pos = range(len(self.rows[r])) if rd.positions is None else rd.positions
                padded = [self.at(p, r, "a readout") for p in pos]
                if isinstance(rd, Logprobs):
                    if len(rd.positions) != len(rd.tokens):
                        raise ValueError(f"a Logprobs readout has {len(rd.positions)} positions but "
                                         f"{len(rd.tokens)} tokens")
                    places.append(("tokens", len(tokens), len(tokens) + len(padded)))
                    tokens += [(r, p, t) for p, t in zip(padded, rd.tokens)]
                elif isinstance(rd, Distribution):
                    places.append(("dist", len(dists), len(dists) + len(padded)))
                    dists += [(r, p) for p in padded]
                elif isinstance(rd, Activations):
                    name = self.ops(rd.site).site.name
                    got = reads.setdefault(name, [])
                    places.append((name, len(got), len(got) + len(padded)))
                    got.extend((r, p) for p in padded)
                else:
                    raise TypeError(f"unknown readout {rd!r}: use Logprobs, Activations or Distribution")
            layout.append(places)
        for name, pairs in reads.items():
            self.ops(name).read_idx = (torch.tensor([r for r, _ in pairs]),
                                       torch.tensor([p for _, p in pairs]))
        return tokens, dists, layout


def _copy_index(s: Site, entries: list) -> tuple[tuple, tuple]:
    """Flatten copies to (row, pos[, head]) index tuples; head sites expand to their heads."""
    n_heads = s.n_heads
    if n_heads is None:
        if any(e[4] is not None for e in entries):
            raise ValueError(f"site {s.name} has no heads")
        d = torch.tensor([(e[0], e[1]) for e in entries]).T
        c = torch.tensor([(e[2], e[3]) for e in entries]).T
        return (d[0], d[1]), (c[0], c[1])
    dst, src = [], []
    for dr, dp, sr, sp, heads in entries:
        for h in (range(n_heads) if heads is None else heads):
            if not 0 <= h < n_heads:
                raise IndexError(f"head {h} out of range at site {s.name}: valid heads are "
                                 f"0..{n_heads - 1}")
            dst.append((dr, dp, h))
            src.append((sr, sp, h))
    d, c = torch.tensor(dst).T, torch.tensor(src).T
    return (d[0], d[1], d[2]), (c[0], c[1], c[2])


def split_results(layout: tuple, flat: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Per group, its readouts' values in the group's order, from one batch's flat outputs."""
    slots, places = layout
    by_slot = dict(zip(slots, flat))
    return [[by_slot[slot][start:stop] for slot, start, stop in group] for group in places]


def _shift_read(rd: Any, offset: int, n: int) -> Any:
    if isinstance(rd, Logprobs):
        return Logprobs(rd.row % n + offset, rd.positions, rd.tokens)
    if isinstance(rd, Distribution):
        return Distribution(rd.row % n + offset, rd.positions)
    return Activations(rd.site, rd.row % n + offset, rd.positions)


def _shift(iv: Intervention, offset: int, n: int) -> Intervention:
    rows = list(range(n)) if iv.rows is None else [r % n for r in iv.rows]
    source = iv.source
    if isinstance(source, Source) and source.row is not None:
        row = source.row
        row = [r % n + offset for r in row] if isinstance(row, (list, tuple)) else row % n + offset
        source = Source(row=row, positions=source.positions, site=source.site)
    elif isinstance(source, Source):  # the rows edited: they move with them
        source = Source(row=[r + offset for r in rows], positions=source.positions, site=source.site)
    return iv.replace(rows=[r + offset for r in rows], source=source)


def merge(plans: Sequence[Sequence[Group]]) -> tuple[list[Group], list[list[int]]]:
    """Plans of one shape (a data set: one plan per prompt pair, group k of each the same
    cell) as one plan whose group k runs group k of every plan side by side, and the count
    of readouts each plan contributes to each group (for ``unmerge``).

    Rows and sources are renumbered; each group keeps the interventions its plans share
    with their first group as the merged first group's own objects, first, so that
    ``tracer.reuse`` sees a reference run and its cells (every plan edits its own rows, so
    putting them first changes nothing)."""
    if not plans:
        raise ValueError("no plans to merge")
    sizes = {len(p) for p in plans}
    if len(sizes) != 1:
        raise ValueError(f"plans to merge need the same number of groups; got {sorted(sizes)}")
    if len(plans) == 1:
        return list(plans[0]), [[len(g.reads)] for g in plans[0]]
    shifted: dict = {}

    def moved(iv: Intervention, offset: int, n: int) -> Intervention:
        key = (id(iv), offset)
        if key not in shifted:
            shifted[key] = (iv, _shift(iv, offset, n))  # the original kept alive: ids stay unique
        return shifted[key][1]

    groups, counts = [], []
    for k in range(len(plans[0])):
        rows, reads, head, tail, count = [], [], [], [], []
        for plan in plans:
            g, first = plan[k], plan[0]
            offset, n = len(rows), len(g.rows)
            rows.extend(g.rows)
            base = first.interventions if g.rows == first.rows else []
            prefix = len(base) if all(a is b for a, b in zip(g.interventions, base)) \
                and len(g.interventions) >= len(base) else 0
            head.extend(moved(iv, offset, n) for iv in g.interventions[:prefix])
            tail.extend(moved(iv, offset, n) for iv in g.interventions[prefix:])
            reads.extend(_shift_read(rd, offset, n) for rd in g.reads)
            count.append(len(g.reads))
        groups.append(Group(rows, head + tail, reads, key=plans[0][k].key))
        counts.append(count)
    return groups, counts


def unmerge(results: Sequence[Sequence[torch.Tensor]], counts: list[list[int]]) -> list[list[list[torch.Tensor]]]:
    """Per plan, per group, its readouts, from the results of ``merge``'s plan."""
    n_plans = len(counts[0])
    out: list = [[None] * len(counts) for _ in range(n_plans)]
    for k, (values, count) in enumerate(zip(results, counts)):
        start = 0
        for p, c in enumerate(count):
            out[p][k] = list(values[start:start + c])
            start += c
    return out


def digest_group(digest: Any, g: Group) -> None:
    """Feed ``g``'s content to a hashlib ``digest``: its rows, readouts and every
    intervention's fields and tensors, whole (a tensor's repr elides its middle)."""
    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            digest.update(f"tensor{tuple(x.shape)}{x.dtype}".encode())
            digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, (list, tuple)):
            digest.update(b"(")
            for v in x:
                feed(v)
            digest.update(b")")
        elif isinstance(x, Source):
            digest.update(b"Source")
            feed((x.row, x.positions, x.site))
        else:
            digest.update(repr(x).encode() + b",")

    feed([list(r) for r in g.rows])
    digest.update(repr(g.reads).encode())
    for iv in g.interventions:
        feed((iv.kind if isinstance(iv.kind, str) else type(iv.kind).__name__, iv.site, iv.positions,
              iv.heads, iv.rows, iv.subspaces, iv.source))
        for name in sorted(iv.params):
            feed((name, iv.params[name]))
        state = getattr(iv.kind, "state_dict", None)
        if not isinstance(iv.kind, str):  # a module's weights; any other callable by identity
            feed(list(state().values()) if callable(state) else repr(iv.kind))


def distinct(groups: Sequence[Group]) -> tuple[list[Group], list[int]]:
    """The plan's groups without repeats, and for each group the index of its one copy.

    Groups with the same rows, edits and readouts (``digest_group``) compute the same values
    (a key or value head swapped for each query head that reads it, under grouped-query
    attention).  Only groups whose edits are all pure kinds (``Intervention.kind`` a name)
    are compared: a callable kind may draw at random or keep state."""
    unique: list[Group] = []
    seen: dict = {}
    where = []
    for g in groups:
        key = None
        if all(isinstance(iv.kind, str) for iv in g.interventions):
            digest = hashlib.sha256()
            digest_group(digest, g)
            key = digest.digest()
        if key is None or key not in seen:
            if key is not None:
                seen[key] = len(unique)
            where.append(len(unique))
            unique.append(g)
        else:
            where.append(seen[key])
    return unique, where


def pack(groups: Sequence[Group], max_batch: int) -> Iterator[list[int]]:
    """Indices of groups per batch, in order, each batch at most ``max_batch`` rows.

    A group larger than ``max_batch`` runs alone.
    """
    batch, size = [], 0
    for i, g in enumerate(groups):
        n = len(g.rows)
        if batch and size + n > max_batch:
            yield batch
            batch, size = [], 0
        batch.append(i)
        size += n
    if batch:
        yield batch


CPU_BATCH_BYTES = 2 ** 30  # a CPU batch's activations (measured: larger ones no faster on SmolLM2)


def default_max_batch(model: Any, seq_len: int, keep: int = 1, fraction: float = 0.4) -> int:
    """Rows per batch that fit in ``fraction`` of free memory (GPU if the model is on one);
    on a CPU at most ``CPU_BATCH_BYTES`` of activations, so that a long sweep's memory stays
    bounded whatever the machine has free."""
    cfg = model.config
    param = next(module(model).parameters())
    bytes_per = param.element_size() if param.device.type != "meta" else 4
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    heads = cfg.num_attention_heads
    per_token = hidden * 16 + inter * 4 + heads * seq_len * 2
    per_row = seq_len * per_token * bytes_per + keep * cfg.vocab_size * 4 * 3
    if param.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(param.device)
        budget = free * fraction
    else:
        budget = min(_available_ram() * fraction, CPU_BATCH_BYTES)
    return int(max(1, min(8192, budget // max(per_row, 1))))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 ** 31
