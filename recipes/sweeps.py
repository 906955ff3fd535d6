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

from . import attribution, dataset, interchange
from .cli import HelpFormatter, guarded, parse_heads, parse_layers, setup, shared


def _common(p: argparse.ArgumentParser, seed_help: Optional[str] = None) -> None:
    p.add_argument("--max-batch", type=int, default=None, help="rows per batch (default: from free memory)")
    shared(p, out="results", layers="layers patched",
           out_help="output folder (NPZ, JSON, PNG); finished batches wait in OUT/.partial, so an "
                    "interrupted local or remote run resumes",
           **({"seed_help": seed_help} if seed_help else {}))


def _pair(p: argparse.ArgumentParser, site: str) -> None:
    """A base/source pair, or a data set of them, patched at one site kind (sweep, attribute)."""
    p.add_argument("--base", default=None, help="the prompt patched into (or --data)")
    p.add_argument("--source", default=None, help="the prompt patched from (same token count as --base)")
    p.add_argument("--answers", nargs="+", default=None,
                   help="answers scored after the prompt (with --data: shared by every pair)")
    p.add_argument("--site", default=site, help="site kind or alias (resid_pre, resid_post, head_out, head_q, ...)")
    _data(p)


def _data(p: argparse.ArgumentParser, prompt_cols: bool = True) -> None:
    """A data set from a file: its columns and roles."""
    p.add_argument("--data", default=None,
                   help="a data set of prompt pairs: .json (records or {\"items\": [...]}), .jsonl or .csv")
    if prompt_cols:
        p.add_argument("--base-col", default="base", help="--data column of the base prompts")
        p.add_argument("--source-col", default="source", help="--data column of the source prompts")
    p.add_argument("--answers-col", nargs="+", default=["answers"],
                   help="--data column of the answers (a list, a JSON list or a|b), or one column per answer")
    p.add_argument("--role-col", nargs="*", default=[], metavar="ROLE=COLUMN",
                   help="roles read from --data columns (the source's from source_COLUMN when present)")
    p.add_argument("--role", nargs="*", default=[], metavar="ROLE=VALUE",
                   help="roles shared by every prompt: a token index (end=-1) or a word")
    p.add_argument("--template", default=None,
                   help="a template with {SLOT}s filled from --data's slot columns (source_SLOTk for the source)")
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs of --data")


def _assignments(items: list, what: str) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{what} {item!r} is not NAME=VALUE (e.g. end=-1)")
        out[name] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _roles(args: argparse.Namespace) -> Optional[dict]:
    roles = _assignments(args.role, "--role")
    return roles or None


def _pairs(args: argparse.Namespace) -> Optional[list]:
    """The --data set as pairs, or None without --data (checked before any model work)."""
    if args.data is None:
        return None
    answers_col = args.answers_col[0] if len(args.answers_col) == 1 else args.answers_col
    return dataset.pairs(args.data, base_col=getattr(args, "base_col", "base"),
                         source_col=getattr(args, "source_col", "source"), answers_col=answers_col,
                         answers=getattr(args, "answers", None) or None, roles=_roles(args),
                         role_cols={k: str(v) for k, v in _assignments(args.role_col, "--role-col").items()},
                         template=args.template, limit=args.limit)


def _direction(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--direction", default=default, choices=["denoising", "noising"],
                   help="which run is clean for the normalized metric: denoising (source clean, "
                        "base corrupted) or noising (base clean)")


def _metric(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--metric", default=default, choices=["prob", "logprob", "logit_diff"],
                   help="prob: P(first answer); logprob; logit_diff: first minus second answer's logit")


