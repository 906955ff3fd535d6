"""Inference-time intervention on the embedded SmolLM2 (offline), end to end.

Fits head probes on the shipped true/false statements, saves the intervention as
config.json + tensors.safetensors, loads it back, evaluates it, and generates with it.

    python examples/iti_truthfulness.py [--alpha 5] [--out results/iti]
"""

import argparse

import tracer
from recipes import iti


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=5.0)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--out", default="results/iti")
    args = parser.parse_args()
    model = tracer.load("smollm2")
    spec, report = iti.fit(model, top_k=args.top_k, alpha=args.alpha, model_name="smollm2")
    spec.save(args.out)
    spec = tracer.files.load(args.out, model)  # what a collaborator would do
    print(f"heads (layer, head): {report['chosen']}")
    result = iti.evaluate(model, spec, report["splits"]["test"])
    print(f"prefers the true statement: {result['prefers_true_without']:.3f} without, "
          f"{result['prefers_true_with']:.3f} with; neutral-text KL {result['kl']:.4f}")
    plain, steered = iti.generate(model, ["Is the Earth flat?"], spec, max_new_tokens=30)
    print(f"without: {plain[0].strip()}\nwith:    {steered[0].strip()}")


if __name__ == "__main__":
    main()
