"""The trace-time half of attribution patching: site values and metric gradients.

``source_pass`` reads the sites (and, for AtP*'s QK fix, the inputs of each layer's attention
function) in a source run; ``base_pass`` reads the same in a base run of several identical
rows and backpropagates a metric of the last position's log-probabilities, row 1 + l with no
gradient through layer l's attention and MLP (GradDrop).  Both run inside a trace the caller
opens, locally or in one NDIF session (shipped by value), so this module imports only torch
and trace-time modules.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .sites import Site, config, envoy, family_for, module

METRICS = ("prob", "logprob", "logit_diff")


def _caller(model: Any, path: str) -> tuple[Any, str]:
    """The module at or under the attention module ``path`` that calls the attention
    function, and the call's operation name (the family table's ``pattern``)."""
    spec = family_for(config(model), module(model)).pattern or ":attention_interface"
    where, _, op = spec.partition(":")
    return envoy(model, f"{path}.{where}" if where else path), op


def attention_call(model: Any, path: str) -> Any:
    """The operation of the attention module at ``path`` that calls the attention function
    (nnsight's ``.source``): its inputs hold queries, keys, values and mask."""
    env, op = _caller(model, path)
    names = [n for n in env.source.names if n.startswith(op + "_")]
    if not names:
        raise ValueError(f"{path} calls no attention function that the QK fix can read")
    # attention_interface_0 is the assignment of the function, the last one its call
    return getattr(env.source, max(names, key=lambda n: int(n.rsplit("_", 1)[1])))


def instrument(model: Any, attention: dict) -> None:
    """Make the attention modules' operations readable (nnsight instruments a module's
    source when first asked, which inside a trace is too late for a module already running)."""
    for path in attention.values():
        attention_call(model, path)


def attention_read(model: Any, path: str) -> dict:
    """Inside a trace: the attention function's tensors for the invoke's first row."""
    args, kwargs = attention_call(model, path).inputs
    if isinstance(args[0], torch.Tensor):
        # a method of the attention module (GPT-Neo's _attn(q, k, v, mask)): unscaled, its
        # causal or local window a boolean buffer it applies before the mask it is given
        q, k, v = args[0][0], args[1][0], args[2][0]
        n = q.shape[-2]
        window = module(_caller(model, path)[0]).bias[0, 0, :n, :n].to(q.device)
        mask = torch.zeros(n, n, dtype=q.dtype, device=q.device).masked_fill(~window, float("-inf"))
        given = args[3] if len(args) > 3 else kwargs.get("attention_mask")
        if given is not None:
            mask = mask + given[0, 0, -n:, -n:].to(q.dtype)
        return {"q": q, "k": k, "v": v, "mask": mask[None, None], "scaling": 1.0,
                "softcap": None, "sinks": None}
    return {"q": args[1][0], "k": args[2][0], "v": args[3][0], "mask": args[4],
            "scaling": kwargs.get("scaling"), "softcap": kwargs.get("softcap"),
            "sinks": kwargs.get("s_aux")}


def metric(name: Optional[str], fn: Optional[Callable], lp: torch.Tensor) -> torch.Tensor:
    """The metric per row on log-probabilities ``(rows, answers)``, differentiably: a named
    one, or a torch function of ``lp`` (local runs only)."""
    if name == "prob":
        return lp[:, 0].exp()
    if name == "logprob":
        return lp[:, 0]
    if name == "logit_diff":
        return lp[:, 0] - lp[:, 1]
    out = fn(lp)
    if not isinstance(out, torch.Tensor):
        raise TypeError("attribute needs a metric that works on torch tensors "
                        "('prob', 'logprob', 'logit_diff' or a torch function)")
    return out


def source_pass(sites: list, attention: dict) -> tuple[list, dict]:
    """Inside a trace: the module tensors at ``sites`` (in execution order) and the
    attention function's inputs at ``attention`` (layer -> module path) of the sites' layers."""
    values, attn = [], {}
    for s in sites:  # a query or key projection runs before its attention function
        values.append(s.raw())
        if s.layer in attention:
            attn[s.layer] = attention_read(s.model, attention[s.layer])
    return values, attn


def base_pass(model: Any, walk: list, wanted: set, drops: set, attention: dict,
              answer: torch.Tensor, name: Optional[str], fn: Optional[Callable]) -> tuple:
    """Inside a trace with gradients on: values at every site of ``walk`` (execution order)
    and the metric's gradients at those in ``wanted`` (names), row 1 + l with no gradient
    through the sites named in ``drops`` of layer l; the attention function's inputs before
    each ``head_out`` of a layer in ``attention``.  Returns (values by name, attention
    inputs by layer, gradients in reverse walk order of ``wanted``)."""
    Site(model, "embed").raw().requires_grad_(True)
    acts, attn = {}, {}
    for s in walk:
        if s.kind == "head_out" and s.layer in attention:  # the attention function first
            attn[s.layer] = attention_read(model, attention[s.layer])
        acts[s.name] = s.raw()
    lp = model.output.logits[:, -1].float().log_softmax(-1)[:, answer]
    total = metric(name, fn, lp).sum()
    grads = []
    with total.backward():
        for s in reversed(walk):
            g = acts[s.name].grad
            if s.name in drops:
                g = g.clone()
                g[1 + s.layer] = 0  # row 1 + l: no gradient through layer l's sublayers
                acts[s.name].grad = g
            if s.name in wanted:
                grads.append(g)
    return acts, attn, grads
