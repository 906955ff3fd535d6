"""A model as a graph of components, and the forward pass that gives each receiver its own input.

The graph is the one of Hanna et al. 2024 and the MIB benchmark.  Senders write to the
residual stream: ``input`` (the first layer's input: the embeddings), every attention head's
output ``a{L}.h{H}`` and every MLP ``m{L}``.  Receivers read it: every head's query, key and
value input (``a{L}.h{H}<q>``; keys and values per key-value head, ``a{L}.g{G}<k>``, under
grouped-query attention), every MLP's input ``m{L}`` and the ``logits`` (the final norm's
input).  An edge joins a sender to every receiver after it along the residual stream.

Two families' structure changes the graph:

- parallel attention and MLP (GPT-NeoX): layer L's MLP reads the stream before layer L's
  attention writes it, so its heads have no edge to ``m{L}``;
- a norm on the attention's output before it is added (Gemma 2 and 3, OLMo 2): the heads'
  sum is normed as a whole, so a single head writes nothing of its own to the stream; the
  sender is the layer's attention, ``a{L}`` (its receivers stay per head).

A mixture-of-experts MLP is one node (its experts are one fused module).

``walk`` runs inside a trace the caller opens (locally or on NDIF, shipped by value): every
receiver computes its own input, the stream plus, for each sender in ``excluded``, that
sender's value in the row's corrupted run minus its value in this run (edge patching), or
plus a zero leaf whose gradient is the metric's gradient at that receiver alone (edge
attribution).  Each head receiver runs the attention's input norm and its projection on its
own input (nnsight's ad hoc module calls); the MLPs' and the logits' inputs are replaced.
This module imports only torch and trace-time modules.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .gradients import metric
from .sites import Site, config, dims_of, envoy, family_for, module


class Graph:
    """The senders, receivers and edges of one model (plain lists, built from its config)."""

    def __init__(self, model: Any):
        self.family = fam = family_for(config(model), module(model))
        self.dims = d = dims_of(config(model))
        self.per_head = fam.residual != "post"
        self.parallel = d.parallel_residual
        kv = "h" if d.n_kv_heads == d.n_heads else "g"
        self.senders: list[str] = ["input"]
        self.receivers: list[str] = []
        # when each acts: the layer plus a fraction ordering its stages (an edge joins a sender
        # to a later receiver)
        s_time, r_time = [-1.0], []
        self.attn_receivers: dict[int, tuple[int, int]] = {}
        self.mlp_receiver: dict[int, int] = {}
        for layer in range(d.n_layers):
            start = len(self.receivers)
            self.receivers += [f"a{layer}.h{h}<q>" for h in range(d.n_heads)]
            self.receivers += [f"a{layer}.{kv}{g}<{x}>" for x in "kv" for g in range(d.n_kv_heads)]
            self.attn_receivers[layer] = (start, len(self.receivers))
            r_time += [layer + 0.0] * (len(self.receivers) - start)
            heads = [f"a{layer}.h{h}" for h in range(d.n_heads)] if self.per_head else [f"a{layer}"]
            self.senders += heads
            s_time += [layer + 0.25] * len(heads)
            self.mlp_receiver[layer] = len(self.receivers)
            self.receivers.append(f"m{layer}")
            r_time.append(layer + (0.125 if self.parallel else 0.5))
            self.senders.append(f"m{layer}")
            s_time.append(layer + 0.75)
        self.receivers.append("logits")
        r_time.append(float(d.n_layers))
        self._times = (s_time, r_time)
        self._valid: Optional[torch.Tensor] = None

    @property
    def valid(self) -> torch.Tensor:
        """(senders, receivers) bool: where an edge exists (made on first use: the passes
        inside a trace need only the index ranges)."""
        if self._valid is None:
            s_time, r_time = self._times
            self._valid = torch.tensor(s_time)[:, None] < torch.tensor(r_time)[None, :]
        return self._valid

    @property
    def shape(self) -> tuple[int, int]:
        """(senders, receivers)."""
        return len(self.senders), len(self.receivers)


def _diagonal(full: torch.Tensor, site: Site) -> torch.Tensor:
    """From a projection run once per head on that head's own input (the leading axis),
    each head's part of its own run: ``(rows, s, heads, head_dim)``."""
    heads = site.view(full)                                      # (n, rows, s, n, dh)
    idx = torch.arange(heads.shape[0], device=heads.device)
    return heads[idx, :, :, idx].permute(1, 2, 0, 3)              # (rows, s, n, dh)


