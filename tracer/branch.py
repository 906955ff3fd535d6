"""Branching: rows that share a prompt compute it once.

A reuse batch (``tracer.reuse``) scoring several continuations of one prompt holds one row
per (prompt, continuation): the prompt's tokens, and the edits made on them, repeat in each.
Rows of a cell that have the same tokens before their first readout and the same edits
there form a *class*; when the batch has classes of several rows it can run as two traces:

- the prefix pass: one row per class, its shared tokens (left-padded, so that every class
  ends at the same column), from the batch's first edited column on, with the class's
  edits, filling a KV cache;
- the suffix pass: every row's own tokens after its class's (right-padded, so each row's
  tokens follow its prompt's without a gap: sliding windows and position ids are what the
  full run computes), attending to its class's prompt through that cache, with the
  readouts.

Every edit of a branched row lies in its prefix and every readout after it, so the two
passes compute exactly what the one pass does.  ``split`` decides, from the same costs
that lay out the batches (``tracer.costs``), whether the two passes are cheaper.  Client
side; the trace-time half is ``patches.branch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .costs import Costs
from .interventions import Source
from .plan import Group, _is_add, _is_copy, _is_set
from .sites import site as resolve_site


# Branch only where the costs predict a tenth of the batch saved: the second pass's own fixed
# costs (its cache's gathers, its inputs) are not in them.  Measured on SmolLM2 (2 CPU cores),
# a batch predicted at 0.96 of the one-pass time took 1.02 as two passes; at 0.6, 0.64.
MARGIN = 0.9


@dataclass
class Split:
    """A batch's groups as a prefix pass and a suffix pass."""

    prefix: list           # per group: one row per class (its shared tokens), its edits
    suffix: list           # per group: every row, its readouts, no edits
    shared: list           # per batch row: the tokens its class's prefix holds
    of_row: list           # per batch row: its class's row in the prefix pass
    reps: list             # per prefix row: the batch row it stands for
    width: int             # the prefix pass's columns
    start: int             # its first column computed
    suffix_width: int      # the suffix pass's columns


def _positions(positions: Optional[Sequence[int]], n: int) -> tuple:
    return tuple(range(n)) if positions is None else tuple(p % n for p in positions)


def _classes(model: Any, g: Group, names: dict) -> Optional[tuple[list, list, list]]:
    """A group's rows as classes: (per row its shared length, per row its class, per class
    its rows), or None when an edit or readout keeps the group from branching."""
    n = len(g.rows)
    lengths = [len(r) for r in g.rows]
    shared = [m - 1 for m in lengths]  # at least one token of each row in the suffix pass
    for rd in g.reads:
        r = rd.row % n
        shared[r] = min(shared[r], min(_positions(rd.positions, lengths[r])))
    edits: list = [[] for _ in range(n)]
    for iv in g.interventions:
        if not (_is_copy(iv) or _is_add(iv) or _is_set(iv)):
            return None
        dst = iv.rows[0] % n
        pos = _positions(iv.positions, lengths[dst])
        if _is_copy(iv):
            src = iv.source.row % n
            value: Any = (src, _positions(iv.source.positions, lengths[src]))
        else:
            src, value = None, iv.params["vector"] if _is_add(iv) else iv.source
        if iv.site not in names:
            names[iv.site] = resolve_site(model, iv.site).name
        edits[dst].append((iv.kind, names[iv.site], pos, iv.heads, src, value))
    if min(shared) < 1:
        return None  # a row read from its first token: no prompt before it to share
    for r in range(n):
        for _, _, pos, _, src, value in edits[r]:
            if max(pos) >= shared[r] or (src is not None and max(value[1]) >= shared[src]):
                return None  # an edit after a readout: the rows differ where they are edited
    keys: dict = {}
    of_row = [keys.setdefault((shared[r], tuple(g.rows[r][:shared[r]])), len(keys)) for r in range(n)]
    members: list = [[] for _ in keys]
    for r in range(n):
        members[of_row[r]].append(r)
    for rows in members:
        if any(not _same(edits[rows[0]], edits[r], of_row) for r in rows[1:]):
            return None
    return shared, of_row, members


