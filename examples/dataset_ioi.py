"""Activation patching over a data set on SmolLM2: where does the IOI answer live, layer by
layer and role by role, over the shipped templated prompt pairs?

Every pair's residual stream (before each layer) is patched from the corrupted prompt (the
second S replaced by a third name) into the clean one (noising), at the template's roles IO,
S1, S2 and END, whatever each prompt's token length; the value is logit(IO) - logit(S) at
the last token, averaged over the pairs, with its normalized form (1 = the clean run, 0 = the
corrupted run), the standard error and a seeded bootstrap 95% interval per cell.

    python examples/dataset_ioi.py [--model smollm2] [--pairs 40] [--layers ...] [--out ioi_roles/]
"""

from __future__ import annotations

import argparse

import numpy as np

import tracer
from recipes import dataset, interchange


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pairs", type=int, default=40, help="IOI prompt pairs (default 40 of 120)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="layers (default: all)")
    parser.add_argument("--out", default=None, help="folder for the grid (NPZ, JSON, two heatmaps)")
    args = parser.parse_args()
    model = tracer.load(args.model)
    items = dataset.ioi(limit=args.pairs)
    # the shipped pairs' base is the clean prompt: patching the source into it is noising
    result = interchange.sweep(model, data=items, site="resid_pre", metric="logit_diff",
                               layers=args.layers, direction="noising")
    clean, corrupted = result.baselines[result.clean], result.baselines[result.corrupted]
    print(f"{result.n_prompts} pairs; logit(IO) - logit(S): clean ({result.clean}) {clean:.3f}, "
          f"corrupted ({result.corrupted}) {corrupted:.3f}")
    spread, norm = result.spread(), result.normalized
    layers, roles = list(result.labels["layer"]), list(result.labels["role"])
    print("per role, the layer where patching it moves logit(IO) - logit(S) most "
          "(change from the clean run, 95% interval, normalized):")
    for j, role in enumerate(roles):
        change = result.values[:, j] - clean
        i = int(np.nanargmax(np.abs(change)))
        if abs(change[i]) < 0.01:  # e.g. a role whose token and prefix both prompts share
            print(f"  {role:<4} no layer moves it (|change| < 0.01)")
            continue
        interval = "" if spread is None else f" [{spread['low'][i, j] - clean:+.3f}, {spread['high'][i, j] - clean:+.3f}]"
        share = "" if norm is None else f", normalized {norm[i, j]:+.2f}"
        print(f"  {role:<4} layer {layers[i]:>2}: {change[i]:+.3f}{interval}{share}")
    if args.out:
        written = result.save(args.out, name="ioi_roles")
        print("wrote " + ", ".join(str(p) for p in written.values()))


if __name__ == "__main__":
    main()
