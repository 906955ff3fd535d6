"""Patching sweeps: the engine (its own choice, exact reuse, full recomputation, with and
without a progress bar) vs plain-hook baselines.

On the same model and plans, in one process:
  - the seed's three examples, each rep type (lay; qry, key, val, out per head);
  - the short capital pair ("The capital of France is" / "... Italy is", swap at " France"):
    qry per head and lay;
  - multi-token continuations: a 20-token pair ("the Eiffel Tower" / "the Colosseum") scored
    on three 4-token continuations, qry per head and lay (``reuse`` branches each prompt's
    pass from its continuations, tracer.branch; ``reuse/1pass`` without branching);
  - ``sweep``'s plan: resid_pre patched layer x position on the capital pair;
  - a causal-tracing layer x position sweep (ROME) over a 25-token prompt.
For each it runs (and first checks equal, to 1e-5 in fp32):
  1. tracer.execute.run as a user calls it (``auto``: exact reuse or full recomputation,
     whichever tracer.costs predicts faster), and the same with a progress bar (``+bar``);
  2. exact reuse forced (``reuse``: only what a patch can change);
  3. the same plan recomputed in full (``full``, exact_reuse=False);
  4. plain PyTorch hooks, the whole plan in one batch (``hooks``: the hand-written speed limit);
  5. plain hooks, one batch per layer;
  6. for the seed's qry sweep: one nnsight trace per head, and pyvene 0.1.8 per head when
     installed (pip install --no-deps pyvene).
And TransformerLens 4.3's patching functions when installed (its bridge over a copy of the
same transformers module, one forward per cell): get_act_patch_resid_pre (layer x position)
and get_act_patch_attn_head_q_all_pos (layer x head) on a 20-token pair, beside the engine
and plain hooks on the same sweeps, checked equal to 1e-4 in log-probability (TransformerLens
runs eager attention, the model sdpa).
It prints seconds, the ratio to plain hooks in one batch, and the peak resident memory each
method added.  Llama-family models only (the plain-hook baselines hook Llama's modules).

    python benchmarks/head_sweep.py [--model smollm2 | --random-llama 1b] [--device cuda]
                                    [--cases seeds capital sweep causal] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

import tracer
from recipes import interchange
from tracer import branch, execute, plan
from tracer.metrics import token_logprobs

CAUSAL_PROMPT = ("Beats Music is owned by Apple, and the Eiffel Tower is located in the "
                 "beautiful city of")


class PeakMemory:
    """Peak resident memory above the start, sampled every 5 ms (CPU), or CUDA's peak."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak, self.start, self.stop = cuda, 0, 0, False

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start = self.peak = self.rss()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.stop = True
            self.thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2 ** 20


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float, float]:
    """(result, seconds, peak MB added)."""
    cuda = device.startswith("cuda")
    with PeakMemory(cuda) as mem:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return out, seconds, mem.added_mb


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


# -- plain hooks: the compiled batch's operations written as forward hooks ------------------

def _hook(ops: Any, device: torch.device) -> Callable:
    s = ops.site
    d = s.dims
    heads = {"head_q": d.n_heads, "head_out": d.n_heads, "head_k": d.n_kv_heads,
             "head_v": d.n_kv_heads}.get(s.kind)
    move = lambda t: None if t is None else tuple(i.to(device) for i in t)  # noqa: E731
    add_idx, set_idx, dst, src = move(ops.add_idx), move(ops.set_idx), move(ops.copy_dst), move(ops.copy_src)

    def edit(x: torch.Tensor) -> None:
        if heads is not None:
            x = x.unflatten(-1, (heads, d.head_dim))
        if add_idx is not None:
            x[add_idx] = x[add_idx] + ops.add_val.to(device=x.device, dtype=x.dtype)
        if set_idx is not None:
            x[set_idx] = ops.set_val.to(device=x.device, dtype=x.dtype)
        if dst is not None:
            x[dst] = x[src]
    return edit


