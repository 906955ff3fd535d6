"""Inference-time intervention on the embedded SmolLM2 (offline), end to end.

Fits head probes on the shipped true/false statements, chooses K and alpha on the validation
split (unless given), saves the intervention as config.json + tensors.safetensors, loads it
back, evaluates it on the held-out test pairs and generates with it.  The output shows the
steered heads, how often the model prefers the true statement of a test pair without and
with ITI (and the KL it costs on neutral text), and one answer without and with it.

    python examples/iti_truthfulness.py [--alpha A] [--top-k K] [--pairs N] [--out results/iti]
"""

import argparse

import numpy as np

import tracer
from recipes import iti


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=None, help="default: chosen on validation")
    parser.add_argument("--top-k", type=int, default=None, help="default: chosen on validation")
    parser.add_argument("--pairs", type=int, default=None,
                        help="use the first N statement pairs only (default: all shipped pairs)")
    parser.add_argument("--out", default="results/iti")
    args = parser.parse_args()
    model = tracer.load("smollm2")
    data = iti.load_statements()
    if args.pairs is not None:  # a statement and its twin stay together
        data = data.subset(np.isin(data.pair, sorted(set(data.pair.tolist()))[:args.pairs]))
    result = iti.run(model, data, top_k=args.top_k, alpha=args.alpha, model_name="smollm2")  # an ITIResult
    result.save(args.out)  # the intervention folder, eval.json, probe_accuracy.png
    spec = tracer.files.load(args.out, model)  # what a collaborator would do
    chosen = result.to_dict()
    print(f"K={chosen['top_k']} heads (layer, head) at alpha {chosen['alpha']:g}: {chosen['chosen']}")
    ev = result.evaluation
    print(f"prefers the true statement: {ev['prefers_true_without']:.3f} without, "
          f"{ev['prefers_true_with']:.3f} with; neutral-text KL {ev['kl']:.4f}")
    plain, steered = iti.generate(model, ["Is the Earth flat?"], spec, max_new_tokens=30)
    print(f"without: {plain[0].strip()}\nwith:    {steered[0].strip()}")


if __name__ == "__main__":
    main()
