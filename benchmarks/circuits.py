"""Circuit discovery on SmolLM2's IOI data: EAP and EAP-IG against exact edge patching, and speed.

On the first ``--pairs`` pairs of the shipped IOI set (metric logit(IO) - logit(S)) it:

1. scores every edge with EAP and with EAP-IG (``--steps``), timing each as a ratio to a
   plain forward and backward pass of the same rows in the same process (the cost of one
   ordinary gradient);
2. patches a sample of edges exactly, one at a time (``recipes.circuits.edge_effects``): the
   20 strongest by EAP-IG and ``--sample`` more drawn at random, and prints each method's
   Spearman rank correlation with the exact effects (signed, and of magnitudes);
3. prints the faithfulness of each method's top-k circuits for a few sizes, and the
   strongest edges of the EAP-IG circuit.

    python benchmarks/circuits.py [--model smollm2] [--pairs 16] [--sample 40] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import tracer
from recipes import circuits, dataset
from recipes.attribution import _spearman


def plain_gradient_seconds(model, pairs, rows_per_pair: int) -> float:
    """A plain forward and backward (to the embeddings) of the same rows, no hooks."""
    module = tracer.sites.module(model)
    tok = model.tokenizer
    start = time.perf_counter()
    with tracer.execute.frozen(model), torch.enable_grad():
        for p in pairs:
            ids = torch.tensor([tok(p.base)["input_ids"]] * rows_per_pair)
            embeds = module.get_input_embeddings()(ids).detach().requires_grad_(True)
            module(inputs_embeds=embeds).logits[:, -1].log_softmax(-1)[:, 0].sum().backward()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--sample", type=int, default=40, help="random edges patched exactly, besides the top 20")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200, 1000, 5000])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model = tracer.load(args.model)
    pairs = dataset.ioi(limit=args.pairs)
    scores, seconds = {}, {}
    for method in circuits.METHODS:
        start = time.perf_counter()
        scores[method] = circuits.discover(model, pairs, method=method, steps=args.steps, progress=False)
        seconds[method] = time.perf_counter() - start
        rows = 2 + (args.steps if method == "eap-ig" else 0)
        base = plain_gradient_seconds(model, pairs, rows)
        print(f"{method}: {int(scores[method].valid.sum())} edges scored on {len(pairs)} pairs in "
              f"{seconds[method]:.1f} s = {seconds[method] / base:.1f}x a plain forward+backward of the "
              f"same {rows} rows per pair ({base:.1f} s)")
    ig = scores["eap-ig"]
    print(f"logit(IO) - logit(S): clean {ig.meta['clean']:.3f}, corrupted {ig.meta['corrupted']:.3f}")

    every = ig.edges()
    rng = np.random.default_rng(args.seed)
    rest = rng.choice(np.arange(20, len(every)), size=min(args.sample, len(every) - 20), replace=False)
    sample = [every[i][:2] for i in list(range(20)) + sorted(rest.tolist())]
    start = time.perf_counter()
    exact = circuits.edge_effects(model, sample, pairs, progress=False)
    t_exact = time.perf_counter() - start
    print(f"exact single-edge patching of {len(sample)} edges: {t_exact:.1f} s "
          f"({t_exact / len(sample):.2f} s an edge over {len(pairs)} pairs)")
    for method, s in scores.items():
        s_index = {n: i for i, n in enumerate(s.senders)}
        r_index = {n: i for i, n in enumerate(s.receivers)}
        est = np.array([s.values[s_index[a], r_index[b]] for a, b in sample])
        print(f"  {method:>6}: Spearman with exact effects {_spearman(est, exact):+.2f} (signed), "
              f"{_spearman(np.abs(est), np.abs(exact)):+.2f} (magnitudes); top 20 only "
              f"{_spearman(est[:20], exact[:20]):+.2f}")

    print("faithfulness of the top-k circuits ((circuit - corrupted) / (clean - corrupted)):")
    sizes = sorted({k for k in args.sizes if k <= int(ig.valid.sum())})
    for method, s in scores.items():
        start = time.perf_counter()
        curve = circuits.faithfulness_curve(model, s, pairs, sizes=sizes, progress=False)
        took = time.perf_counter() - start
        print(f"  {method:>6}: " + ", ".join(f"{k}: {v:.3f}" for k, v in zip(curve.sizes, curve.values))
              + f"  ({took:.1f} s for {len(sizes)} sizes)")
    print("strongest EAP-IG edges (estimate / exact change of the logit difference):")
    for (a, b), e in zip(sample[:10], exact[:10]):
        value = ig.values[ig.senders.index(a), ig.receivers.index(b)]
        print(f"  {a:>7} -> {b:<10} {value:+.3f} / {e:+.3f}")


if __name__ == "__main__":
    main()
