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
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, execute, plan as plans
from tracer.metrics import continuation_prob, effect_scores, logit_diff
from tracer.plan import Group, Logprobs
from tracer.tokens import continuation_ids

from . import dataset
from .cli import guarded, parse_layers, setup, shared
from .results import InterchangeResult, SweepResult

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


def _model(model: Any, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
           remote: bool = False) -> Any:
    if model is None or isinstance(model, str):
        return tracer.load(model, remote=remote, device=None if remote else device, dtype=dtype)
    return model


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
            k = len(cont_ids)
            reads.append(Logprobs(len(rows), tuple(-(k + 1) + j for j in range(k)), tuple(cont_ids)))
            rows.append(prompt + cont_ids)
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
    if _many_pairs(sents):
        return _interchange_pairs(model, sents, conts, targets, rep_types, heads, layers, together,
                                  max_batch, remote, occurrence, resume_dir, progress, config)
    recipe = model if isinstance(model, InterchangeIntervention) else InterchangeIntervention(
        model, InterchangeInterventionConfig(sents=sents, conts=conts), remote=bool(remote))
    runs = {rep: [rep] for rep in rep_types}
    if together and len(rep_types) > 1:
        runs["+".join(rep_types)] = list(rep_types)
    outputs, columns = {}, {}
    for i, (name, reps) in enumerate(runs.items()):
        per_head = heads is not None and any(r in HEAD_REPS for r in reps)
        step = (lambda done, total, desc, i=i, name=name: progress(i + done / max(total, 1), len(runs), name)) \
            if callable(progress) else progress
        outputs[name] = recipe.run(targets=targets, rep_types=reps, multihead=not per_head,
                                   heads=heads if per_head else None, layers=layers,
                                   max_batch=max_batch, remote=remote, occurrence=occurrence,
                                   progress=step,
                                   resume_dir=None if resume_dir is None else str(Path(resume_dir) / name))
        columns[name] = recipe.columns
    if resume_dir is not None:
        try:
            Path(resume_dir).rmdir()  # every run completed: nothing left to resume
        except OSError:
            pass
    cfg = {"sents": list(sents), "conts": list(conts), "targets": list(targets),
           "rep_types": list(rep_types), "heads": heads, "together": together,
           "layers": list(layers) if layers is not None else list(range(recipe.num_layers)),
           "alignment": "target tokens paired from the end",
           "effect": "mean over prompts of the TV distance between normalized continuation probabilities",
           **(config or {})}
    return InterchangeResult(cfg, outputs, columns)


def _many_pairs(sents: Any) -> bool:
    """A list of prompt pairs, not one pair."""
    return isinstance(sents, (list, tuple)) and bool(sents) and all(
        isinstance(p, (list, tuple)) for p in sents)


