"""Every head of every layer swapped between a prompt pair: recipe vs baselines, one process.

Runs on the same model and inputs:
  1. recipes.interchange (planned, packed into as few batches as max_batch allows);
  2. plain PyTorch hooks doing all the head swaps in one batch (the speed limit);
  3. one nnsight trace per (layer, head), written by hand (raw nnsight);
  4. pyvene, one call per (layer, head), where pyvene is installed.
Checks that all give the same probabilities and prints each time as a ratio to plain hooks.

    python benchmarks/head_sweep.py [--model smollm2 | --random-llama 1b] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
import torch

import tracer
from recipes import interchange
from tracer import plan
from tracer.metrics import token_logprobs

SENTS = ["Paul tried to call George but he wasn't successful . Who wasn't successful ?",
         "Paul tried to call George but he wasn't available . Who wasn't available ?"]
CONTS = ["Paul", "George"]
TARGETS = ["successful", "available"]


def timed(fn: Callable[[], Any], sync: bool) -> tuple[Any, float]:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def random_llama(size: str, device: str) -> Any:
    """A random Llama of about 1.1B parameters (TinyLlama's shape) with SmolLM2's tokenizer."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoModelForCausalLM, LlamaConfig

    smol = tracer.load("smollm2")
    shapes = {"1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                         num_attention_heads=32, num_key_value_heads=4)}
    cfg = LlamaConfig(vocab_size=smol.config.vocab_size, max_position_embeddings=2048, **shapes[size])
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    module = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval()
    return TransformersModel(module, tokenizer=smol.tokenizer)


def probs_from_logprobs(values: list, n_conts: int) -> np.ndarray:
    """One group's per-row continuation log-probs -> P(cont | sent), ``(C, 2)``."""
    return np.array([np.exp(v.mean()) for v in values]).reshape(n_conts, 2)


def _readouts(batch: Any, layout: tuple, logits: torch.Tensor) -> list[list[torch.Tensor]]:
    """The plan's token readouts from full-batch logits (kept positions), per group."""
    rows, pos, tokens = (t.to(logits.device) for t in batch.token_idx)
    lp = token_logprobs(logits[rows, pos], tokens)
    return plan.split_results(layout, [lp.cpu()])


def _swaps(g: Any, width: int) -> list[tuple]:
    """(dst row, dst padded positions, src row, src padded positions, heads) per copy."""
    out = []
    for iv in g.interventions:
        d, s = iv.rows[0], iv.source.row
        out.append((d, [q + width - len(g.rows[d]) for q in iv.positions],
                    s, [q + width - len(g.rows[s]) for q in iv.source.positions], list(iv.heads)))
    return out


def plain_hooks(model: Any, groups: list, n_heads: int, head_dim: int) -> list[list]:
    """All swaps in one batch with forward hooks on each layer's q_proj (no nnsight)."""
    module = tracer.sites.module(model)
    batch, layout = plan.compile_batch(model, groups)
    device = next(module.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    handles = []
    for ops in batch.ops:
        proj = module.model.layers[ops.site.layer].self_attn.q_proj
        dst = tuple(i.to(device) for i in ops.copy_dst)
        src = tuple(i.to(device) for i in ops.copy_src)

        def hook(mod, args, out, dst=dst, src=src):
            x = out.unflatten(-1, (n_heads, head_dim))
            x[dst] = x[src]

        handles.append(proj.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = module(**inputs, logits_to_keep=batch.keep, use_cache=False).logits
            return _readouts(batch, layout, logits)
    finally:
        for h in handles:
            h.remove()


def trace_per_head(model: Any, groups: list) -> list[list]:
    """One hand-written nnsight trace per (layer, head): what raw nnsight users write."""
    results = []
    for g in groups:
        batch, layout = plan.compile_batch(model, [g])
        width = batch.inputs["input_ids"].shape[1]
        with torch.no_grad(), model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=False):
            if g.interventions:
                x = tracer.site(model, g.interventions[0].site).tensor()
                writes = []  # a swap: read both sides before writing either
                for d, dp, s, sp, heads in _swaps(g, width):
                    writes.append((d, dp, heads, x[s][sp][:, heads].clone()))
                for row, dp, heads, vals in writes:
                    for j, q in enumerate(dp):
                        x[row, q, heads] = vals[j]
            logits = model.output.logits.save()
        results += _readouts(batch, layout, logits)
    return results


def pyvene_per_head(model: Any, groups: list) -> list[list]:
    """pyvene, one IntervenableModel call per (layer, head): base rows take the paired
    row's query head at the target positions (pyvene runs the sources separately, which
    equals the simultaneous swap since both sides are clean before the patched layer)."""
    import pyvene as pv

    module = tracer.sites.module(model)
    device = next(module.parameters()).device
    results = []
    for g in groups:
        batch, layout = plan.compile_batch(model, [g])
        inputs = {k: v.to(device) for k, v in batch.inputs.items()}
        if not g.interventions:
            with torch.no_grad():
                logits = module(**inputs, logits_to_keep=batch.keep, use_cache=False).logits
        else:
            layer = tracer.site(model, g.interventions[0].site).layer
            head = g.interventions[0].heads[0]
            width = inputs["input_ids"].shape[1]
            order = [0] * len(g.rows)
            base_pos, src_pos = [None] * len(g.rows), [None] * len(g.rows)
            for d, dp, s, sp, _ in _swaps(g, width):
                order[d], base_pos[d], src_pos[d] = s, dp, sp
            sources = {k: v[order] for k, v in inputs.items()}
            n = len(g.rows)
            cfg = pv.IntervenableConfig([pv.RepresentationConfig(layer, "head_query_output", "h.pos", 1)],
                                        intervention_types=pv.VanillaIntervention)
            pv_model = pv.IntervenableModel(cfg, model=module)
            locs = {"sources->base": ([[[[head]] * n, src_pos]], [[[[head]] * n, base_pos]])}
            with torch.no_grad():
                _, out = pv_model(inputs, [sources], locs)
            logits = out.logits[:, -batch.keep:]
        results += _readouts(batch, layout, logits)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--random-llama", default=None, choices=["1b"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--skip-per-head", action="store_true", help="skip the slow per-head loop")
    parser.add_argument("--skip-pyvene", action="store_true")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sync = device.startswith("cuda")
    model = random_llama(args.random_llama, device) if args.random_llama else tracer.load(args.model, device=device)
    config = interchange.InterchangeInterventionConfig(sents=SENTS, conts=CONTS)
    recipe = interchange.InterchangeIntervention(model, config)
    groups, _ = recipe.plan(TARGETS, ["qry"], heads="each")
    dims = tracer.sites.dims_of(model.config)
    n_rows = sum(len(g.rows) for g in groups)
    print(f"model={args.random_llama or args.model} device={device} layers={dims.n_layers} "
          f"heads={dims.n_heads} swaps={len(groups) - 1} rows={n_rows} "
          f"tokens/row<={max(len(r) for r in groups[0].rows)}")

    # warm-up: allocator, kernels, nnsight's first-trace costs
    recipe.run(TARGETS, ["qry"], heads=[0], layers=[0], progress=False)
    plain_hooks(model, groups[:2], dims.n_heads, dims.head_dim)

    ref, t_hooks = timed(lambda: plain_hooks(model, groups, dims.n_heads, dims.head_dim), sync)
    out, t_recipe = timed(lambda: recipe.run(TARGETS, ["qry"], heads="each", progress=False,
                                             max_batch=args.max_batch), sync)
    want = np.stack([probs_from_logprobs(v, len(CONTS)) for v in ref[1:]])
    got = np.stack([out[f"interv_layer_{layer}"][..., h]
                    for layer in range(dims.n_layers) for h in range(dims.n_heads)])
    tol = 1e-5 if not sync else 2e-2
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    rows = [("plain hooks, one batch", t_hooks), ("recipes.interchange", t_recipe)]
    if not args.skip_per_head:
        per, t_per = timed(lambda: trace_per_head(model, groups), sync)
        np.testing.assert_allclose(np.stack([probs_from_logprobs(v, len(CONTS)) for v in per[1:]]),
                                   want, rtol=tol, atol=tol)
        rows.append(("nnsight, one trace per head", t_per))
    try:
        import pyvene  # noqa: F401
    except ImportError:
        print("pyvene not installed (pip install --no-deps pyvene): its baseline is skipped")
    else:
        if not args.skip_pyvene:
            pvo, t_pv = timed(lambda: pyvene_per_head(model, groups), sync)
            np.testing.assert_allclose(np.stack([probs_from_logprobs(v, len(CONTS)) for v in pvo[1:]]),
                                       want, rtol=tol, atol=tol)
            rows.append(("pyvene, one call per head", t_pv))
    print("all methods agree on every probability "
          f"(max |diff| recipe vs hooks = {np.abs(got - want).max():.2e})")
    for name, t in rows:
        print(f"{name:<30} {t:9.3f} s  {t / t_hooks:6.2f}x plain hooks")


if __name__ == "__main__":
    main()
