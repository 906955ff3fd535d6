"""Patching sweeps beyond the seed: one site patched from a source into a base, layer by
layer and position (or role, or head) by position, over one prompt pair or a data set
(``sweep``, ``sweep_plans``), and ROME's causal tracing (``causal_trace``).  Their shared
pieces (answers, layers, metrics, the data set of a call) serve attribution and path
patching too; ``recipes.interchange`` re-exports the recipes.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, chunks, plan as plans
from tracer.metrics import logit_diff
from tracer.plan import Group, Logprobs

from . import dataset
from .results import SweepResult


def _model(model: Any, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
           remote: bool = False) -> Any:
    if model is None or isinstance(model, str):
        return tracer.load(model, remote=remote, device=None if remote else device, dtype=dtype)
    return model


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
          exact_reuse: Optional[bool] = None) -> SweepResult:
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
    results = chunks.run_plans(model, plans_, max_batch=max_batch, progress=progress, desc="sweep",
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
MAX_SAMPLES = 1000  # noise draws per prompt: each is one more row of every batch


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
    checks.integer("samples", samples, low=1, high=MAX_SAMPLES)  # each draw is a batch row
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
    results = chunks.run_plans(model, [b[0] for b in built], max_batch=max_batch, progress=progress,
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
