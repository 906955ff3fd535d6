"""Interchange interventions: the seed's head-batched swaps, patching sweeps, causal tracing.

The seed's API (a Hugging Face Space), with its import changed::

    from recipes import interchange
    config = interchange.InterchangeInterventionConfig(sents=[sent_1, sent_2], conts=["Paul", "George"])
    model = interchange.InterchangeIntervention("smollm2", config)
    output = model.run(targets=["successful", "available"], rep_types=["lay", "qry", "key", "val"])
    # output["original"], output["interv_layer_0"], ...: arrays (num_conts, num_sents, num_heads)

Definitions:

- P(continuation | prompt) = exp(mean log-probability of the continuation's tokens),
  teacher-forced on ``prompt + " " + continuation`` (the seed's definition).
- The swap exchanges the target words' representations between the two prompts (prompt 1
  gets prompt 2's and the reverse) at the targets' token positions.  **Alignment rule** for
  targets of different token lengths: the tokens are paired from the end (the last token of
  one target with the last token of the other, and so on); the extra leading tokens of the
  longer target are left alone.  The last token is where a causal LM has read the whole word.
- Rep types: ``lay`` = resid_post, ``qry``/``key``/``val`` = head_q/head_k/head_v, ``out`` =
  head_out.  Several rep types in one call are applied together in the same forward pass.
  Under grouped-query attention, head h of ``key``/``val`` is the key-value head that query
  head h reads (h // (heads / kv_heads)).
- Effect score (heatmaps, strongest-effects table): for each prompt, the total-variation
  distance between the continuations' probabilities (normalized over the continuations)
  before and after the swap, averaged over the two prompts.  0 = no change, 1 = the
  preference moved entirely.

Every intervention of a run is planned first and packed into as few forward passes as
``max_batch`` allows (rows = intervention x continuation x prompt; all layers share batches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, chunks, execute, plan as plans
from tracer.metrics import continuation_prob, effect_scores  # noqa: F401 - the seed's score
from tracer.plan import Group, Logprobs
from tracer.tokens import continuation_ids

from .cli import HelpFormatter, guarded, parse_heads, parse_layers, setup, shared
from .patching import (DIRECTIONS, TRACE_ROLES, _layers, _model, causal_trace, causal_trace_plan,  # noqa: F401
                       metric_fn, sweep, sweep_plans)
from .paths import ioi, path_patch  # noqa: F401 - the recipe's path patching
from .results import InterchangeResult, effects_table  # noqa: F401

# The seed's three examples: (sentence 1, sentence 2, continuations, targets).
SEED_EXAMPLES = [
    ("Paul tried to call George but he wasn't successful . Who wasn't successful ?",
     "Paul tried to call George but he wasn't available . Who wasn't available ?",
     ["Paul", "George"], ["successful", "available"]),
    ("In one word 'Yes' or 'No', is the property is_small true for the concept salamander ?",
     "In one word 'Yes' or 'No', is the property is_small true for the concept dinosaur ?",
     ["Yes", "No"], ["salamander", "dinosaur"]),
    ("Paul scored a goal on George, which made Paul",
     "Paul scored a goal on George, which made George",
     ["happy", "sad", "angry", "scared"], ["Paul", "George"]),
]

# the seed's rep types are site aliases (tracer.sites.ALIASES): lay = resid_post,
# qry/key/val = head_q/head_k/head_v, out = head_out
REP_TYPES = ("lay", "qry", "key", "val", "out")
HEAD_REPS = ("qry", "key", "val", "out")


class InterchangeInterventionConfig:
    """A minimal pair of prompts and the continuations to score after each."""

    def __init__(self, sents: Sequence[str], conts: Sequence[str]):
        if isinstance(sents, str) or not isinstance(sents, (list, tuple)) or len(sents) != 2:
            raise ValueError(f"sents must be a pair of prompts; got {sents!r}")
        checks.texts("sents", list(sents))
        if isinstance(conts, str) or not isinstance(conts, (list, tuple)) or len(conts) < 2:
            raise ValueError(f"conts needs at least two continuations to compare; got {conts!r}")
        if any(not isinstance(c, str) or not c.strip() for c in conts):
            raise ValueError(f"continuations must be non-empty strings; got {list(conts)}")
        repeated = sorted({c for c in conts if list(conts).count(c) > 1})
        if repeated:
            raise ValueError(f"continuations must differ: {repeated} given more than once (the "
                             f"effect compares the model's preference between them); got {list(conts)}")
        self.sents = list(sents)
        self.conts = list(conts)


def aligned_positions(tokenizer: Any, sents: Sequence[str], targets: Sequence[str],
                      occurrence: int = -1) -> tuple[tuple, tuple]:
    """Target token positions in each prompt, paired from the end (see module docstring).

    A target that occurs several times in its prompt is taken at ``occurrence`` (default -1:
    the last one, where a causal LM has read the most of the prompt)."""
    if isinstance(targets, str) or len(targets) != 2:
        raise ValueError(f"targets must be a pair of words, one per prompt; got {targets!r}")
    p1 = tracer.tokens.find(tokenizer, sents[0], targets[0], occurrence)
    p2 = tracer.tokens.find(tokenizer, sents[1], targets[1], occurrence)
    n = min(len(p1), len(p2))
    return tuple(p1[len(p1) - n:]), tuple(p2[len(p2) - n:])


class InterchangeIntervention:
    """The seed's interchange-intervention model: a loaded model plus a prompt pair."""

    def __init__(self, model: Any = "smollm2", interv_config: Optional[InterchangeInterventionConfig] = None,
                 device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 remote: bool = False, **kwargs: Any):
        if interv_config is None:
            interv_config = kwargs.pop("config", None)
        if interv_config is None:
            raise ValueError("pass an InterchangeInterventionConfig as the second argument")
        self.model = _model(model, device, dtype, remote)
        self.config = interv_config
        self.sents, self.conts = interv_config.sents, interv_config.conts
        self.tokenizer = self.model.tokenizer
        dims = tracer.sites.dims_of(self.model.config)
        self.num_layers, self.num_heads, self.num_kv_heads = dims.n_layers, dims.n_heads, dims.n_kv_heads

    def plan(self, targets: Sequence[str], rep_types: Sequence[str], multihead: bool = True,
             heads: Union[None, str, Sequence[int]] = None,
             layers: Optional[Sequence[int]] = None, occurrence: int = -1) -> tuple[list[Group], list]:
        """Every group of the run (the original first), and the head columns."""
        bad = [r for r in rep_types if r not in REP_TYPES]
        if bad or not rep_types:
            raise ValueError(f"unknown rep type(s) {bad or list(rep_types)}; valid rep types are "
                             f"{', '.join(REP_TYPES)}")
        columns = self._columns(multihead, heads)
        layers = _layers(layers, self.num_layers)
        pos1, pos2 = aligned_positions(self.tokenizer, self.sents, targets, occurrence)
        rows, reads = [], []
        pairs = [continuation_ids(self.tokenizer, sent, cont) for cont in self.conts for sent in self.sents]
        # single-token continuations are all read at their prompt's last position: one row
        # per prompt, not one per (prompt, continuation)
        shared = all(len(c) == 1 for _, c in pairs) and all(
            p == pairs[i % 2][0] for i, (p, _) in enumerate(pairs))
        for i, (prompt, cont_ids) in enumerate(pairs):
            if shared:
                reads.append(Logprobs(i % 2, (-1,), tuple(cont_ids)))
                continue
            # teacher-forced: token j is read where token j - 1 was fed; the last token
            # predicts nothing read, so the row stops before it
            k = len(cont_ids)
            reads.append(Logprobs(len(rows), tuple(-k + j for j in range(k)), tuple(cont_ids)))
            rows.append(prompt + cont_ids[:-1])
        if shared:
            rows = [pairs[0][0], pairs[1][0]]
        groups = [Group(rows, [], reads, key="original")]
        group_size = self.num_heads // self.num_kv_heads
        for layer in layers:
            for col in columns:
                patches = []
                for rep in rep_types:
                    site = f"{rep}.{layer}"
                    if col is None or rep == "lay":
                        hs = None
                    elif rep in ("key", "val"):
                        hs = (col // group_size,)
                    else:
                        hs = (col,)
                    for c in range(1 if shared else len(self.conts)):
                        r1, r2 = 2 * c, 2 * c + 1
                        patches.append(plans.copy(site, r1, r2, pos1, pos2, hs))
                        patches.append(plans.copy(site, r2, r1, pos2, pos1, hs))
                groups.append(Group(rows, patches, reads, key=(layer, col)))
        return groups, columns

    def _columns(self, multihead: bool, heads: Union[None, str, Sequence[int]]) -> list:
        if heads is None or (isinstance(heads, (list, tuple)) and not heads):
            return [None] if multihead else list(range(self.num_heads))
        if isinstance(heads, str):
            if heads != "each":
                raise ValueError(f"heads must be a list of head indices or 'each'; got {heads!r}")
            return list(range(self.num_heads))
        for h in heads:
            if not 0 <= h < self.num_heads:
                raise IndexError(f"head {h} out of range: the model has {self.num_heads} heads "
                                 f"per layer, valid heads are 0..{self.num_heads - 1}")
        return list(heads)

    def run(self, targets: Sequence[str], rep_types: Sequence[str], multihead: bool = True,
            heads: Union[None, str, Sequence[int]] = None, layers: Optional[Sequence[int]] = None,
            max_batch: Optional[int] = None, progress: bool = True,
            remote: Optional[bool] = None, occurrence: int = -1,
            resume_dir: Optional[str] = None) -> dict[str, np.ndarray]:
        """Probabilities of each continuation after each prompt, originally and with the
        targets' representations swapped at each layer.

        Returns ``{"original": (C, 2, 1), "interv_layer_L": (C, 2, H)}`` where H is 1 with
        ``multihead`` (all heads swapped together), else one column per head in ``heads``
        (a list, or ``"each"`` for every head).  ``remote=True`` runs the whole plan on NDIF
        as one request.  Targets match whole words; one that occurs several times in its
        prompt is taken at ``occurrence`` (default -1, the last).  With ``resume_dir`` an
        interrupted run keeps its finished batches there and a rerun resumes.
        """
        groups, columns = self.plan(targets, rep_types, multihead, heads, layers, occurrence)
        logprobs = execute.run(self.model, groups, max_batch=max_batch, progress=progress,
                               desc="interchange", remote=remote, resume_dir=resume_dir)
        self.columns = columns
        return self.outputs(groups, logprobs)

    def result(self, targets: Sequence[str], outputs: dict, columns: dict,
               config: Optional[dict] = None) -> InterchangeResult:
        """``run``'s outputs (``{name: output}``, with each name's head ``columns``) as an
        ``InterchangeResult``: results.json/.npz and one heatmap per name."""
        cfg = {"sents": list(self.sents), "conts": list(self.conts), "targets": list(targets),
               "model": tracer.models.display_name(self.model), "n_heads": self.num_heads,
               "n_kv_heads": self.num_kv_heads,
               "effect": "mean over prompts of the TV distance between normalized continuation probabilities",
               **(config or {})}
        return InterchangeResult(cfg, outputs, columns)

    def outputs(self, groups: list[Group], logprobs: list) -> dict[str, np.ndarray]:
        """``run``'s arrays from a plan's groups and their readouts."""
        n_conts = len(self.conts)

        def probs(values: list) -> np.ndarray:  # one readout per row -> (C, 2)
            return np.array([continuation_prob(v.tolist()) for v in values]).reshape(n_conts, 2)

        output = {"original": probs(logprobs[0])[:, :, None]}
        layer_cols: dict[int, list] = {}
        for g, lp in zip(groups[1:], logprobs[1:]):
            layer_cols.setdefault(g.key[0], []).append(probs(lp))
        for layer, cols in layer_cols.items():
            output[f"interv_layer_{layer}"] = np.stack(cols, axis=-1)
        return output


def interchange(model: Any, sents: Sequence[str], conts: Sequence[str], targets: Sequence[str],
                rep_types: Sequence[str] = ("lay", "qry", "key", "val"),
                heads: Union[None, str, Sequence[int]] = None, layers: Optional[Sequence[int]] = None,
                together: bool = False, max_batch: Optional[int] = None, remote: Optional[bool] = None,
                occurrence: int = -1, resume_dir: Optional[str] = None, progress: Any = True,
                config: Optional[dict] = None) -> InterchangeResult:
    """The seed's experiment as one call: per rep type (and, with ``together``, all of them
    at once), the continuation probabilities with the targets' representations swapped at
    each layer, all heads together or per head (``heads``: ``"each"`` or indices).  Over a
    data set ``sents`` is a list of prompt pairs, ``targets`` one pair of words per prompt
    pair and ``conts`` shared or one list per pair: every pair's swaps run as one plan
    (chunked, exact reuse per pair) and the effects are the mean over pairs.  Returns
    an ``InterchangeResult`` (``save(dir)``: results.json/.npz, one heatmap per rep type).
    ``progress``: a bar (True), none (False) or ``callback(done, total, desc)`` over the
    rep types; ``resume_dir`` keeps finished batches so an interrupted run resumes."""
    many = _many_pairs(sents)
    if many:
        if not _many_pairs(targets) or len(targets) != len(sents):
            raise ValueError(f"over {len(sents)} prompt pairs targets must be one pair of words per "
                             f"prompt pair; got {targets!r}")
        per_conts = list(conts) if _many_pairs(conts) else [list(conts)] * len(sents)
        if len(per_conts) != len(sents):
            raise ValueError(f"{len(per_conts)} continuation lists for {len(sents)} prompt pairs")
        if len({len(c) for c in per_conts}) != 1:
            raise ValueError("every prompt pair needs the same number of continuations")
        loaded = _model(model, remote=bool(remote))
        recipes = [InterchangeIntervention(loaded, InterchangeInterventionConfig(sents=list(p), conts=list(c)))
                   for p, c in zip(sents, per_conts)]
        pair_targets = list(targets)
    else:  # one pair: a data set of one
        recipes = [model if isinstance(model, InterchangeIntervention) else InterchangeIntervention(
            model, InterchangeInterventionConfig(sents=sents, conts=conts), remote=bool(remote))]
        loaded, pair_targets = recipes[0].model, [targets]
    runs = {rep: [rep] for rep in rep_types}
    if together and len(rep_types) > 1:
        runs["+".join(rep_types)] = list(rep_types)
    outputs, columns = {}, {}
    per_pair: list = [{} for _ in recipes]
    for i, (name, reps) in enumerate(runs.items()):
        per_head = heads is not None and any(r in HEAD_REPS for r in reps)
        built = [r.plan(t, reps, not per_head, heads if per_head else None, layers, occurrence)
                 for r, t in zip(recipes, pair_targets)]
        step = (lambda done, total, desc, i=i, name=name: progress(i + done / max(total, 1), len(runs), name)) \
            if callable(progress) else progress
        results = chunks.run_plans(loaded, [g for g, _ in built], max_batch=max_batch, progress=step,
                                    desc="interchange" if not many else f"interchange {name}", remote=remote,
                                    resume_dir=None if resume_dir is None else str(Path(resume_dir) / name))
        for k, (r, (groups, _), lp) in enumerate(zip(recipes, built, results)):
            per_pair[k][name] = r.outputs(groups, lp)
        outputs[name], columns[name] = per_pair[0][name], built[0][1]
    if resume_dir is not None:
        try:
            Path(resume_dir).rmdir()  # every run completed: nothing left to resume
        except OSError:
            pass
    cfg = {"model": tracer.models.display_name(loaded), "rep_types": list(rep_types), "heads": heads,
           "together": together,
           "layers": list(layers) if layers is not None else list(range(recipes[0].num_layers)),
           "alignment": "target tokens paired from the end",
           "n_heads": recipes[0].num_heads, "n_kv_heads": recipes[0].num_kv_heads}
    if not many:
        return recipes[0].result(targets, outputs, columns, {**cfg, **(config or {})})
    cfg = {"sents": [list(p) for p in sents], "conts": [list(c) for c in per_conts],
           "targets": [list(t) for t in targets], **cfg, "n_pairs": len(sents),
           "effect": "mean over prompt pairs of the mean over prompts of the TV distance between "
                     "normalized continuation probabilities", **(config or {})}
    return InterchangeResult(cfg, outputs, columns, per_pair=per_pair)


def _many_pairs(sents: Any) -> bool:
    """A list of prompt pairs, not one pair."""
    return isinstance(sents, (list, tuple)) and bool(sents) and all(
        isinstance(p, (list, tuple)) for p in sents)


def strongest(result: InterchangeResult, top: int = 10, reps: Optional[Sequence[str]] = None) -> list[tuple]:
    """The ``top`` (effect, rep, layer, head) entries of a result (over a data set, of the mean
    over pairs), strongest first; ``reps`` limits it to those rep types."""
    rows = []
    for rep, effects in result.effects.items():
        if reps is not None and rep not in reps:
            continue
        for i, layer in enumerate(result.layers(rep)):
            for j, c in enumerate(result.columns[rep]):
                rows.append((float(effects[i, j]), rep, layer, "all" if c is None else c))
    return sorted(rows, key=lambda r: -r[0])[:top]


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.interchange") -> int:
    """``python -m recipes.interchange --sents A B --conts X Y --targets a b --rep-types ...``"""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Swap a target word's representations between "
                                                 "two prompts, layer by layer and head by head.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--sents", nargs=2, required=True, metavar=("SENT1", "SENT2"),
                        help="the two prompts")
    parser.add_argument("--conts", nargs="+", required=True,
                        help="continuations scored after each prompt")
    parser.add_argument("--targets", nargs=2, required=True, metavar=("TARGET1", "TARGET2"),
                        help="the word of each prompt whose representations are swapped")
    parser.add_argument("--rep-types", nargs="+", default=["lay", "qry", "key", "val"],
                        choices=list(REP_TYPES),
                        help="lay: the layer's output; qry/key/val/out: attention heads' parts")
    parser.add_argument("--heads", nargs="*", default=None,
                        help="'each', or head indices; omit to swap all heads together")
    parser.add_argument("--together", action="store_true",
                        help="also run all rep types applied together, as the seed does")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="rows per batch (default: from free memory)")
    parser.add_argument("--occurrence", type=int, default=-1,
                        help="which occurrence of a repeated target word (default -1: the last)")
    shared(parser, out="results", layers="layers swapped",
           out_help="output folder; finished batches wait in OUT/.partial until the run "
                    "completes, so an interrupted run resumes")
    args = parser.parse_args(argv)

    heads: Union[None, str, list] = None
    if args.heads:
        heads = parse_heads(args.heads)
    config = InterchangeInterventionConfig(sents=args.sents, conts=args.conts)
    model = InterchangeIntervention(setup(args), config)
    result = interchange(model, args.sents, args.conts, args.targets, args.rep_types, heads,
                         parse_layers(args.layers, model.num_layers), args.together, args.max_batch,
                         args.remote, args.occurrence, str(Path(args.out) / ".partial"),
                         config={"model": args.model, "dtype": args.dtype, "seed": args.seed})
    paths = result.save(args.out)
    outputs = result.outputs
    original = outputs[next(iter(outputs))]["original"][:, :, 0]
    print("original P(continuation | prompt):")
    for c, cont in enumerate(args.conts):
        print(f"  {cont!r:>12}: " + "  ".join(f"sent{s + 1}={original[c, s]:.4f}" for s in range(2)))
    print("strongest effects per rep type (effect = TV distance of the continuation preference):")
    for name in outputs:
        for effect, rep, layer, head in strongest(result, top=3, reps=[name]):
            print(f"  {rep:<16} layer {layer:>3}  head {head!s:>3}  effect {effect:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