def parser(prog: str = "python -m recipes.sweeps") -> argparse.ArgumentParser:
    """The three commands and their options (defaults shown in --help)."""
    fmt = HelpFormatter
    top = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                  formatter_class=fmt)
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", formatter_class=fmt,
                       help="patch a site from source into base, layer x position (or x head)")
    _pair(p, "resid_post")
    p.add_argument("--heads", nargs="*", default=None, help="'each' or head indices: a layer x head grid")
    _metric(p, "prob")
    _direction(p, "denoising")
    _common(p, seed_help="seed of the bootstrap interval (data sets)")
    p = sub.add_parser("causal-trace", formatter_class=fmt,
                       help="ROME causal tracing: noise on the subject, restore one state at a time")
    p.add_argument("--prompt", default=None, help="the clean prompt (or --data)")
    p.add_argument("--subject", default=None, help="the words noised (must occur in the prompt)")
    p.add_argument("--answer", default=None, help="the answer whose probability is traced")
    p.add_argument("--data", default=None, help="facts to trace: .json, .jsonl or .csv with prompt, "
                                                "subject and answer columns")
    p.add_argument("--prompt-col", default="prompt", help="--data column of the prompts")
    p.add_argument("--subject-col", default="subject", help="--data column of the subjects")
    p.add_argument("--answer-col", default="answer", help="--data column of the answers")
    p.add_argument("--limit", type=int, default=None, help="use the first N facts of --data")
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
    _data(p)
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


def _facts(args: argparse.Namespace) -> Optional[tuple]:
    """--data of causal-trace as (prompts, subjects, answers), or None."""
    if args.data is None:
        return None
    rows = dataset.records(args.data)[:args.limit] if args.limit else dataset.records(args.data)
    if not rows:
        raise ValueError(f"{args.data} holds no facts")
    cols = (args.prompt_col, args.subject_col, args.answer_col)
    for i, row in enumerate(rows):
        missing = [c for c in cols if not isinstance(row, dict) or c not in row]
        if missing:
            raise ValueError(f"fact {i} of {args.data} has no column {missing[0]!r}")
    return tuple([row[c] for row in rows] for c in cols)


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
    items = _pairs(args) if args.command != "causal-trace" else None
    facts = _facts(args) if args.command == "causal-trace" else None
    if args.command in ("sweep", "attribute") and items is None and (
            args.base is None or args.source is None or not args.answers):
        raise ValueError(f"{args.command} needs --base, --source and --answers, or --data")
    if args.command == "causal-trace" and facts is None and None in (args.prompt, args.subject, args.answer):
        raise ValueError("causal-trace needs --prompt, --subject and --answer, or --data")
    model = setup(args)
    out = args.out
    args.layers = parse_layers(args.layers, tracer.sites.dims_of(model.config).n_layers)
    common = dict(max_batch=args.max_batch, progress=True)
    resume = str(Path(out) / ".partial")
    pair = dict(data=items) if items is not None else dict(
        base=getattr(args, "base", None), source=getattr(args, "source", None),
        answers=getattr(args, "answers", None))
    if args.command == "sweep":
        heads = None if args.heads is None else parse_heads(args.heads)
        result = interchange.sweep(model, **pair, site=args.site, layers=args.layers, heads=heads,
                                   metric=args.metric, remote=args.remote, resume_dir=resume,
                                   roles=None if items is not None else _roles(args),
                                   direction=args.direction, seed=args.seed, **common)
    elif args.command == "causal-trace":
        prompt, subject, answer = facts if facts is not None else (args.prompt, args.subject, args.answer)
        result = interchange.causal_trace(model, prompt, subject, answer,
                                          site=args.site, layers=args.layers, noise=args.noise,
                                          samples=args.samples, seed=args.seed, remote=args.remote,
                                          resume_dir=resume, **common)
    elif args.command == "attribute":
        result = attribution.attribute(model, **pair, site=args.site,
                                       metric=args.metric, method=args.method, layers=args.layers,
                                       heads=args.heads, verify=args.verify,
                                       roles=None if items is not None else _roles(args), seed=args.seed)
    else:
        if items is not None:
            bases, sources, answers = items, None, None
        elif args.base is None:
            bases, sources, answers = interchange.ioi()
        else:
            bases, sources = args.base, args.source or []
            answers = args.answers or []
        result = interchange.path_patch(model, bases, sources, answers,
                                        [_receiver(r) for r in args.receivers], metric=args.metric,
                                        layers=args.layers, resume_dir=resume, seed=args.seed, **common)
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
