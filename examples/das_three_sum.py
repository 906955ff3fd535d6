"""The seed's causal-abstraction tutorial: train a small MLP on a + b + c, then find (a + b)
in its first hidden layer with DAS (RotatedSpaceIntervention), with two controls.  The output
shows held-out interchange accuracy (IIA): about 0.94 for DAS on a + b, about 0.1 for the
untrained rotation and for the wrong variable b + c, so the rotation found a + b.

    python examples/das_three_sum.py [--epochs 15] [--out results/das]
"""

import argparse

from recipes import das

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=15, help="training epochs of each rotation")
parser.add_argument("--out", default="results/das", help="folder for das.json, das.png and the rotation")
args = parser.parse_args()
result = das.search([0], dim=16, epochs=args.epochs, save_dir=args.out)  # a das.DASResult
print(f"MLP accuracy {result.mlp_accuracy:.3f}")
for name, iia in result.iia["layer 0"].items():
    print(f"{name:26s} held-out IIA {iia:.3f}")
print("wrote " + ", ".join(str(p) for p in result.save(args.out).values()))
