"""Sweeps over a data set: the engine (chunks of merged pairs, exact reuse per pair) vs one
plain-hook sweep per pair, on the shipped IOI pairs.

On SmolLM2 (Llama family), in one process, for N pairs of ``recipes/data/ioi.json``:
  - resid_pre, layer x role (IO, S1, S2, END; each role's span patched from the source);
  - head_out, layer x head (every head's output at every position).
Each is run (and first checked equal per pair, to 2e-4 in logit difference, the tolerance of
tests/test_datasets.py) by:
  1. ``interchange.sweep(data=...)``: exact reuse (the default);
  2. the same sweep recomputed in full (``exact_reuse=False``);
  3. plain PyTorch hooks as a researcher writes them, one batch per pair: the source's
     activations cached by hooks in one forward, then every cell of the pair's grid as one
     row of a single batch whose hooks write the cached values in;
  4. TransformerLens 4.3's ``get_act_patch_attn_head_out_all_pos`` when installed (head_out
     only: it has no roles), one batch per token length with the mean as its metric
     (checked against the engine's mean over pairs); it patches every layer with one
     forward per cell, so it runs on ``--lens-pairs`` pairs beside the engine and hooks.
It prints seconds, the ratio to the plain hooks and the peak resident memory each added.

``--memory N`` instead checks the memory of an N-pair (default 1000: the shipped pairs
repeated) layer x head sweep of head_out at its default chunk and batch sizes: the plans of
the whole grid are built and measured (tracemalloc), and every chunk is run at one layer
(the last: exact reuse starts each cell there, so it runs in minutes on a CPU, while a
chunk's reference states and its batches of cells are as large as the full grid's); the
process's peak resident memory is printed with the grid's plans added.

    python benchmarks/datasets.py [--pairs 100] [--layers 0-29] [--device cpu]
    python benchmarks/datasets.py --memory 1000
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import torch

_HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, _HERE)
import tracer  # noqa: E402
from head_sweep import timed  # noqa: E402

# this file is named datasets.py: drop its folder from the path so that Hugging Face's
# datasets (which TransformerLens imports) stays importable
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]
from recipes import dataset, interchange  # noqa: E402
from recipes.cli import parse_layers  # noqa: E402
from tracer import chunks  # noqa: E402

TOL = 2e-4


def _answer(tok: Any, text: str) -> int:
    return tok(text, add_special_tokens=False)["input_ids"][0]


def plain_hook_sweep(model: Any, pair: dataset.Pair, site: str, layers: list[int]) -> np.ndarray:
    """One pair's layer x column grid of logit(IO) - logit(S) by forward hooks on the Llama
    modules: resid_pre by role (a pre-hook on the decoder layer), head_out by head (a
    pre-hook on ``o_proj``, whose input is the heads' outputs side by side)."""
    module = tracer.sites.module(model)
    tok = model.tokenizer
    device = next(module.parameters()).device
    base = tok(pair.base, return_tensors="pt")["input_ids"].to(device)
    source = tok(pair.source, return_tensors="pt")["input_ids"].to(device)
    cfg = module.config
    n_heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    decoder = module.model.layers
    target = (lambda L: decoder[L]) if site == "resid_pre" else (lambda L: decoder[L].self_attn.o_proj)
    if site == "resid_pre":
        spans = dataset.resolve(tok, pair)
        cols = list(spans)
    else:
        cols = list(range(n_heads))
    cache: dict = {}

    def keep(L: int) -> Any:
        def pre(m: Any, args: tuple, kwargs: dict) -> None:
            cache[L] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return pre

    handles = [target(L).register_forward_pre_hook(keep(L), with_kwargs=True) for L in layers]
    try:
        with torch.no_grad():
            module(source, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()

    def write(L: int, first: int) -> Any:
        src = cache[L][0]

        def pre(m: Any, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            for j, c in enumerate(cols):
                r = first + j
                if site == "resid_pre":
                    b_pos, s_pos = spans[c]
                    x[r, list(b_pos)] = src[list(s_pos)]
                else:
                    x.view(x.shape[0], x.shape[1], n_heads, head_dim)[r, :, c] = \
                        src.view(src.shape[0], n_heads, head_dim)[:, c]
        return pre

    rows = 1 + len(layers) * len(cols)  # the unpatched base, then every cell
    handles = [target(L).register_forward_pre_hook(write(L, 1 + i * len(cols)), with_kwargs=True)
               for i, L in enumerate(layers)]
    try:
        with torch.no_grad():
            logits = module(base.expand(rows, -1).clone(), use_cache=False, logits_to_keep=1).logits
    finally:
        for h in handles:
            h.remove()
    lp = logits[:, -1].float().log_softmax(-1)
    io, s = (_answer(tok, a) for a in pair.answers[:2])
    diff = (lp[:, io] - lp[:, s]).cpu().numpy()
    return diff[1:].reshape(len(layers), len(cols))


def lens_sweep(model: Any, items: list, layers: list[int], device: str) -> np.ndarray:
    """TransformerLens 4.3's head_out patching over the pairs as it is used on a data set:
    one batch per token length (its patching functions take one length a batch) with the
    batch's mean logit difference as the metric; returns the layers x heads mean over pairs."""
    import copy

    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    tok = model.tokenizer
    hf = copy.deepcopy(tracer.sites.module(model))  # the bridge switches it to eager attention
    bridge = TransformerBridge.boot_transformers(hf.config._name_or_path or "model", hf_model=hf,
                                                 tokenizer=tok, device=device)
    by_len: dict = {}
    for i, p in enumerate(items):
        by_len.setdefault(len(tok(p.base)["input_ids"]), []).append(i)
    total = np.zeros((bridge.cfg.n_layers, bridge.cfg.n_heads))
    for idx in by_len.values():
        base = torch.tensor([tok(items[i].base)["input_ids"] for i in idx], device=device)
        source = torch.tensor([tok(items[i].source)["input_ids"] for i in idx], device=device)
        io = torch.tensor([_answer(tok, items[i].answers[0]) for i in idx], device=device)
        s = torch.tensor([_answer(tok, items[i].answers[1]) for i in idx], device=device)
        rows = torch.arange(len(idx), device=device)

        def metric(logits: torch.Tensor) -> torch.Tensor:
            lp = logits[:, -1].float().log_softmax(-1)
            return (lp[rows, io] - lp[rows, s]).mean()
        with torch.no_grad():
            _, cache = bridge.run_with_cache(source)
            grid = patching.get_act_patch_attn_head_out_all_pos(bridge, base, cache, metric)
        total += grid.float().cpu().numpy() * len(idx)
    return (total / len(items))[layers]


def memory_check(model: Any, n_pairs: int, device: str) -> None:
    """``--memory``: the peak memory of an n-pair layer x head sweep (see the docstring)."""
    shipped = dataset.ioi()
    items = (shipped * -(-n_pairs // len(shipped)))[:n_pairs]
    dims = tracer.sites.dims_of(model.config)
    last = dims.n_layers - 1
    tracemalloc.start()
    plans = interchange.sweep_plans(model, items, "head_out", heads="each", metric="logit_diff")[0]
    grid_bytes = tracemalloc.get_traced_memory()[0]
    del plans
    tracemalloc.stop()
    width = max(len(model.tokenizer(t)["input_ids"]) for p in items for t in (p.base, p.source))
    per_chunk = chunks.chunk_rows(model, width) // 2  # a pair holds two reference rows
    res, seconds, added = timed(lambda: interchange.sweep(model, data=items, site="head_out", heads="each",
                                                          layers=[last], metric="logit_diff", progress=False),
                                device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak so far
    print(f"{n_pairs} pairs: a {dims.n_layers} layer x {dims.n_heads} head grid's plans hold "
          f"{grid_bytes / 2 ** 20:.0f} MB; chunks of {per_chunk} pairs; layer {last}'s "
          f"{len(items) * dims.n_heads} cells ran in {seconds:.0f}s adding {added:.0f} MB; process peak "
          f"{peak / 2 ** 30:.2f} GB; with the whole grid's plans {(peak + grid_bytes) / 2 ** 30:.2f} GB "
          f"(target < 3 GB)")
    assert np.isfinite(res.values).all()


def _grid(result: Any) -> np.ndarray:
    """A sweep's per-pair grids (one pair: its values with a leading 1)."""
    return result.per_prompt if result.per_prompt is not None else result.values[None]


def compare(name: str, methods: list, device: str, layers: list) -> None:
    """Check every method equal to the first (TransformerLens against its mean over pairs),
    then print seconds, the ratio to plain hooks and peak memory."""
    times, want = {}, None
    for label, fn in methods:
        got, seconds, mb = timed(fn, device)
        if want is None:
            want = got
        err = float(np.abs(got - (want.mean(0) if label == "TL 4.3" else want)).max())
        tol = TOL if device == "cpu" else 5e-2
        assert err <= tol, f"{name}: {label} differs from reuse by {err:.2e} (tolerance {tol})"
        times[label] = (seconds, mb)
    base = times["hooks"][0]
    grid = f"{len(layers)}x{want.shape[-1]}"
    cells = "  ".join(f"{n} {s:7.2f}s {s / base:5.2f}x {mb:6.0f}MB" for n, (s, mb) in times.items())
    print(f"{name + ' ' + grid:<24} cells={want.size:6d}  {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default=None)
    parser.add_argument("--pairs", type=int, default=100, help="IOI pairs (default 100 of 120)")
    parser.add_argument("--layers", default="all", help="layers swept, e.g. 0-29 (default all)")
    parser.add_argument("--lens-pairs", type=int, default=4,
                        help="pairs of the TransformerLens comparison (it patches every layer, one "
                             "forward per cell; default 4)")
    parser.add_argument("--memory", type=int, nargs="?", const=1000, default=None, metavar="PAIRS",
                        help="check the memory of a PAIRS-pair layer x head sweep instead (default 1000)")
    parser.add_argument("--sites", nargs="+", default=["resid_pre", "head_out"], choices=["resid_pre", "head_out"])
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = tracer.load(args.model, device=device)
    dims = tracer.sites.dims_of(model.config)
    layers = parse_layers(args.layers, dims.n_layers) or list(range(dims.n_layers))
    if args.memory is not None:
        memory_check(model, args.memory, device)
        return
    items = dataset.ioi(limit=args.pairs)
    print(f"model={args.model} device={device} pairs={len(items)} layers={len(layers)} heads={dims.n_heads}; "
          f"seconds, ratio to plain hooks (one batch per pair), peak memory added")
    warm = dataset.ioi(limit=2)
    interchange.sweep(model, data=warm, site="resid_pre", metric="logit_diff", layers=layers[:1], progress=False)
    plain_hook_sweep(model, warm[0], "resid_pre", layers[:1])
    for site in args.sites:
        heads = "each" if site == "head_out" else None
        methods = [
            ("reuse", lambda: _grid(interchange.sweep(model, data=items, site=site, heads=heads, metric="logit_diff",
                                                layers=layers, progress=False))),
            ("full", lambda: _grid(interchange.sweep(model, data=items, site=site, heads=heads, metric="logit_diff",
                                               layers=layers, progress=False, exact_reuse=False))),
            ("hooks", lambda: np.stack([plain_hook_sweep(model, p, site, layers) for p in items])),
        ]
        compare(site, methods, device, layers)
        if site == "head_out" and importlib.util.find_spec("transformer_lens") is not None:
            # TransformerLens patches every layer, one forward per cell: on its own few pairs
            few = items[:args.lens_pairs]
            every = list(range(dims.n_layers))
            compare(f"{site} ({len(few)} pairs)", [
                ("reuse", lambda: _grid(interchange.sweep(model, data=few, site=site, heads=heads, metric="logit_diff",
                                                    progress=False))),
                ("hooks", lambda: np.stack([plain_hook_sweep(model, p, site, every) for p in few])),
                ("TL 4.3", lambda: lens_sweep(model, few, every, device))], device, every)
    if "head_out" in args.sites and importlib.util.find_spec("transformer_lens") is None:
        print("TransformerLens is not installed (pip install transformer-lens==4.3.0): no TL line")


if __name__ == "__main__":
    main()
