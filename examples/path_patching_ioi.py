"""Path patching on SmolLM2 with the shipped IOI prompts: which heads write the indirect
object's name straight into the logits (the IOI paper's name movers)?

Each head is patched alone from the ABC-corrupted prompts with every other head and MLP
frozen at the clean run; the value is logit(IO) - logit(S) after the final norm takes the
patched values, averaged over the first 8 of the 120 shipped prompt pairs.  The most negative heads are the ones
whose direct path carries the answer.

    python examples/path_patching_ioi.py [--model smollm2] [--top 8] [--out ioi/] [--pairs 8] [--layers ...]
"""

from __future__ import annotations

import argparse

import numpy as np

import tracer
from recipes import interchange


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--top", type=int, default=8, help="heads to list (default 8)")
    parser.add_argument("--out", default=None, help="folder for the grid (NPZ, JSON, PNG)")
    parser.add_argument("--pairs", type=int, default=8, help="IOI prompt pairs averaged (default the first 8 of 120)")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="sender heads' layers (default: every layer)")
    args = parser.parse_args()
    model = tracer.load(args.model)
    bases, sources, answers = (x[:args.pairs] for x in interchange.ioi())
    result = interchange.path_patch(model, bases, sources, answers, receivers=["final"], layers=args.layers)
    base = result.baselines["base"]
    print(f"logit(IO) - logit(S): clean {base:.3f}, ABC-corrupted {result.baselines['source']:.3f}")
    drop = result.values - base
    order = np.argsort(drop, axis=None)[:args.top]
    print("heads whose direct path to the logits carries the answer (change when patched):")
    layers = result.labels["layer"]  # the rows: the layers tried
    for flat in order:
        row, head = np.unravel_index(flat, drop.shape)
        layer = layers[row]
        print(f"  layer {layer:>2} head {head}: {drop[row, head]:+.3f}")
    print("heads whose direct path works against it (the IOI paper's negative name movers):")
    for flat in np.argsort(-np.nan_to_num(drop, nan=-np.inf), axis=None)[:3]:
        row, head = np.unravel_index(flat, drop.shape)
        print(f"  layer {layers[row]:>2} head {head}: {drop[row, head]:+.3f}")
    if args.out:
        written = result.save(args.out, name="path_patching")  # NPZ, JSON and the heatmap
        print("wrote " + ", ".join(str(p) for p in written.values()))


if __name__ == "__main__":
    main()