def _interchange_pairs(model: Any, sents: Sequence, conts: Sequence, targets: Sequence,
                       rep_types: Sequence[str], heads: Any, layers: Any, together: bool,
                       max_batch: Optional[int], remote: Optional[bool], occurrence: int,
                       resume_dir: Optional[str], progress: Any, config: Optional[dict]) -> InterchangeResult:
    """``interchange`` over many prompt pairs (see there)."""
    if not _many_pairs(targets) or len(targets) != len(sents):
        raise ValueError(f"over {len(sents)} prompt pairs targets must be one pair of words per prompt "
                         f"pair; got {targets!r}")
    per_conts = list(conts) if _many_pairs(conts) else [list(conts)] * len(sents)
    if len(per_conts) != len(sents):
        raise ValueError(f"{len(per_conts)} continuation lists for {len(sents)} prompt pairs")
    if len({len(c) for c in per_conts}) != 1:
        raise ValueError("every prompt pair needs the same number of continuations")
    loaded = _model(model, remote=bool(remote))
    recipes = [InterchangeIntervention(loaded, InterchangeInterventionConfig(sents=list(p), conts=list(c)))
               for p, c in zip(sents, per_conts)]
    runs = {rep: [rep] for rep in rep_types}
    if together and len(rep_types) > 1:
        runs["+".join(rep_types)] = list(rep_types)
    outputs, columns, per_pair = {}, {}, []
    per_pair = [dict() for _ in recipes]
    for i, (name, reps) in enumerate(runs.items()):
        per_head = heads is not None and any(r in HEAD_REPS for r in reps)
        built = [r.plan(t, reps, not per_head, heads if per_head else None, layers, occurrence)
                 for r, t in zip(recipes, targets)]
        step = (lambda done, total, desc, i=i, name=name: progress(i + done / max(total, 1), len(runs), name)) \
            if callable(progress) else progress
        results = execute.run_plans(loaded, [g for g, _ in built], max_batch=max_batch, progress=step,
                                    desc=f"interchange {name}", remote=remote,
                                    resume_dir=None if resume_dir is None else str(Path(resume_dir) / name))
        for k, (r, (groups, cols), lp) in enumerate(zip(recipes, built, results)):
            per_pair[k][name] = r.outputs(groups, lp)
        outputs[name] = per_pair[0][name]
        columns[name] = built[0][1]
    if resume_dir is not None:
        try:
            Path(resume_dir).rmdir()
        except OSError:
            pass
    cfg = {"sents": [list(p) for p in sents], "conts": [list(c) for c in per_conts],
           "targets": [list(t) for t in targets], "rep_types": list(rep_types), "heads": heads,
           "together": together, "n_pairs": len(sents),
           "layers": list(layers) if layers is not None else list(range(recipes[0].num_layers)),
           "alignment": "target tokens paired from the end",
           "effect": "mean over prompt pairs of the mean over prompts of the TV distance between "
                     "normalized continuation probabilities", **(config or {})}
    return InterchangeResult(cfg, outputs, columns, per_pair=per_pair)


def effects_table(output: dict[str, np.ndarray]) -> np.ndarray:
    """Effect scores of a run's output as a (layers, head columns) array."""
    layers = sorted(int(k.rsplit("_", 1)[1]) for k in output if k.startswith("interv_layer_"))
    return np.stack([effect_scores(output["original"], output[f"interv_layer_{layer}"])
                     for layer in layers])


# -- sweeps beyond the seed ------------------------------------------------------------------

def _answer_ids(tokenizer: Any, answers: Sequence[Union[str, int]], vocab: int) -> list[int]:
    """Each answer's first token id (an int is an id already), checked against the vocabulary."""
    if isinstance(answers, (str, int)) or not answers:
        raise ValueError(f"answers must be a non-empty list of strings or token ids, got {answers!r}")
    out = []
    for answer in answers:
        if isinstance(answer, int) and not isinstance(answer, bool):
            checks.integer("answer token id", answer, 0, vocab - 1)
            out.append(answer)
            continue
        ids = tokenizer(checks.text("answer", answer), add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"answer {answer!r} tokenizes to nothing")
        out.append(ids[0])
    return out


def _layers(layers: Optional[Sequence[int]], n_layers: int) -> list[int]:
    """Every layer, or the given ones checked against the model."""
    if layers is None:
        return list(range(n_layers))
    return checks.indices("layers", layers, n_layers, "layers in the model")


def metric_fn(metric: Union[str, Callable], n_answers: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """A metric over answer log-probabilities ``(n, n_answers) -> (n,)``, by name or callable.

    ``"prob"``: P(first answer); ``"logprob"``; ``"logit_diff"``: first minus second answer.
    """
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    table = {"prob": lambda lp: np.exp(lp[:, 0]), "logprob": lambda lp: lp[:, 0],
             "logit_diff": logit_diff}
    if metric not in table:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(table)} or a callable")
    if metric == "logit_diff" and n_answers < 2:
        raise ValueError("metric 'logit_diff' needs two answers")
    return metric, table[metric]


DIRECTIONS = {"denoising": ("source", "base"), "noising": ("base", "source")}


