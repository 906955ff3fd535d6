"""Activation patching on the embedded SmolLM2: where does the subject's identity matter?

Patch the residual stream at the subject token (" France" <- " Italy") one layer at a time
and watch P(" Paris") and P(" Rome") after "The capital of France is".  All layers run in
one batched forward: row L of the batch is patched at layer L.

    python examples/patching.py [--site resid_post] [--model smollm2]
"""

from __future__ import annotations

import argparse
from typing import Any

import nnsight
import torch

import tracer


def layer_sweep(model: Any, base: str, source: str, subject: str, answers: list[str],
                site: str = "resid_post") -> dict[str, Any]:
    """P(answer) after ``base`` with ``site.L`` at the subject token patched from ``source``.

    Returns ``{"layers": [...], "clean": {answer: p}, "patched": {answer: [p per layer]}}``.
    Base and source must tokenize to the same length (the subject swapped for a one-token word).
    """
    tok = model.tokenizer
    pos = tracer.tokens.find(tok, base, subject)
    n_base, n_src = len(tok(base)["input_ids"]), len(tok(source)["input_ids"])
    if n_base != n_src:
        raise ValueError(f"base and source must have the same number of tokens; got {n_base} "
                         f"and {n_src}")
    answer_ids = [tok(a, add_special_tokens=False)["input_ids"][0] for a in answers]
    n_layers = model.config.num_hidden_layers
    sites = [tracer.site(model, site, layer=layer) for layer in range(n_layers)]
    with torch.no_grad():
        with model.trace(source):
            saved = nnsight.save([s.read(positions=pos) for s in sites])
        with model.trace([base] * (n_layers + 1)):
            # row L is patched at layer L; the last row stays clean
            for layer, s in enumerate(sites):
                tracer.interventions.interchange(s, saved[layer], positions=pos, rows=[layer])
            probs = model.output.logits[:, -1].softmax(-1)[:, answer_ids].save()
    return {
        "layers": list(range(n_layers)),
        "clean": {a: float(probs[-1, i]) for i, a in enumerate(answers)},
        "patched": {a: [float(p) for p in probs[:-1, i]] for i, a in enumerate(answers)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--site", default="resid_post")
    args = parser.parse_args()
    model = tracer.load(args.model)
    answers = [" Paris", " Rome"]
    result = layer_sweep(model, "The capital of France is", "The capital of Italy is",
                         " France", answers, site=args.site)
    print(f"Patching {args.site} at ' France' <- ' Italy' in 'The capital of France is'")
    print("clean: " + "  ".join(f"P({a!r})={p:.3f}" for a, p in result["clean"].items()))
    print(f"{'layer':>5}  {'P(Paris)':>8}  {'P(Rome)':>8}")
    for layer in result["layers"]:
        paris, rome = (result["patched"][a][layer] for a in answers)
        bar = "#" * int(round(rome * 40))
        print(f"{layer:>5}  {paris:8.3f}  {rome:8.3f}  {bar}")


if __name__ == "__main__":
    main()
