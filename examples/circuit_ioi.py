"""The IOI circuit of SmolLM2: which edges between components carry the indirect object's
name, and how much of the behaviour do they keep?

Every edge of the model's graph (embeddings, each head's query/key/value input and output,
each MLP, the logits) is scored by EAP-IG on the first pairs of the shipped IOI set (clean:
"... John gave a drink to" -> " Mary"; corrupted: the second "John" replaced by a third
name), the strongest edges are kept, and their faithfulness is measured by running the
model with every other edge patched from the corrupted prompts.

    python examples/circuit_ioi.py [--model smollm2] [--pairs 8] [--method eap-ig] [--top 200] [--out circuit/]
"""

from __future__ import annotations

import argparse

import tracer
from recipes import circuits, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pairs", type=int, default=8, help="IOI pairs (default the first 8 of 120)")
    parser.add_argument("--method", default="eap-ig", choices=list(circuits.METHODS))
    parser.add_argument("--top", type=int, default=200, help="edges kept (default 200)")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="sizes of the faithfulness curve")
    parser.add_argument("--out", default=None, help="folder for the scores, circuit and pictures")
    args = parser.parse_args()
    model = tracer.load(args.model)
    pairs = dataset.ioi(limit=args.pairs)
    scores = circuits.discover(model, pairs, metric="logit_diff", method=args.method)
    print(f"logit(IO) - logit(S): clean {scores.meta['clean']:.3f}, corrupted {scores.meta['corrupted']:.3f}; "
          f"{int(scores.valid.sum())} edges scored")
    circuit = scores.top(args.top)
    print(f"the strongest edges ({args.method}, estimated change of the logit difference when the edge "
          f"sees the corrupted run):")
    for sender, receiver, score in circuit.edges[:10]:
        print(f"  {sender:>7} -> {receiver:<10} {score:+.3f}")
    sizes = args.sizes if args.sizes is not None else sorted({0, 10, 50, args.top, 1000, int(scores.valid.sum())})
    curve = circuits.faithfulness_curve(model, scores, pairs, sizes=sizes)
    for k, f in zip(curve.sizes, curve.values):
        print(f"  top {k:>6} edges: faithfulness {f:.3f}")
    if args.out:
        written = [*scores.save(args.out).values(), circuit.save(args.out),
                   circuit.plot(f"{args.out}/circuit.png"), *curve.save(args.out).values()]
        print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