def _same(a: list, b: list, of_row: list) -> bool:
    """Two rows' edits are one class's: equal, their copies' sources in the same class."""
    if len(a) != len(b):
        return False
    for (ka, sa, pa, ha, ra, va), (kb, sb, pb, hb, rb, vb) in zip(a, b):
        if (ka, sa, pa, ha) != (kb, sb, pb, hb) or (ra is None) != (rb is None):
            return False
        if ra is not None:
            if of_row[ra] != of_row[rb] or va[1] != vb[1]:
                return False
        elif va.shape != vb.shape or not torch.equal(va, vb):
            return False
    return True


def split(model: Any, groups: Sequence[Group], layers: int, columns: int, costs: Costs) -> Optional[Split]:
    """``groups`` (a reuse batch computing ``columns`` padded columns through ``layers``
    layers) as a prefix and a suffix pass, or None when that is not possible or not
    predicted to be faster."""
    names: dict = {}
    found = []
    for g in groups:
        got = _classes(model, g, names)
        if got is None:
            return None
        found.append(got)
    if all(len(members) == len(g.rows) for g, (_, _, members) in zip(groups, found)):
        return None  # no two rows share a prompt
    shared_all, of_all, reps, prefix, suffix = [], [], [], [], []
    firsts, lengths = [], []
    offset = 0
    for g, (shared, of_row, members) in zip(groups, found):
        base = len(reps)
        first = [shared[rows[0]] for rows in members]
        ivs = []
        for iv in g.interventions:
            dst = iv.rows[0] % len(g.rows)
            c = of_row[dst]
            if members[c][0] != dst:
                continue  # the class's first row stands for all
            pos = _positions(iv.positions, len(g.rows[dst]))
            first[c] = min(first[c], min(pos))
            if _is_copy(iv):
                src = iv.source.row % len(g.rows)
                src_pos = _positions(iv.source.positions, len(g.rows[src]))
                first[of_row[src]] = min(first[of_row[src]], min(src_pos))
                ivs.append(iv.replace(rows=[c], positions=pos, source=Source(row=of_row[src], positions=src_pos)))
            else:
                ivs.append(iv.replace(rows=[c], positions=pos))
        prefix.append(Group([g.rows[rows[0]][:shared[rows[0]]] for rows in members], ivs, [], key=g.key))
        suffix.append(Group(g.rows, [], list(g.reads), key=g.key))
        reps.extend(offset + rows[0] for rows in members)
        firsts.extend(first)
        lengths.extend(shared[rows[0]] for rows in members)
        shared_all.extend(shared)
        of_all.extend(base + c for c in of_row)
        offset += len(g.rows)
    width = max(lengths)
    start = min(width - m + f for m, f in zip(lengths, firsts))
    suffix_width = max(len(row) - s for row, s in zip((r for g in groups for r in g.rows), shared_all))
    branched = (costs.batch_seconds(layers, len(reps) * (width - start))
                + costs.batch_seconds(layers, offset * suffix_width))
    if branched > MARGIN * costs.batch_seconds(layers, offset * columns):
        return None
    return Split(prefix, suffix, shared_all, of_all, reps, width, start, suffix_width)


def suffix_inputs(split: Split, rows: Sequence[Sequence[int]], prefix_mask: torch.Tensor,
                  pad: int) -> dict:
    """The suffix pass's inputs: each row's tokens after its class's prefix, right-padded;
    its attention mask covers its class's prefix row, then its own tokens; position ids go
    on from the prefix (a pad repeats its row's last one)."""
    n, w = len(rows), split.suffix_width
    ids = torch.full((n, w), pad, dtype=torch.long)
    own = torch.zeros((n, w), dtype=torch.long)
    positions = torch.zeros((n, w), dtype=torch.long)
    for i, (row, s) in enumerate(zip(rows, split.shared)):
        k = len(row) - s
        ids[i, :k] = torch.tensor(list(row[s:]), dtype=torch.long)
        own[i, :k] = 1
        positions[i] = s + torch.arange(w).clamp(max=k - 1)
    mask = torch.cat([prefix_mask[torch.tensor(split.of_row)], own], dim=1)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
