"""Command line for circuit discovery: ``interlace circuit`` (or ``python -m recipes.circuit_command``).

Scores every edge over a data set of (clean, corrupted) pairs, keeps the strongest
(``--top`` or ``--threshold``), and writes into ``--out``: ``scores.npz`` / ``scores.json``
(every edge's score), ``circuit.json`` (the circuit, ``recipes.circuits.Circuit.load`` reads
it), ``circuit.png`` (the layered graph), ``faithfulness_curve.json`` / ``.png`` (the
faithfulness of the top-k circuits, the chosen size among them).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tracer import checks
from tracer.graph import Graph

from . import circuits, dataset
from .cli import HelpFormatter, guarded, setup, shared
from .sweeps import _data, _pairs


def parser(prog: str = "python -m recipes.circuit_command") -> argparse.ArgumentParser:
    """The options (defaults shown in --help)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    _data(p)
    p.set_defaults(data=str(dataset.IOI_FILE))
    p.add_argument("--method", default="eap-ig", choices=list(circuits.METHODS),
                   help="eap: gradients at the clean run; eap-ig: integrated gradients from the "
                        "corrupted to the clean embeddings")
    p.add_argument("--steps", type=int, default=5, help="eap-ig: points along the path")
    p.add_argument("--metric", default="logit_diff", choices=["prob", "logprob", "logit_diff"],
                   help="on the answers after each prompt: logit_diff (first minus second), "
                        "logprob or prob of the first")
    choose = p.add_mutually_exclusive_group()
    choose.add_argument("--top", type=int, default=200, help="keep the N edges with the largest |score|")
    choose.add_argument("--threshold", type=float, default=None, help="keep the edges with |score| >= T")
    p.add_argument("--sizes", type=int, nargs="*", default=None,
                   help="circuit sizes (edges) of the faithfulness curve (default: 0 to every edge, "
                        "log-spaced); none: no curve")
    p.add_argument("--max-batch", type=int, default=16, help="rows per pass")
    shared(p, out="results/circuit", out_help="output folder (scores, circuit, pictures)")
    return p


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.circuit_command") -> int:
    """Parse, check, discover, choose, check faithfulness, write."""
    args = parser("interlace circuit" if prog.startswith("interlace") else prog).parse_args(argv)
    items = _pairs(args)
    if args.top is not None and args.threshold is None:
        checks.integer("--top", args.top, 0)
    model = setup(args)
    n_edges = int(Graph(model).valid.sum())
    for k in args.sizes or ():
        checks.integer("--sizes: a circuit size", k, 0, n_edges)
    scores = circuits.discover(model, items, metric=args.metric, method=args.method, steps=args.steps,
                               max_batch=args.max_batch)
    written = scores.save(args.out)
    chosen = scores.threshold(args.threshold) if args.threshold is not None else \
        scores.top(min(args.top, int(scores.valid.sum())))
    written["circuit"] = chosen.save(args.out)
    written["graph"] = chosen.plot(f"{args.out}/circuit.png")
    sizes = args.sizes
    if sizes is None:
        sizes = sorted(set(circuits.default_sizes(int(scores.valid.sum()))) | {len(chosen)})
    line = f"circuit: {len(chosen)} of {int(scores.valid.sum())} edges ({chosen.meta['chosen']})"
    if sizes:
        curve = circuits.faithfulness_curve(model, scores, items, metric=args.metric, sizes=sizes,
                                            max_batch=args.max_batch)
        written.update({f"curve_{k}": v for k, v in curve.save(args.out).items()})
        if len(chosen) in curve.sizes:
            line += f", faithfulness {curve.values[curve.sizes.index(len(chosen))]:.3f}"
        line += f" (metric clean {curve.clean:.4f}, corrupted {curve.corrupted:.4f})"
    print(line)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
