"""DAS on SmolLM2: where does the model keep "which country" when it recalls a capital?

Task: "The capital of {country} is" -> " {capital}" (the countries whose name is one
token; 70% of the ordered country pairs train, 200 of the other 30% are held out).  Base and source prompts name two different countries; a
32-dimensional rotated subspace (LowRankRotatedSpaceIntervention) of the residual stream at the country's token is trained so that swapping it from
the source makes the model name the source's capital.  IIA (the intervened top token is
the source's capital) on held-out country pairs is reported per layer.  Training runs
through the nnsight trace with the model frozen.

    python examples/das_smollm2.py [--layers 0 6 12 18 24 29] [--steps 40]
"""

import argparse
import itertools
import random

import torch

import tracer as pv

CAPITALS = {"France": " Paris", "Italy": " Rome", "Spain": " Madrid", "Germany": " Berlin",
            "Japan": " Tokyo", "Russia": " Moscow", "Egypt": " Cairo", "Greece": " Athens",
            "England": " London", "Austria": " Vienna", "Poland": " Warsaw", "Portugal": " Lisbon",
            "Ireland": " Dublin", "Norway": " Oslo", "Cuba": " Havana", "Peru": " Lima",
            "Canada": " Ottawa", "China": " Beijing", "Kenya": " Nairobi", "Sweden": " Stockholm",
            "Finland": " Helsinki", "Denmark": " Copenhagen", "Turkey": " Ankara", "Iran": " Tehran",
            "Iraq": " Baghdad", "Syria": " Damascus", "Chile": " Santiago", "Belgium": " Brussels",
            "Hungary": " Budapest", "Thailand": " Bangkok", "Vietnam": " Hanoi", "Korea": " Seoul",
            "Indonesia": " Jakarta", "Colombia": " Bogota", "Venezuela": " Caracas",
            "Morocco": " Rabat", "Scotland": " Edinburgh", "Wales": " Cardiff", "Israel": " Jerusalem"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, nargs="+", default=[0, 6, 12, 18, 24, 29])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--dim", type=int, default=32, help="rotated dims (low_rank_dimension)")
    p.add_argument("--lr", type=float, default=1e-2)
    args = p.parse_args()
    torch.manual_seed(0)
    model = pv.load()
    tok = model.tokenizer
    first = lambda word: tok(word)["input_ids"][0]  # noqa: E731
    countries = [c for c in CAPITALS if len(tok(" " + c)["input_ids"]) == 1]
    pairs = list(itertools.permutations(countries, 2))
    random.Random(0).shuffle(pairs)
    cut = len(pairs) * 7 // 10  # held-out pairs (every country is seen in training)
    train_p, test_p = pairs[:cut], pairs[cut:]
    prompt = lambda c: tok(f"The capital of {c} is", return_tensors="pt")  # noqa: E731
    position = len(tok("The capital of")["input_ids"])  # the country's token

    def batch(pool, n, seed):
        pairs = random.Random(seed).sample(pool, min(n, len(pool)))
        base = {k: torch.cat([prompt(b)[k] for b, _ in pairs]) for k in ("input_ids", "attention_mask")}
        src = {k: torch.cat([prompt(s)[k] for _, s in pairs]) for k in ("input_ids", "attention_mask")}
        labels = torch.tensor([first(CAPITALS[s]) for _, s in pairs])
        return {"base": base, "sources": [src], "labels": labels,
                "unit_locations": {"sources->base": position}}

    train = [batch(train_p, 48, seed) for seed in range(args.steps)]
    test = batch(test_p, 200, -1)
    loss = lambda out, y: torch.nn.functional.cross_entropy(out.logits[:, -1], y)  # noqa: E731
    metric = lambda outs, ys: {"iia": sum(int((o.logits[:, -1].argmax(-1) == y).sum())  # noqa: E731
                                          for o, y in zip(outs, ys)) / sum(len(y) for y in ys)}
    print(f"{len(countries)} countries, {len(train_p)} train pairs, {len(test_p)} held-out pairs "
          f"(200 evaluated), country token at position {position}")
    for layer in args.layers:
        iv = pv.LowRankRotatedSpaceIntervention(embed_dim=model.config.hidden_size, low_rank_dimension=args.dim)
        pvm = pv.IntervenableModel({"layer": layer, "component": "block_output", "intervention": iv},
                                   model=model)
        before = pvm.eval_alignment([test], metric, progress=False)["iia"]
        log = pvm.train_alignment(train, loss, lr=args.lr, progress=True)  # a bar per step
        after = pvm.eval_alignment([test], metric, progress=False)["iia"]
        print(f"layer {layer:2d}: loss {log[0]['loss']:.2f} -> {log[-1]['loss']:.2f}; held-out IIA "
              f"untrained {before:.2f} -> trained {after:.2f}", flush=True)


if __name__ == "__main__":
    main()