def walk(model: Any, corrupt: list, base: list, interp: list,
         excluded: Optional[torch.Tensor], leaves: bool) -> tuple:
    """Inside a trace: one forward pass with every receiver on its own input.

    ``corrupt[i]``/``base[i]``: row pairs whose senders' differences (corrupt minus base) are
    kept, stacked as ``(senders, len(base), s, d)``; in patch mode (``excluded`` given) base
    is every row and corrupt each row's corrupted run.  ``interp``: (row, clean row, corrupt
    row, alpha) for rows whose first-layer input becomes corrupt + alpha (clean - corrupt)
    (integrated gradients).  ``excluded`` (rows, senders, receivers):
    1 where a row's receiver sees the sender's corrupted value.  ``leaves``: a zero leaf
    requiring grad on every receiver's input.  Returns (logits, differences, leaves in
    receiver order).
    """
    g = Graph(model)
    f, d = g.family, g.dims
    layer = lambda i: f"{f.layers}.{i}"  # noqa: E731
    c_idx, b_idx = torch.tensor(corrupt), torch.tensor(base)
    made: list = []
    state: dict = {}

    def add(values: torch.Tensor) -> None:  # senders' values (n, rows, s, d)
        n = state["n"]
        values = values.detach()
        state["diff"][n:n + len(values)] = values[:, c_idx] - values[:, b_idx]
        state["n"] = n + len(values)

    def delta(lo: int, hi: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """What receivers lo..hi add to the stream ``x`` (rows, s, d); None: nothing."""
        out = None
        if excluded is not None:
            mask = excluded[:, :state["n"], lo:hi].to(x.device)
            if bool(mask.any()):
                out = torch.einsum("ubsd,bur->rbsd", state["diff"][:state["n"]], mask.to(x.dtype))
        if leaves:
            leaf = torch.zeros((hi - lo,) + tuple(x.shape), dtype=x.dtype, device=x.device,
                               requires_grad=True)
            made.append(leaf)
            out = leaf if out is None else out + leaf
        return out

    x = envoy(model, layer(0)).input
    if interp:
        rows, clean, corr, alpha = (list(t) for t in zip(*interp))
        a = torch.tensor(alpha, dtype=x.dtype, device=x.device)[:, None, None]
        x[rows] = x[corr] + a * (x[clean] - x[corr])
    state["diff"] = torch.zeros((g.shape[0], len(base)) + tuple(x.shape[1:]), dtype=x.dtype,
                                device=x.device)
    state["n"] = 0
    add(x[None])
    for i in range(d.n_layers):
        if i:
            x = envoy(model, layer(i)).input
        lo, hi = g.attn_receivers[i]
        extra = delta(lo, hi, x)
        if extra is not None:
            _split_attention(model, g, i, x[None] + extra)
        out = envoy(model, f"{layer(i)}.{f.o_proj}")
        z = out.input
        if g.per_head:
            zz = z.detach().unflatten(-1, (d.n_heads, d.head_dim))
            eye = torch.eye(d.n_heads, dtype=z.dtype, device=z.device)[:, None, None, :, None]
            masked = (zz[None] * eye).flatten(-2)
            with torch.no_grad():
                add(out(masked) - out(torch.zeros_like(masked[:1])))
        else:
            add(envoy(model, f"{layer(i)}.{f.post_attn}").output[None])
        mid = envoy(model, f"{layer(i)}.{f.mid_norm}")
        r = mid.input
        extra = delta(g.mlp_receiver[i], g.mlp_receiver[i] + 1, r)
        if extra is not None:
            mid.input = r + extra[0]
        if g.per_head:
            add(Site(model, "mlp_out", layer=i).raw()[None])
        else:
            add(envoy(model, f"{layer(i)}.{f.post_mlp}").output[None])
    final = envoy(model, f.final_norm)
    r = final.input
    extra = delta(g.shape[1] - 1, g.shape[1], r)
    if extra is not None:
        final.input = r + extra[0]
    return envoy(model, f.lm_head).output, state["diff"], made


def _split_attention(model: Any, g: Graph, i: int, inputs: torch.Tensor) -> None:
    """Every head's query, key and value computed from its own input ``inputs`` (receivers
    in order: query heads, key heads, value heads; each (rows, s, d))."""
    f, d = g.family, g.dims
    at = f"{f.layers}.{i}"
    normed = envoy(model, f"{at}.{f.attn_norm}")(inputs) if f.attn_norm else inputs
    n_q, n_kv = d.n_heads, d.n_kv_heads
    parts = {"head_q": (0, n_q), "head_k": (n_q, n_q + n_kv), "head_v": (n_q + n_kv, n_q + 2 * n_kv)}
    if f.qkv:
        proj = envoy(model, f"{at}.{f.qkv}")
        runs = proj(normed)
        new = proj.output.clone()
        for kind, (lo, hi) in parts.items():
            site = Site(model, kind, layer=i)
            site.view(new)[...] = _diagonal(runs[lo:hi], site)
        proj.output = new
        return
    paths = dict(zip(parts, f.linear_qk + (f.v_proj,) if f.linear_qk else (f.q_proj, f.k_proj, f.v_proj)))
    for kind, (lo, hi) in parts.items():
        proj = envoy(model, f"{at}.{paths[kind]}")
        proj.output = _diagonal(proj(normed[lo:hi]), Site(model, kind, layer=i)).flatten(-2)


def answer_logprobs(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Each row's next-token log-probabilities of its answers ``(rows, A)``."""
    return logits[:, -1].float().log_softmax(-1).gather(1, answer.to(logits.device))


def scores_pass(model: Any, corrupt: list, base: list, interp: list,
                weight: torch.Tensor, answer: torch.Tensor, name: Optional[str],
                fn: Optional[Callable]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inside a trace with gradients on: edge attribution scores per pair ``(pairs, senders,
    receivers)``: (corrupt - base) at each sender times the metric's gradient at each
    receiver, the gradient averaged over rows with ``weight`` (rows, pairs); and the rows'
    answer log-probabilities."""
    logits, diff, made = walk(model, corrupt, base, interp, None, True)
    lp = answer_logprobs(logits, answer)
    w = weight.to(lp.device)
    # each weighted row's own gradient, weighted once below
    (metric(name, fn, lp) * (w.sum(1) != 0)).sum().backward()
    grad = torch.cat([leaf.grad for leaf in made])                      # (V, rows, s, d)
    per_pair = torch.einsum("vbsd,bp->vpsd", grad.float(), w.float())
    return torch.einsum("upsd,vpsd->puv", diff.float(), per_pair), lp.detach()


def patch_pass(model: Any, corrupt: list, excluded: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Inside a trace: each row's answer log-probabilities with the edges ``excluded`` (rows,
    senders, receivers) seeing the row's corrupted run (``corrupt[row]``)."""
    rows = list(range(len(corrupt)))
    logits, _, _ = walk(model, corrupt, rows, [], excluded, False)
    return answer_logprobs(logits, answer)


PASSES = {"scores": scores_pass, "patch": patch_pass}


def run(model: Any, kind: str, args: tuple) -> Any:
    """Inside a trace: the pass ``kind`` (``"scores"`` or ``"patch"``) on ``args`` (plain
    values and tensors: what a remote session's loop can ship)."""
    return PASSES[kind](model, *args)
