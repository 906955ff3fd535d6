"""Attribution patching: every patch effect of a sweep estimated from gradients.

``attribute(model, base, source, answers, site=...)`` estimates, for every layer and position
(or head), the change of ``metric`` when ``site`` there is patched from the source run into
the base run, as ``sweep`` measures it exactly, from one forward pass on the source and one
forward and backward pass on the base (Nanda 2023, "attribution patching"):

    AtP(l, p) = (a_source - a_base)[l, p] . d metric / d a[l, p]   (at the base run)

Plain AtP is first order and fails where the model saturates (the patch moves far).  AtP*
(Kramar et al. 2024) adds two corrections.  The QK fix (``recipes.qkfix``) takes query and
key patches through the exact softmax: the attention pattern the patch gives is computed,
only the rest is linear.  GradDrop fights cancellation between paths: L more backward
passes, pass l with no gradient through layer l's attention and MLP, and the estimate is the
magnitude ``1/(L-1) sum_l |AtP_l|``.  ``method``: ``"atp"`` (plain), ``"qk"`` (QK fix,
signed), ``"gradrop"`` (GradDrop), ``"atp*"`` (both); the QK fix changes only ``head_q`` and
``head_k`` estimates.  All passes run as rows of one batch: one trace.
``verify=k`` patches ``k`` cells exactly (the largest estimates) and warns when their rank
order disagrees with the estimates.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, gradients
from tracer.resume import steps as resume_steps

from . import dataset, qkfix
from .patching import _answer_ids, _columns_of, _layers, _model, _pairs, metric_fn, sweep
from .results import SweepResult

METHODS = ("atp", "qk", "gradrop", "atp*")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def attribute(model: Any, base: Any = None, source: Any = None, answers: Any = None,
              site: str = "resid_pre", metric: Union[str, Callable] = "logprob",
              method: str = "atp", layers: Optional[Sequence[int]] = None,
              heads: bool = False, verify: int = 0, roles: Optional[dict] = None,
              data: Any = None, seed: int = 0, progress: Any = True) -> SweepResult:
    """Estimated patch effects of ``site`` (source into base), layer x position, or layer x
    head (all positions together) with ``heads=True`` on a head site, or layer x role with
    ``roles`` (each role's span as one patch: the sum of its positions' estimates).

    One pair (strings) or a data set as ``interchange.sweep`` takes it: the estimates are
    the mean over pairs, each pair's kept in ``per_prompt``.  ``method``: ``"atp"`` (signed
    first-order estimates of the metric's change), ``"qk"`` (signed, query and key patches
    through the exact softmax; pairs of equal length), ``"gradrop"`` (GradDrop magnitudes)
    or ``"atp*"`` (QK fix and GradDrop).  ``metric`` as in ``sweep`` (default ``"logprob"``
    of the first answer).  On a remote model each pair's passes are one NDIF request
    (named metrics only).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    model = _model(model)
    remote = tracer.execute.is_remote(model)
    if remote and callable(metric):
        raise ValueError(f"a remote attribute needs a named metric ({', '.join(gradients.METRICS)}): "
                         f"a Python function cannot be shipped to NDIF")
    tok = model.tokenizer
    items = _pairs(base, source, answers, roles, data)
    dims = tracer.sites.dims_of(model.config)
    layers = _layers(layers, dims.n_layers)
    sites = [tracer.site(model, site, layer=layer) for layer in layers]
    if heads and sites[0].n_heads is None:
        raise ValueError(f"heads=True needs a head site; {site!r} has no heads")
    ids, spans, cols, labels, axis = _columns_of(tok, items, None, "each" if heads else None, sites[0])
    answer_ids = [_answer_ids(tok, list(p.answers), model.config.vocab_size) for p in items]
    name, fn = metric_fn(metric, min(len(a) for a in answer_ids))
    drops = list(range(dims.n_layers)) if method in ("gradrop", "atp*") else []
    qk = method in ("qk", "atp*") and sites[0].kind in ("head_q", "head_k")
    if qk:
        for (b_ids, s_ids), p in zip(ids, items):
            if len(b_ids) != len(s_ids):
                raise ValueError(f"method {method!r} on {site}: base {p.base!r} and source {p.source!r} "
                                 f"have {len(b_ids)} and {len(s_ids)} tokens; the QK fix pairs them "
                                 f"position by position")
    per_pair = []
    for (b_ids, s_ids), span, ans in resume_steps(list(zip(ids, spans, answer_ids)), "attribution", progress):
        grads, base_acts, src_acts, attn = _passes(model, b_ids, s_ids, sites, drops, ans,
                                                   None if callable(metric) else name, fn, qk, remote)
        est = []
        for s in sites:
            if qk:
                b_read, s_read, g_out, out = attn[s.layer]
                by_pos = qkfix.estimates(b_read, s_read, g_out, out, s.kind, s.name).float()
                per = [by_pos[:, list(span[c][0])].sum(1) for c in cols]           # (rows[, H])
            else:
                b_val = s.view(base_acts[s.name])[0].float()
                s_val = s.view(src_acts[s.name])[0].float()
                g = s.view(grads[s.name]).float()
                per = []
                for c in cols:
                    bp, sp = list(span[c][0]), list(span[c][1])
                    per.append(((s_val[sp] - b_val[bp])[None] * g[:, bp]).sum(-1).sum(1))
            if heads:
                per = [p[:, c] for p, c in zip(per, cols)]                         # (rows,) per head
            else:
                per = [p.sum(-1) if p.dim() == 2 else p for p in per]              # all heads together
            per_t = torch.stack(per, -1)                                           # (rows, cols)
            value = per_t[1:].abs().sum(0) / max(1, dims.n_layers - 1) if drops else per_t[0]
            est.append(value.detach().cpu().numpy())
        per_pair.append(np.stack(est))
    per_np = np.stack(per_pair)
    first = items[0]
    one = len(items) == 1
    meta = {"base": first.base if one else [p.base for p in items],
            "source": first.source if one else [p.source for p in items], "site": site,
            "method": method, "answers": [str(a) for a in first.answers] if one else
            [[str(a) for a in p.answers] for p in items],
            "title": f"attribution ({method}) of patching {site}: {name}"}
    if not one:
        meta["prompts_summary"] = dataset.summary(items)
    result = SweepResult(per_np.mean(0), ("layer", axis), {"layer": layers, axis: labels},
                         f"{'|AtP*| ' if drops else 'AtP '}{name}", meta=meta,
                         per_prompt=None if one else per_np, seed=seed)
    if verify:
        _verify(model, result, items, site, metric, layers, heads, verify)
    return result