def _direction(direction: str) -> tuple[str, str]:
    """The (clean, corrupted) baselines of a sweep's direction."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid directions are denoising (source "
                         f"clean, base corrupted: patching restores) and noising (base clean, source "
                         f"corrupted: patching breaks)")
    return DIRECTIONS[direction]


def _pairs(base: Any, source: Any, answers: Any, roles: Optional[dict], data: Any) -> list:
    """The data set of a patching call: one pair (strings), lists, or records/a file/a Dataset."""
    if data is None and (isinstance(base, str) or (isinstance(base, (list, tuple)) and base
                                                    and all(isinstance(b, str) for b in base))):
        if isinstance(base, str):
            checks.text("base", base)
            checks.text("source", source)
        return dataset.pairs(base=base, source=source, answers=answers, roles=roles)
    if data is None and base is None:
        raise ValueError("give base and source prompts, or data (a file, a datasets.Dataset or records)")
    return dataset.pairs(base if data is None else data, answers=answers, roles=roles)


def _columns_of(tok: Any, items: list, positions: Any, heads: Any, probe: Any) -> tuple:
    """Per pair (base ids, source ids, {column: (base positions, source positions)}), the
    column keys and their labels: roles, positions, or heads (every column patching
    ``positions`` together: all, indices, or role names)."""
    names = dataset.role_names(items) if items[0].roles else []
    resolved = [dataset.resolve(tok, p, i) for i, p in enumerate(items)]
    ids = []
    for i, p in enumerate(items):
        b = list(tok(p.base)["input_ids"])
        s = list(tok(p.source)["input_ids"])
        ids.append((b, s))
    def same_length(why: str) -> None:
        for (b, s), p in zip(ids, items):
            if len(b) != len(s):
                raise ValueError(f"base {p.base!r} and source {p.source!r} have {len(b)} and {len(s)} "
                                 f"tokens; {why}")

    n_heads = probe.n_heads
    if heads is not None:
        if n_heads is None:
            raise ValueError(f"heads were given but site {probe.kind!r} has no heads; head sites are "
                             f"{', '.join(tracer.sites.HEAD_SITES)}")
        cols = list(range(n_heads)) if heads == "each" else checks.indices("heads", heads, n_heads, "heads")
        spans = []
        for i, ((b, s), roles) in enumerate(zip(ids, resolved)):
            if positions is None:
                same_length("patching every position pairs them position by position")
                spans.append((tuple(range(len(b))), tuple(range(len(s)))))
            elif all(isinstance(x, str) for x in positions):
                bad = [x for x in positions if x not in roles]
                if bad:
                    raise ValueError(f"positions {bad} are not roles; the roles are {', '.join(names) or 'none'}")
                spans.append((sum((roles[x][0] for x in positions), ()), sum((roles[x][1] for x in positions), ())))
            else:
                same_length("positions given as indices pair them position by position")
                pos = tuple(checks.indices("positions", positions, len(b), f"tokens in the base prompt {items[i].base!r}"))
                spans.append((pos, pos))
        per_pair = [{c: spans[i] for c in cols} for i in range(len(items))]
        return ids, per_pair, cols, cols, "head"
    if names:
        cols = names if positions is None else list(positions)
        bad = [c for c in cols if c not in names]
        if bad:
            raise ValueError(f"positions {bad} are not roles; the roles are {', '.join(names)}")
        return ids, [{c: r[c] for c in cols} for r in resolved], cols, cols, "role"
    same_length("they need the same number of tokens to patch position by position (or give roles= to line them up by name)")
    n = len(ids[0][0])
    if any(len(b) != n for b, _ in ids):
        lengths = sorted({len(b) for b, _ in ids})
        raise ValueError(f"the pairs have {lengths} tokens: positions by index need one length; give "
                         f"roles= (e.g. {{'subject': [...], 'end': -1}}) to line them up by name")
    cols = list(range(n)) if positions is None else checks.indices(
        "positions", positions, n, f"tokens in the base prompt {items[0].base!r}")
    b0 = ids[0][0]
    labels = [f"{p}:{tok.decode([b0[p]])}" for p in cols]
    return ids, [{c: ((c,), (c,)) for c in cols} for _ in items], cols, labels, "position"


def sweep_plans(model: Any, items: Sequence[dataset.Pair], site: str = "resid_post",
                positions: Optional[Sequence] = None, layers: Optional[Sequence[int]] = None,
                heads: Union[None, str, Sequence[int]] = None,
                metric: Union[str, Callable] = "prob") -> tuple:
    """The plans of ``sweep`` (a loaded model, ``dataset.Pair`` items): (one plan per pair,
    layers, column keys, column labels, column axis, metric name, metric function); each
    plan is the pair's clean run then one group per (layer, column)."""
    tok = model.tokenizer
    dims = tracer.sites.dims_of(model.config)
    layers = _layers(layers, dims.n_layers)
    probe = tracer.site(model, site, layer=layers[0])
    ids, spans, cols, col_labels, col_axis = _columns_of(tok, items, positions, heads, probe)
    answer_ids = [_answer_ids(tok, list(p.answers), model.config.vocab_size) for p in items]
    name, fn = metric_fn(metric, min(len(a) for a in answer_ids))
    names_l = [tracer.site(model, site, layer=layer).name for layer in layers]
    plans_ = []
    for (b_ids, s_ids), span, ans in zip(ids, spans, answer_ids):
        reads = [Logprobs(r, (-1,) * len(ans), tuple(ans)) for r in (0, 1)]
        rows = [b_ids, s_ids]
        groups = [Group(rows, [], reads, key="clean")]
        for name_l, layer in zip(names_l, layers):
            for c in cols:
                dst, src = span[c]
                hs = (c,) if heads is not None else None
                groups.append(Group(rows, [plans.copy(name_l, 0, 1, dst, src, hs)], reads[:1], key=(layer, c)))
        plans_.append(groups)
    return plans_, layers, cols, col_labels, col_axis, name, fn


