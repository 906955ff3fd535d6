"""The seed's three examples with recipes.interchange on the embedded SmolLM2 (offline).

For each minimal pair, swap the differing word's representations (residual stream and the
query/key/value of all heads together) layer by layer, and print the layers where the swap
moves the continuation preference most.  With ``--out``, each example's results and its
heatmap (layer x effect) go to ``OUT/example_N/``.

    python examples/interchange_winograd.py [--out results/winograd_examples]
"""

import argparse
from pathlib import Path

from recipes import interchange


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for each example's results and heatmap")
    args = parser.parse_args()
    model = None
    for n, (sent_1, sent_2, conts, targets) in enumerate(interchange.SEED_EXAMPLES):
        config = interchange.InterchangeInterventionConfig(sents=[sent_1, sent_2], conts=conts)
        intervention = interchange.InterchangeIntervention(model or "smollm2", config)
        model = intervention.model  # load once, reuse
        output = intervention.run(targets=targets, rep_types=["lay", "qry", "key", "val"],
                                  multihead=True, progress=False)
        effects = interchange.effects_table(output)[:, 0]
        top = effects.argsort()[::-1][:3]
        print(f"\n{sent_1!r}\n{sent_2!r}")
        for c, cont in enumerate(conts):
            p = output["original"][c, :, 0]
            print(f"  P({cont!r}) = {p[0]:.4f} / {p[1]:.4f}")
        print("  strongest layers: " + ", ".join(f"{l} ({effects[l]:.3f})" for l in top))
        if args.out:
            name = "lay+qry+key+val"
            result = intervention.result(targets, {name: output}, {name: intervention.columns})
            print("  wrote " + ", ".join(str(p) for p in result.save(Path(args.out) / f"example_{n}").values()))


if __name__ == "__main__":
    main()