def _passes(model: Any, b_ids: list, s_ids: list, sites: list, drops: list, answer_ids: list,
            name: Optional[str], fn: Optional[Callable], qk: bool = False,
            remote: bool = False) -> tuple[dict, dict, dict, dict]:
    """The source run's and the base run's tensors at ``sites`` (module tensors, see
    ``Site.raw``), and the metric's gradients there: row 0 plain, row 1 + l with no gradient
    through layer l's attention and MLP (GradDrop), all in one forward and backward
    (``tracer.gradients``).  Locally the weights are frozen meanwhile (gradients flow from the
    embeddings, not into weights); remotely both traces are one NDIF session, whose weights
    are frozen already.  With ``qk``, also per site layer: the attention function's inputs
    in both runs, and the gradients and values at the heads' outputs (``qkfix.estimates``'
    arguments)."""
    import nnsight

    module = tracer.sites.module(model)
    device = "cpu" if remote else next(module.parameters()).device
    dims = tracer.sites.dims_of(model.config)
    order = sorted(sites, key=lambda s: s.order)
    fam = order[0].family
    attention = {s.layer: f"{fam.layers}.{s.layer}.{fam.attn}" for s in order} if qk else {}
    drop_sites = {}
    for layer in (range(dims.n_layers) if drops else ()):
        for kind in ("attn_out", "mlp_out"):
            s = tracer.site(model, kind, layer=layer)
            drop_sites[s.name] = s
    outs = {layer: tracer.site(model, "head_out", layer=layer) for layer in attention}
    every = {s.name: s for s in order}
    every.update({k: v for k, v in drop_sites.items() if k not in every})
    every.update({s.name: s for s in outs.values()})
    walk = sorted(every.values(), key=lambda s: s.order)
    wanted = {s.name for s in order} | {s.name for s in outs.values()}
    rows = 1 + len(drops)
    src_ids, ids = torch.tensor([s_ids]).to(device), torch.tensor([b_ids] * rows).to(device)
    answer = torch.tensor(answer_ids).to(device)

    def traces() -> tuple:
        # remotely one session (one request); locally the same two traces
        with model.session(remote=True) if remote else contextlib.nullcontext():
            gradients.instrument(model, attention)  # before the traces, wherever they run
            with model.trace(src_ids):  # nothing here requires grad: no graph is kept
                src = nnsight.save(gradients.source_pass(order, attention))
            with torch.enable_grad(), model.trace(ids):
                got = nnsight.save(gradients.base_pass(model, walk, wanted, set(drop_sites),
                                                       attention, answer, name, fn))
        return src, got

    if remote:
        (src, src_attn), (acts, base_attn, got) = tracer.execute.call(traces)
    else:
        with tracer.execute.frozen(model):
            (src, src_attn), (acts, base_attn, got) = traces()
    grads = {s.name: g.detach().cpu() for s, g in zip([s for s in reversed(walk) if s.name in wanted], got)}
    cpu = lambda d: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in d.items()}  # noqa: E731
    attn = {layer: (cpu(base_attn[layer]), cpu(src_attn[layer]), out.view(grads[out.name]),
                    out.view(acts[out.name].detach().cpu())[0]) for layer, out in outs.items()}
    return grads, {s.name: acts[s.name].detach().cpu() for s in order}, \
        {s.name: v.detach().cpu() for s, v in zip(order, src)}, attn