def sweep(model: Any, base: Any = None, source: Any = None, answers: Any = None,
          site: str = "resid_post", positions: Optional[Sequence] = None,
          layers: Optional[Sequence[int]] = None, heads: Union[None, str, Sequence[int]] = None,
          metric: Union[str, Callable] = "prob", max_batch: Optional[int] = None,
          progress: Any = True, remote: Optional[bool] = None,
          resume_dir: Optional[str] = None, roles: Optional[dict] = None, data: Any = None,
          direction: str = "denoising", seed: int = 0, max_chunk_rows: Optional[int] = None,
          exact_reuse: bool = True) -> SweepResult:
    """Patch ``site`` from ``source`` into ``base`` one (layer, position) or (layer, head) at
    a time and measure ``metric`` on the answers' next-token log-probabilities.

    One pair (two strings), or a data set: lists of prompts, records, a file or a
    ``datasets.Dataset`` (``recipes.dataset.pairs``; ``answers`` shared or one list per pair),
    whose values are the mean over pairs with ``per_prompt`` and ``spread()`` kept.
    Without ``heads``: a layer x position grid, each position patched alone, or with
    ``roles`` a layer x role grid, each role's span patched together (prompts of different
    lengths line up by role).  With ``heads`` (a list or ``"each"``, head sites only): a
    layer x head grid, every position in ``positions`` (default all; or role names)
    patched together.  ``direction`` says which run is clean for ``normalized``:
    ``"denoising"`` (source clean, base corrupted) or ``"noising"``.  A data set runs in
    memory-bounded chunks of pairs (``max_chunk_rows``), one request per chunk remotely.
    """
    clean_key, corrupted_key = _direction(direction)
    model = _model(model)
    items = _pairs(base, source, answers, roles, data)
    plans_, layers, cols, col_labels, col_axis, name, fn = sweep_plans(model, items, site, positions,
                                                                        layers, heads, metric)
    results = execute.run_plans(model, plans_, max_batch=max_batch, progress=progress, desc="sweep",
                                remote=remote, resume_dir=resume_dir, max_chunk_rows=max_chunk_rows,
                                exact_reuse=exact_reuse)
    clean = np.array([fn(np.stack([v.numpy() for v in r[0]])) for r in results])       # (N, 2)
    per = np.array([[fn(g[0].numpy()[None])[0] for g in r[1:]] for r in results])      # (N, cells)
    per = per.reshape(len(items), len(layers), len(cols))
    first = items[0]
    meta = {"base": first.base if len(items) == 1 else [p.base for p in items],
            "source": first.source if len(items) == 1 else [p.source for p in items],
            "site": site, "answers": [str(a) for a in first.answers] if len(items) == 1 else
            [[str(a) for a in p.answers] for p in items], "direction": direction,
            "title": f"patch {site} from source into base: {name}"}
    if len(items) > 1:
        meta["prompts_summary"] = dataset.summary(items)
    if col_axis == "role":
        meta["roles"] = cols
    return SweepResult(per.mean(0), ("layer", col_axis), {"layer": layers, col_axis: col_labels}, name,
                       baselines={"base": float(clean[:, 0].mean()), "source": float(clean[:, 1].mean())},
                       meta=meta, per_prompt=per if len(items) > 1 else None,
                       prompt_baselines={"base": clean[:, 0], "source": clean[:, 1]},
                       clean=clean_key, corrupted=corrupted_key, seed=seed)


