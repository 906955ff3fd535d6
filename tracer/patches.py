"""The trace-time half of the engine: one compiled batch, applied and read inside a trace.

A ``Batch`` holds the inputs of one forward pass, per-site operations in execution order
(vectorised copies between rows and additions, then interventions applied through their
record) and the readouts as flat index tensors.  ``run_batch`` does all of it inside the
current trace and returns the readouts as a list of tensors.

Runs inside traces, locally and on NDIF (shipped by value), so it imports only torch and
other trace-time modules.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .sites import Site, config, envoy, family_for, module


class SiteOps:
    """Everything one batch does at one site: copies, additions, records, then reads."""

    def __init__(self, site: Site):
        self.site = site
        self.copy_dst: Optional[tuple] = None
        self.copy_src: Optional[tuple] = None
        self.add_idx: Optional[tuple] = None
        self.add_val: Optional[torch.Tensor] = None
        self.set_idx: Optional[tuple] = None     # constant values (a source run read earlier)
        self.set_val: Optional[torch.Tensor] = None
        # set_val to gather from an earlier run's readouts: (slot, flat index, head index)
        self.set_from: Optional[tuple] = None
        self.records: list = []      # (Intervention, batch rows, padded positions or None)
        self.read_idx: Optional[tuple] = None   # (rows, positions) flattened

    def apply(self) -> Optional[torch.Tensor]:
        """Edit the site, then return the values read at it (or None)."""
        if self.add_idx is not None or self.copy_dst is not None or self.set_idx is not None:
            x = self.site.tensor()
            if self.add_idx is not None:
                idx = tuple(i.to(x.device) for i in self.add_idx)
                x[idx] = x[idx] + self.add_val.to(device=x.device, dtype=x.dtype)
            if self.set_idx is not None:
                idx = tuple(i.to(x.device) for i in self.set_idx)
                x[idx] = self.set_val.to(device=x.device, dtype=x.dtype)
            if self.copy_dst is not None:
                dst = tuple(i.to(x.device) for i in self.copy_dst)
                src = tuple(i.to(x.device) for i in self.copy_src)
                x[dst] = x[src]
        for record, rows, positions in self.records:
            record.apply(self.site.model, rows=rows, positions=positions)
        if self.read_idx is None:
            return None
        x = self.site.tensor()
        got = x[self.read_idx[0].to(x.device), self.read_idx[1].to(x.device)]
        return got.flatten(-2) if self.site.flat else got


class Batch:
    """One forward pass: inputs, site operations in execution order, logits readouts.

    With ``skip`` = (layer paths, value) the listed layers do not run and the last of them
    returns ``value`` (states an earlier run computed: ``tracer.reuse``)."""

    def __init__(self, inputs: dict, ops: list, keep: int, token_idx: Optional[tuple] = None,
                 dist_idx: Optional[tuple] = None):
        self.inputs, self.ops, self.keep = inputs, ops, keep
        self.token_idx = token_idx   # (rows, kept positions, tokens)
        self.dist_idx = dist_idx     # (rows, kept positions)
        self.skip: Optional[tuple] = None
        self.cache: Any = None       # a transformers Cache: earlier columns' keys and values
        # what ``prepare`` gathers from the reference run (``tracer.reuse``):
        self.skip_from: Optional[tuple] = None   # (layer paths, slot, flat index (rows, cols))
        # (reference rows, columns kept: a count, or per row the reference columns)
        self.cache_from: Optional[tuple] = None
        # a suffix pass (``tracer.branch``): the prefix pass it continues, and per row that
        # pass's row, its columns and the model's layer count
        self.prefix: Optional["Batch"] = None
        self.branch_from: Optional[tuple] = None

    @property
    def n_rows(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


def run_batch(model: Any, batch: Batch) -> list:
    """Inside a trace of ``batch.inputs``: apply every operation, return the readouts
    ``[site reads in op order..., token log-probs, distributions]`` (absent ones skipped)."""
    out = []
    if batch.skip is not None:
        paths, value = batch.skip
        if family_for(config(model), module(model)).layer_tuple:
            value = (value, None)  # the layer's own (hidden, attention weights) shape
        for path in paths:
            envoy(model, path).skip(value)
    for ops in batch.ops:
        got = ops.apply()
        if got is not None:
            out.append(got)
    if batch.token_idx is not None or batch.dist_idx is not None:
        logits = model.output.logits
        if batch.token_idx is not None:
            rows, pos, tokens = (t.to(logits.device) for t in batch.token_idx)
            # one log-softmax over the vocabulary per position read, however many tokens
            # are read there (every continuation of a prompt reads its last position)
            width = logits.shape[1]
            kept, inverse = torch.unique(rows * width + pos, return_inverse=True)
            lp = logits[kept // width, kept % width].float().log_softmax(-1)
            out.append(lp[inverse, tokens])
        if batch.dist_idx is not None:
            rows, pos = (t.to(logits.device) for t in batch.dist_idx)
            out.append(logits[rows, pos].float().log_softmax(-1))
    return out


def _gather(slot: torch.Tensor, index: torch.Tensor, heads: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows of a flat readout (index -1: a zero row, for padding)."""
    padded = torch.cat([slot, torch.zeros_like(slot[:1])])
    index = index.to(padded.device)
    return padded[index] if heads is None else padded[index, heads.to(padded.device)]