def plain_hooks(model: Any, groups: list) -> list[list]:
    """The plan's groups as one batch, every edit a forward hook on the Llama modules."""
    module = tracer.sites.module(model)
    batch, layout = plan.compile_batch(model, groups)
    device = next(module.parameters()).device
    handles = []
    for ops in batch.ops:
        target = module.get_submodule(ops.site.module_path)
        edit = _hook(ops, device)
        if ops.site.port == "input":
            handles.append(target.register_forward_pre_hook(
                lambda m, args, kwargs, edit=edit: edit(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
        else:
            handles.append(target.register_forward_hook(
                lambda m, a, out, edit=edit: edit(out[0] if isinstance(out, tuple) else out)))
    try:
        with torch.no_grad():
            inputs = {k: v.to(device) for k, v in batch.inputs.items()}
            logits = module(**inputs, logits_to_keep=batch.keep, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    rows, pos, tokens = (t.to(logits.device) for t in batch.token_idx)
    return plan.split_results(layout, [token_logprobs(logits[rows, pos], tokens).float().cpu()])


def plain_hooks_per_layer(model: Any, groups: list) -> list[list]:
    """Plain hooks, one batch per patched layer (the reference group in the first)."""
    by_layer: dict = {}
    for i, g in enumerate(groups[1:], 1):
        by_layer.setdefault(g.key[0], []).append(i)
    out: list = [None] * len(groups)
    for n, idx in enumerate(by_layer.values()):
        chosen = ([0] if n == 0 else []) + idx
        for i, values in zip(chosen, plain_hooks(model, [groups[i] for i in chosen])):
            out[i] = values
    return out


def trace_per_head(model: Any, groups: list) -> list[list]:
    """One hand-written nnsight trace per group: what raw nnsight users write."""
    results = []
    for g in groups:
        batch, layout = plan.compile_batch(model, [g])
        with torch.no_grad(), model.trace(batch.inputs, logits_to_keep=batch.keep, use_cache=False):
            for ops in batch.ops:
                x = ops.site.tensor()
                if ops.copy_dst is not None:
                    x[ops.copy_dst] = x[ops.copy_src]
            logits = model.output.logits.save()
        rows, pos, tokens = batch.token_idx
        results += plan.split_results(layout, [token_logprobs(logits[rows, pos], tokens).float().cpu()])
    return results


def pyvene_per_head(model: Any, groups: list) -> list[list]:
    """pyvene, one IntervenableModel call per (layer, head) of a qry plan: each row takes its
    paired row's query head at the target positions (pyvene runs the sources separately,
    which equals the simultaneous swap: both sides are clean before the patched layer)."""
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
            for iv in g.interventions:
                d, s = iv.rows[0], iv.source.row
                order[d] = s
                base_pos[d] = [q + width - len(g.rows[d]) for q in iv.positions]
                src_pos[d] = [q + width - len(g.rows[s]) for q in iv.source.positions]
            sources = {k: v[order] for k, v in inputs.items()}
            n = len(g.rows)
            cfg = pv.IntervenableConfig([pv.RepresentationConfig(layer, "head_query_output", "h.pos", 1)],
                                        intervention_types=pv.VanillaIntervention)
            pv_model = pv.IntervenableModel(cfg, model=module)
            locs = {"sources->base": ([[[[head]] * n, src_pos]], [[[[head]] * n, base_pos]])}
            with torch.no_grad():
                _, out = pv_model(inputs, [sources], locs)
            logits = out.logits[:, -batch.keep:]
        rows, pos, tokens = (t.to(logits.device) for t in batch.token_idx)
        results += plan.split_results(layout, [token_logprobs(logits[rows, pos], tokens).float().cpu()])
    return results


def _sweep_groups(model: Any, base: list, source: list, answer: int, site: str,
                  per_head: bool) -> list:
    """``interchange.sweep``'s plan: layer x position, or layer x head (all positions)."""
    reads = [plan.Logprobs(r, (-1,), (answer,)) for r in (0, 1)]
    dims = tracer.sites.dims_of(model.config)
    groups = [plan.Group([base, source], [], reads, key="clean")]
    everywhere = tuple(range(len(base)))
    for layer in range(dims.n_layers):
        name = tracer.site(model, site, layer=layer).name
        for c in range(dims.n_heads if per_head else len(base)):
            pos, hs = (everywhere, (c,)) if per_head else ((c,), None)
            groups.append(plan.Group([base, source], [plan.copy(name, 0, 1, pos, pos, hs)],
                                     reads[:1], key=(layer, c)))
    return groups


def transformer_lens_lines(model: Any, device: str) -> None:
    """TransformerLens 4.3's patching functions vs the engine and plain hooks, same sweeps."""
    import copy

    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    tok = model.tokenizer
    # a copy: the bridge switches its model to eager attention
    hf = copy.deepcopy(tracer.sites.module(model))
    bridge = TransformerBridge.boot_transformers(hf.config._name_or_path or "model", hf_model=hf,
                                                 tokenizer=tok, device=device)
    base = tok(CAUSAL_PROMPT)["input_ids"]
    source = tok(CAUSAL_PROMPT.replace("Eiffel Tower", "Colosseum"))["input_ids"]
    answer = tok(" Paris", add_special_tokens=False)["input_ids"][0]
    to = lambda ids: torch.tensor([ids], device=device)  # noqa: E731

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1].float().log_softmax(-1)[answer]

    for label, site, per_head, fn in (("resid_pre", "resid_pre", False, patching.get_act_patch_resid_pre),
                                      ("head_q", "head_q", True, patching.get_act_patch_attn_head_q_all_pos)):
        groups = _sweep_groups(model, base, source, answer, site, per_head)

        def lens() -> np.ndarray:
            with torch.no_grad():
                _, cache = bridge.run_with_cache(to(source))
                return fn(bridge, to(base), cache, metric).float().cpu().numpy()
        times, want = {}, None
        for name, run in (("reuse", lambda: execute.run(model, groups, progress=False)),
                          ("hooks", lambda: plain_hooks(model, groups)), ("TL 4.3", lens)):
            out, seconds, mb = timed(run, device)
            got = out if name == "TL 4.3" else np.array([float(r[0]) for r in out[1:]]).reshape(-1, len(groups[1:]) // model.config.num_hidden_layers)
            if want is None:
                want = got
            err = float(np.abs(got - want).max())
            assert err <= (1e-4 if device == "cpu" else 5e-2), f"TL {label}: {name} differs by {err:.2e}"
            times[name] = (seconds, mb)
        base_s = times["hooks"][0]
        cells = "  ".join(f"{n} {s:7.2f}s {s / base_s:5.2f}x {mb:6.0f}MB" for n, (s, mb) in times.items())
        print(f"{'TL sweep ' + label + f' ({len(base)} tok)':<26} groups={len(groups):4d}  {cells}", flush=True)


def _flat(results: list) -> np.ndarray:
    return np.concatenate([np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in r])
                           for r in results])


REPEATS = 1  # --repeats: each method's time is the best of this many runs


def one_pass(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with tracer.branch switched off: every batch one pass."""
    def run() -> Any:
        real = branch.split
        branch.split = lambda *a, **k: None
        try:
            return fn()
        finally:
            branch.split = real
    return run


def compare(model: Any, name: str, groups: list, device: str, extra: bool = False,
            unbranched: bool = False) -> dict:
    """Time every method on one plan after checking that all give the same numbers."""
    reused = lambda: execute.run(model, groups, progress=False, exact_reuse=True)  # noqa: E731
    methods = [("auto", lambda: execute.run(model, groups, progress=False)),
               ("auto+bar", lambda: execute.run(model, groups, progress=True)),
               ("reuse", reused)] + [("reuse/1pass", one_pass(reused))] * unbranched + [
               ("full", lambda: execute.run(model, groups, progress=False, exact_reuse=False)),
               ("hooks", lambda: plain_hooks(model, groups)),
               ("hooks/layer", lambda: plain_hooks_per_layer(model, groups))]
    if extra:
        methods.append(("trace/head", lambda: trace_per_head(model, groups)))
        if importlib.util.find_spec("pyvene") is not None:
            methods.append(("pyvene/head", lambda: pyvene_per_head(model, groups)))
        else:
            print("pyvene is not installed (pip install --no-deps pyvene==0.1.8): no pyvene line")
    tol = 1e-5 if not device.startswith("cuda") else 5e-2
    times, want = {}, None
    for label, fn in methods:
        out, seconds, mb = timed(fn, device)
        for _ in range(REPEATS - 1 if label not in ("trace/head", "pyvene/head") else 0):
            seconds = min(seconds, timed(fn, device)[1])
        got = _flat(out)
        if want is None:
            want = got
        else:
            err = float(np.abs(np.exp(got) - np.exp(want)).max())
            assert err <= tol, f"{name}: {label} differs from auto by {err:.2e} in probability"
        times[label] = (seconds, mb)
    base = times["hooks"][0]
    cells = "  ".join(f"{label} {s:7.2f}s {s / base:5.2f}x {mb:6.0f}MB" for label, (s, mb) in times.items())
    print(f"{name:<26} groups={len(groups):4d}  {cells}", flush=True)
    return times


CAPITAL = ("The capital of France is", "The capital of Italy is")
CASES = ("seeds", "capital", "conts", "sweep", "causal")
CONTS_PAIR = (CAUSAL_PROMPT, CAUSAL_PROMPT.replace("Eiffel Tower", "Colosseum"))


def _totals(totals: dict, times: dict) -> None:
    for label, (s, _) in times.items():
        totals[label] = totals.get(label, 0.0) + s


def _total_line(name: str, totals: dict) -> None:
    base = totals.get("hooks", 1.0)
    print(f"{name}: " + "  ".join(f"{label} {s:.2f}s {s / base:.2f}x" for label, s in totals.items()
                                  if label in ("auto", "auto+bar", "reuse", "reuse/1pass", "full", "hooks",
                                               "hooks/layer")),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--random-llama", default=None, choices=["1b"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES),
                        help="which plans to time (default: all)")
    parser.add_argument("--examples", type=int, nargs="*", default=[0, 1, 2],
                        help="which of the seed's examples (0 Winograd, 1 is_small, 2 emotions)")
    parser.add_argument("--reps", nargs="*", default=list(interchange.REP_TYPES),
                        help="rep types to sweep in the seed's examples")
    parser.add_argument("--samples", type=int, default=3,
                        help="noise draws in causal tracing")
    parser.add_argument("--skip-per-head", action="store_true",
                        help="skip the slow one-trace-per-head and pyvene loops")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each method this many times and keep the fastest")
    args = parser.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = random_llama(args.random_llama, device) if args.random_llama else tracer.load(args.model, device=device)
    dims = tracer.sites.dims_of(model.config)
    print(f"model={args.random_llama or args.model} device={device} layers={dims.n_layers} "
          f"heads={dims.n_heads} kv_heads={dims.n_kv_heads}; times in seconds, ratio to plain "
          f"hooks in one batch, peak memory added")
    warm = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(
        interchange.SEED_EXAMPLES[0][0:2], interchange.SEED_EXAMPLES[0][2]))
    groups, _ = warm.plan(interchange.SEED_EXAMPLES[0][3], ["qry"], heads=[0], layers=[0, 1])
    execute.run(model, groups, progress=False)  # also measures tracer.costs once
    plain_hooks(model, groups)
    print(f"measured costs: {tracer.costs.measure(model)}")
    if "seeds" in args.cases:
        totals: dict = {}
        for i in args.examples:
            s1, s2, conts, targets = interchange.SEED_EXAMPLES[i]
            recipe = interchange.InterchangeIntervention(
                model, interchange.InterchangeInterventionConfig([s1, s2], conts))
            for rep in args.reps:
                groups, _ = recipe.plan(targets, [rep], heads=None if rep == "lay" else "each")
                _totals(totals, compare(model, f"seed {i} {rep}", groups, device,
                                        extra=(rep == "qry" and i == 0 and not args.skip_per_head)))
        _total_line("seed examples, these rep types", totals)
    if "capital" in args.cases:
        recipe = interchange.InterchangeIntervention(
            model, interchange.InterchangeInterventionConfig(list(CAPITAL), [" Paris", " Rome"]))
        totals = {}
        for rep in ("qry", "lay"):
            groups, _ = recipe.plan(["France", "Italy"], [rep], heads=None if rep == "lay" else "each")
            _totals(totals, compare(model, f"capital pair {rep}", groups, device))
        _total_line("capital pair, qry + lay", totals)
    if "conts" in args.cases:
        recipe = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(
            list(CONTS_PAIR), ["Paris, in France", "Rome, in Italy", "London, in England"]))
        totals = {}
        for rep in ("qry", "lay"):
            groups, _ = recipe.plan(["Eiffel Tower", "Colosseum"], [rep], heads=None if rep == "lay" else "each")
            _totals(totals, compare(model, f"3 conts x 4 tok {rep}", groups, device, unbranched=True))
        _total_line("multi-token continuations, qry + lay", totals)
    if "sweep" in args.cases:
        tok = model.tokenizer
        answer = tok(" Rome", add_special_tokens=False)["input_ids"][0]
        base, source = (tok(p.replace("France", "Spain"))["input_ids"] for p in CAPITAL)
        compare(model, f"sweep resid_pre ({len(base)} tok)",
                _sweep_groups(model, base, source, answer, "resid_pre", False), device)
    if "causal" in args.cases:
        groups = interchange.causal_trace_plan(model, CAUSAL_PROMPT, "Eiffel Tower", " Paris",
                                               samples=args.samples)[0]
        compare(model, f"causal trace ({len(model.tokenizer(CAUSAL_PROMPT)['input_ids'])} tok)",
                groups, device)
        if importlib.util.find_spec("transformer_lens") is not None:
            transformer_lens_lines(model, device)
        else:
            print("TransformerLens is not installed (pip install transformer-lens==4.3.0): no TL lines")


if __name__ == "__main__":
    main()