def _trace_items(prompt: Any, subject: Any, answer: Any) -> list[tuple]:
    """(prompt, subject, answer) per prompt of a causal trace."""
    if isinstance(prompt, str):
        return [(prompt, subject, answer)]
    prompts = checks.texts("prompts", list(prompt))
    def each(value: Any, what: str) -> list:
        if isinstance(value, (list, tuple)):
            if len(value) != len(prompts):
                raise ValueError(f"{len(value)} {what} for {len(prompts)} prompts")
            return list(value)
        return [value] * len(prompts)
    return list(zip(prompts, each(subject, "subjects"), each(answer, "answers")))


TRACE_ROLES = ("subject", "subject_last", "last")


def causal_trace_plan(model: Any, prompt: str, subject: str, answer: Union[str, int],
                      site: str = "resid_post", layers: Optional[Sequence[int]] = None,
                      noise: Optional[float] = None, samples: int = 10, seed: int = 0,
                      occurrence: Optional[int] = None, roles: Optional[dict] = None,
                      generator: Optional[torch.Generator] = None) -> tuple:
    """The plan of ``causal_trace`` (a loaded model): (groups, prompt ids, subject positions,
    noise, answer id, column labels); group 0 is the corrupted run, then one group per
    (layer, position), or per (layer, role) with ``roles`` (name -> role, ``"subject"`` and
    ``"subject_last"`` meaning the subject's span and its last token)."""
    tok = model.tokenizer
    ids = list(tok(checks.text("prompt", prompt))["input_ids"])
    subj = tuple(tracer.tokens.find(tok, prompt, subject, occurrence))
    dims = tracer.sites.dims_of(model.config)
    layers = _layers(layers, dims.n_layers)
    checks.integer("samples", samples, low=1)
    if noise is not None and (checks.finite("noise", noise) <= 0):
        raise ValueError(f"noise must be a positive standard deviation, got {noise}")
    if noise is None:
        weight = tracer.sites.module(model).get_input_embeddings().weight
        if weight.device.type == "meta":
            raise ValueError("pass noise= explicitly: the embedding matrix is not loaded here")
        noise = 3.0 * float(weight.detach().float().std())
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    draws = [torch.randn(len(subj), dims.hidden, generator=gen) * noise for _ in range(samples)]
    answer_id = _answer_ids(tok, [answer], model.config.vocab_size)[0]
    rows = [ids] * (samples + 1)
    reads = [Logprobs(r, (-1,) * 1, (answer_id,)) for r in range(samples + 1)]
    corrupt = [plans.add("embed", 1 + i, subj, d) for i, d in enumerate(draws)]
    groups = [Group(rows, list(corrupt), reads, key="corrupted")]
    if roles is None:
        columns = [(p,) for p in range(len(ids))]
        labels = [f"{p}:{tok.decode([ids[p]])}{'*' if p in subj else ''}" for p in range(len(ids))]
    else:
        special = {"subject": subj, "subject_last": subj[-1:]}
        columns = [special[r] if r in special and v == r else
                   tuple(tracer.tokens.role_positions(tok, prompt, v, r)) for r, v in roles.items()]
        labels = list(roles)
    for layer in layers:
        name_l = tracer.site(model, site, layer=layer).name
        for pos in columns:
            restore = [plans.copy(name_l, 1 + i, 0, pos, pos) for i in range(samples)]
            groups.append(Group(rows, corrupt + restore, reads, key=(layer, pos)))
    return groups, ids, subj, noise, answer_id, labels