def _verify(model: Any, result: SweepResult, items: list, site: str, metric: Any, layers: list,
            heads: bool, k: int) -> None:
    """Exact patches of the ``k`` cells with the largest estimates; warns when the estimates
    do not order them as the exact effects do (Spearman < 0.5, or a sign flip for AtP)."""

    checks.integer("verify", k, low=1)
    values = result.values
    flat = np.argsort(-np.abs(np.nan_to_num(values)), axis=None)[:k]
    cells = [np.unravel_index(i, values.shape) for i in flat]
    exact = sweep(model, data=items, site=site, metric=metric,
                  layers=sorted({layers[c[0]] for c in cells}),
                  heads=[int(c[1]) for c in cells] if heads else None, progress=False)
    exact_layers = list(exact.labels["layer"])
    got = np.array([exact.values[exact_layers.index(layers[c[0]]),
                                 (list(exact.labels["head"]).index(int(c[1])) if heads else int(c[1]))]
                    for c in cells])
    shift = got - exact.baselines["base"]
    est = np.array([values[c] for c in cells])
    result.meta["verified"] = {"cells": [[int(layers[c[0]]), int(c[1])] for c in cells],
                               "estimate": est.tolist(), "exact": shift.tolist()}
    rho = _spearman(np.abs(est), np.abs(shift)) if len(cells) > 2 else float("nan")
    flips = int(np.sum(np.sign(est) != np.sign(shift))) if result.meta["method"] in ("atp", "qk") else 0
    result.meta["verified"]["spearman"] = rho
    if (not np.isnan(rho) and rho < 0.5) or flips:
        warnings.warn(f"attribution disagrees with exact patches on {len(cells)} sampled cells: "
                      f"rank correlation {rho:.2f}" + (f", {flips} sign flips" if flips else "") +
                      "; trust the exact sweep (interchange.sweep) there", stacklevel=3)
