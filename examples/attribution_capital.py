"""Attribution patching on SmolLM2: estimate every resid_pre patch of "The capital of Spain
is" from "... Italy is" with gradients, then check the largest estimates by exact patching.

The output shows AtP's estimate and the exact change of log P(" Rome") for the 8 cells with
the largest estimates: where they disagree (the subject token in the middle layers: the
estimate has the wrong sign; the last position: about twice the exact effect), trust the
exact sweep.

    python examples/attribution_capital.py [--model smollm2] [--method atp|gradrop] [--out DIR]
"""

from __future__ import annotations

import argparse
import warnings

from recipes import attribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--method", default="atp", choices=list(attribution.METHODS))
    parser.add_argument("--out", default=None, help="folder for the estimates (NPZ, JSON) and their heatmap")
    args = parser.parse_args()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = attribution.attribute(args.model, "The capital of Spain is", "The capital of Italy is",
                                       [" Rome"], site="resid_pre", method=args.method, verify=8)
    checked = result.meta["verified"]
    positions = result.labels["position"]
    print(f"{args.method}: the 8 largest estimates, checked by exact patching (log P(' Rome') change)")
    for (layer, pos), est, exact in zip(checked["cells"], checked["estimate"], checked["exact"]):
        print(f"  layer {layer:>2} {positions[pos]:<12} estimate {est:+7.2f}   exact {exact:+7.2f}")
    for w in caught:
        print(f"warning: {w.message}")
    if args.out:
        print("wrote " + ", ".join(str(p) for p in result.save(args.out, name="attribution").values()))


if __name__ == "__main__":
    main()
