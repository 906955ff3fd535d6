"""AtP*'s QK fix (Kramar et al. 2024): query and key patches through the exact softmax.

A patch of a head's query or key moves that head's attention pattern, and the softmax
saturates, so a first-order estimate through the scores misleads.  The QK fix computes the
pattern the patch would give exactly and takes only the rest linearly:

    estimate = sum_{t,s} dmetric/dA[h,t,s] * (A_patched - A)[h,t,s]

where dmetric/dA[h,t,s] = g[t,h] . v[s] (g: the metric's gradient at the head's output before
the output projection; v: the values).  A query patch at position p changes row p only; a key
patch at position p changes column p of every row, and its new rows follow from the old ones
in closed form.  Scores are read where the model computes them (the inputs of the attention
function: queries and keys after rotary embeddings and per-head norms, the mask, the scaling,
Gemma's soft cap, gpt-oss's sinks), so every family is covered without a per-family formula;
the recomputed pattern is checked against the model's attention output first.
"""

from __future__ import annotations

from typing import Any

import torch


def _scores(q: torch.Tensor, k: torch.Tensor, base: dict, n: int) -> torch.Tensor:
    """Pre-softmax scores ``(H, n, n)`` of queries ``q`` against keys ``k`` (already one per
    query head), with the model's scaling, soft cap and mask."""
    scaling = base["scaling"] if base["scaling"] is not None else q.shape[-1] ** -0.5
    s = q @ k.transpose(-1, -2) * scaling
    if base["softcap"]:
        s = torch.tanh(s / base["softcap"]) * base["softcap"]
    mask = base["mask"]
    if mask is None:
        causal = torch.ones(n, n, dtype=torch.bool, device=s.device).tril()
        return s.masked_fill(~causal, float("-inf"))
    mask = mask[0, 0, -n:, -n:].to(s.device)
    if mask.dtype == torch.bool:
        return s.masked_fill(~mask, float("-inf"))
    return s + mask.to(s.dtype)


def _lse(s: torch.Tensor, sinks: Any) -> torch.Tensor:
    """Log of the softmax normaliser per row, with gpt-oss's sink logit per head."""
    if sinks is not None:
        sink = sinks.to(s.dtype).view(-1, 1, 1).expand(s.shape[0], s.shape[1], 1)
        s = torch.cat([s, sink], dim=-1)
    return torch.logsumexp(s, dim=-1)


def estimates(base: dict, source: dict, grad_out: torch.Tensor, out: torch.Tensor,
              kind: str, where: str) -> torch.Tensor:
    """QK-fixed estimates for patching ``kind`` (``head_q`` or ``head_k``) from the source run.

    ``base``/``source``: ``tracer.gradients.attention_read`` of the two runs; ``grad_out``: ``(rows, n, H, dh)`` metric
    gradients at the heads' outputs (a row per GradDrop pass); ``out``: the base run's head
    outputs ``(n, H, dh)``, to check the recomputed pattern.  Returns ``(rows, n, heads)``:
    per position and query head (``head_q``) or key-value head (``head_k``).
    """
    f64 = torch.float64
    q, k, v = (base[x].to(f64) for x in ("q", "k", "v"))
    n_heads, n, _ = q.shape
    group = n_heads // k.shape[0]
    rep = lambda x: x.repeat_interleave(group, dim=0)  # noqa: E731 - kv head h // group
    k_rep, v_rep = rep(k), rep(v)
    s = _scores(q, k_rep, base, n)
    lse = _lse(s, base["sinks"])
    a = (s - lse[..., None]).exp()
    recomputed = (a @ v_rep).transpose(0, 1)
    if not torch.allclose(recomputed, out.to(f64), rtol=1e-3, atol=1e-4 * float(out.abs().max()) + 1e-6):
        raise ValueError(f"the QK fix could not recompute the attention pattern at {where} "
                         f"(its attention function does more than scaled, masked, soft-capped "
                         f"softmax attention); use method='atp' or 'gradrop' there")
    g = torch.einsum("rthd,hsd->rhts", grad_out.to(f64), v_rep)        # dmetric/dA
    if kind == "head_q":
        s_new = _scores(source["q"].to(f64), k_rep, base, n)
        a_new = (s_new - _lse(s_new, base["sinks"])[..., None]).exp()
        return torch.einsum("rhts,hts->rth", g, a_new - a)
    # key patch at p: entry (t, p) of every row moves to s_new[t, p]; the row renormalises
    s_new = _scores(q, rep(source["k"].to(f64)), base, n)
    a_p = (s_new - lse[..., None]).clamp(max=700).exp()               # new unnormalised weight
    c = 1 - a + a_p                                                    # new normaliser / old
    m = (g * a).sum(-1, keepdim=True)                                  # (rows, H, t, 1)
    eff = (1 / c - 1) * m + g * (a_p - a) / c                          # (rows, H, t, p)
    per_head = eff.sum(2)                                              # (rows, H, p)
    per_kv = per_head.unflatten(1, (k.shape[0], group)).sum(2)         # (rows, Hkv, p)
    return per_kv.transpose(1, 2)