def prepare(batch: Batch, outputs: list, cache: Any, empty: bool = False) -> Any:
    """Fill a reuse batch from the reference run: its outputs (``run_batch``'s list) give
    the constant values and the skipped layers' output; ``cache`` (the reference run's
    transformers Cache) gives the earlier columns' keys and values.  Returns the batch's own
    cache (a new one of the same type), or None; with ``empty`` an empty one rather than None
    (a prefix pass fills it, ``tracer.branch``).  Trace-time: runs inside NDIF sessions."""
    for ops in batch.ops:
        if ops.set_from is not None:
            slot, index, heads = ops.set_from
            ops.set_val = _gather(outputs[slot], index, heads)
    if batch.skip_from is not None:
        paths, slot, index = batch.skip_from
        batch.skip = (paths, _gather(outputs[slot], index))
    if batch.cache_from is None:
        return type(cache)() if empty else None
    rows, columns = batch.cache_from
    own = type(cache)()
    for i, layer in enumerate(cache.layers):
        r = rows.to(layer.keys.device)
        if isinstance(columns, int):
            own.update(layer.keys[r, :, :columns], layer.values[r, :, :columns], i)
        else:  # (rows, columns) -> (rows, columns, heads, dim): heads back in second place
            c = columns.to(layer.keys.device)
            own.update(layer.keys[r[:, None], :, c].transpose(1, 2),
                       layer.values[r[:, None], :, c].transpose(1, 2), i)
    return own


def branch(batch: Batch, prefix_cache: Any) -> Any:
    """A suffix pass's cache: each row's class's keys and values from the prefix pass
    (``tracer.branch``).  Layers the prefix pass skipped hold zeros of its width: the suffix
    pass skips them too, but the cache's length is read from its first layer."""
    rows, width, n_layers = batch.branch_from
    own = type(prefix_cache)()
    layers = [layer if layer.is_initialized and layer.keys.shape[-2] == width else None
              for layer in prefix_cache.layers]
    layers += [None] * (n_layers - len(layers))
    like = next(layer.keys for layer in layers if layer is not None)
    for i, layer in enumerate(layers):
        if layer is not None:
            r = rows.to(layer.keys.device)
            own.update(layer.keys[r], layer.values[r], i)
        else:
            zeros = like.new_zeros((len(rows),) + tuple(like.shape[1:]))
            own.update(zeros, zeros, i)
    return own