def causal_trace(model: Any, prompt: Any, subject: Any, answer: Any,
                 site: str = "resid_post", layers: Optional[Sequence[int]] = None,
                 noise: Optional[float] = None, samples: int = 10, seed: int = 0,
                 max_batch: Optional[int] = None, progress: Any = True,
                 remote: Optional[bool] = None, occurrence: Optional[int] = None,
                 resume_dir: Optional[str] = None, roles: Optional[dict] = None,
                 max_chunk_rows: Optional[int] = None) -> SweepResult:
    """ROME-style causal tracing: corrupt the subject's embeddings with Gaussian noise, then
    restore the clean ``site`` state one (layer, position) at a time; the value is the
    probability of ``answer`` averaged over ``samples`` noise draws.

    ``prompt``, ``subject``, ``answer``: one each, or lists (a data set of facts: one
    subject and answer per prompt, or one shared); over several prompts the grid's columns
    are roles (default ``subject`` (the span, restored together), ``subject_last`` and
    ``last``; or ``roles`` name -> role), and values are means over prompts with
    ``per_prompt`` and ``spread()`` kept.  ``noise`` is the noise standard deviation
    (default: 3 x the standard deviation of the embedding matrix, ROME's choice).
    Baselines hold the clean and corrupted probabilities.
    """
    model = _model(model)
    tok = model.tokenizer
    items = _trace_items(prompt, subject, answer)
    if roles is None and len(items) > 1:
        roles = {"subject": "subject", "subject_last": "subject_last", "last": -1}
    gen = torch.Generator().manual_seed(seed)
    built = [causal_trace_plan(model, p, s, a, site, layers, noise, samples, seed, occurrence, roles, gen)
             for p, s, a in items]
    labels = built[0][5]
    noise = built[0][3]
    layers = _layers(layers, tracer.sites.dims_of(model.config).n_layers)
    results = execute.run_plans(model, [b[0] for b in built], max_batch=max_batch, progress=progress,
                                desc="causal trace", remote=remote, resume_dir=resume_dir,
                                max_chunk_rows=max_chunk_rows)
    per, clean, corrupted = [], [], []
    for r in results:
        probs = [np.exp(np.array([float(v[0]) for v in g])) for g in r]
        per.append(np.array([p[1:].mean() for p in probs[1:]]).reshape(len(layers), len(labels)))
        clean.append(float(probs[0][0]))
        corrupted.append(float(probs[0][1:].mean()))
    per_np, clean_np, corrupted_np = np.array(per), np.array(clean), np.array(corrupted)
    answers = [tok.decode([b[4]]) for b in built]
    one = len(items) == 1
    meta = {"prompt": items[0][0] if one else [i[0] for i in items],
            "subject": items[0][1] if one else [i[1] for i in items],
            "site": site, "noise": noise, "samples": samples,
            "title": f"causal trace of {site} ({samples} noise draws)"}
    if not one:
        meta["prompts_summary"] = (f"{len(items)} prompts, e.g. {items[0][0]!r} (subject "
                                   f"{items[0][1]!r})")
    metric = f"P({answers[0]!r})" if len(set(answers)) == 1 else "P(answer)"
    return SweepResult(per_np.mean(0), ("layer", "position" if roles is None else "role"),
                       {"layer": layers, "position" if roles is None else "role": labels}, metric,
                       baselines={"clean": float(clean_np.mean()), "corrupted": float(corrupted_np.mean())},
                       meta=meta, per_prompt=None if one else per_np,
                       prompt_baselines={"clean": clean_np, "corrupted": corrupted_np},
                       clean="clean", corrupted="corrupted", seed=seed)


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


from .paths import ioi, path_patch  # noqa: E402,F401 - the recipe's path patching


@guarded
def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m recipes.interchange") -> int:
    """``python -m recipes.interchange --sents A B --conts X Y --targets a b --rep-types ...``"""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Swap a target word's representations between "
                                                 "two prompts, layer by layer and head by head.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
        heads = "each" if args.heads == ["each"] else [int(h) for h in args.heads]
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
