"""Command line for the patching sweeps: ``python -m recipes.sweeps {sweep,causal-trace,path-patch,attribute}``.

Each command validates its output folder before any work, shows a progress bar over batches,
and writes ``NAME.npz``, ``NAME.json`` and a labelled ``NAME.png`` heatmap into ``--out``
(finished batches wait in ``OUT/.partial``, so an interrupted local run resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import tracer

from . import attribution, interchange
from .cli import guarded, parse_layers, setup, shared


def _common(p: argparse.ArgumentParser, seed_help: Optional[str] = None) -> None:
    p.add_argument("--max-batch", type=int, default=None, help="rows per batch (default: from free memory)")
    shared(p, out="results", layers="layers patched",
           out_help="output folder (NPZ, JSON, PNG); finished batches wait in OUT/.partial, so an "
                    "interrupted local or remote run resumes",
           **({"seed_help": seed_help} if seed_help else {}))


def _pair(p: argparse.ArgumentParser, site: str) -> None:
    """A base/source pair patched at one site kind (sweep, attribute)."""
    p.add_argument("--base", required=True, help="the prompt patched into")
    p.add_argument("--source", required=True, help="the prompt patched from (same token count as --base)")
    p.add_argument("--answers", nargs="+", required=True, help="answers scored after the prompt")
    p.add_argument("--site", default=site, help="site kind or alias (resid_pre, resid_post, head_out, head_q, ...)")


def _metric(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--metric", default=default, choices=["prob", "logprob", "logit_diff"],
                   help="prob: P(first answer); logprob; logit_diff: first minus second answer's logit")


def parser(prog: str = "python -m recipes.sweeps") -> argparse.ArgumentParser:
    """The three commands and their options (defaults shown in --help)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    top = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                  formatter_class=fmt)
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", formatter_class=fmt,
                       help="patch a site from source into base, layer x position (or x head)")
    _pair(p, "resid_post")
    p.add_argument("--heads", nargs="*", default=None, help="'each' or head indices: a layer x head grid")
    _metric(p, "prob")
    _common(p)
    p = sub.add_parser("causal-trace", formatter_class=fmt,
                       help="ROME causal tracing: noise on the subject, restore one state at a time")
    p.add_argument("--prompt", required=True, help="the clean prompt")
    p.add_argument("--subject", required=True, help="the words noised (must occur in the prompt)")
    p.add_argument("--answer", required=True, help="the answer whose probability is traced")
    p.add_argument("--site", default="resid_post", help="the site restored (resid_post, mlp_out, attn_out, ...)")
    p.add_argument("--samples", type=int, default=10, help="noise draws averaged")
    p.add_argument("--noise", type=float, default=None, help="noise std (default: 3x the embeddings' std)")
    _common(p, seed_help="seed of the noise draws")
    p = sub.add_parser("path-patch", formatter_class=fmt,
                       help="path patching from every head to receivers (default: the shipped IOI set)")
    p.add_argument("--base", nargs="*", default=None, help="base prompts (default: the IOI prompts)")
    p.add_argument("--source", nargs="*", default=None, help="source prompts, one per base prompt")
    p.add_argument("--answers", nargs="*", default=None,
                   help="answers shared by all prompts (default: IOI's IO and S names per prompt)")
    p.add_argument("--receivers", nargs="+", default=["final"],
                   help="site names, or KIND.LAYER.HEAD for one head (e.g. head_q.9.1)")
    _metric(p, "logit_diff")
    _common(p)
    p = sub.add_parser("attribute", formatter_class=fmt,
                       help="attribution patching: every patch effect of a sweep from gradients")
    _pair(p, "resid_pre")
    p.add_argument("--method", default="atp", choices=list(attribution.METHODS),
                   help="atp: signed first-order estimates; qk: query and key patches through "
                        "the exact softmax (AtP*'s QK fix); gradrop: GradDrop magnitudes; "
                        "atp*: both corrections")
    p.add_argument("--heads", action="store_true", help="layer x head (head sites)")
    _metric(p, "logprob")
    p.add_argument("--verify", type=int, default=0, help="cells to check with exact patches")
    _common(p)
    return top


def _receiver(text: str):
    parts = text.split(".")
    if len(parts) == 3 and all(x.lstrip("-").isdigit() for x in parts[1:]):
        return parts[0], int(parts[1]), int(parts[2])
    return text


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.sweeps") -> int:
    """Parse, check the output folder, run, write NPZ/JSON/PNG."""
    # under interlace each command is its own: "interlace sweep", not "interlace sweep sweep"
    args = parser("interlace" if prog.startswith("interlace") else prog).parse_args(argv)
    model = setup(args)
    out = args.out
    args.layers = parse_layers(args.layers, tracer.sites.dims_of(model.config).n_layers)
    common = dict(max_batch=args.max_batch, progress=True)
    resume = str(Path(out) / ".partial")
    if args.command == "sweep":
        heads = None if args.heads is None else ("each" if args.heads == ["each"] else [int(h) for h in args.heads])
        result = interchange.sweep(model, args.base, args.source, args.answers, site=args.site,
                                   layers=args.layers, heads=heads, metric=args.metric,
                                   remote=args.remote, resume_dir=resume, **common)
    elif args.command == "causal-trace":
        result = interchange.causal_trace(model, args.prompt, args.subject, args.answer,
                                          site=args.site, layers=args.layers, noise=args.noise,
                                          samples=args.samples, seed=args.seed, remote=args.remote,
                                          resume_dir=resume, **common)
    elif args.command == "attribute":
        result = attribution.attribute(model, args.base, args.source, args.answers, site=args.site,
                                       metric=args.metric, method=args.method, layers=args.layers,
                                       heads=args.heads, verify=args.verify)
    else:
        if args.base is None:
            bases, sources, answers = interchange.ioi()
        else:
            bases, sources = args.base, args.source or []
            answers = args.answers or []
        result = interchange.path_patch(model, bases, sources, answers,
                                        [_receiver(r) for r in args.receivers], metric=args.metric,
                                        layers=args.layers, resume_dir=resume, **common)
    for folder in sorted(Path(resume).glob("**/"), reverse=True):  # done: nothing to resume
        try:
            folder.rmdir()
        except OSError:
            pass
    name = args.command.replace("-", "_")
    written = result.save(out, name=name)
    print(f"{result.meta.get('title', name)}; baselines " +
          ", ".join(f"{k} {v:.4f}" for k, v in result.baselines.items()))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
