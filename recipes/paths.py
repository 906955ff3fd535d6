"""Path patching (Wang et al. 2022, the IOI circuit): how much of a head's effect reaches the
chosen receivers directly.

For a sender (one attention head, or several together) and receivers (sites, optionally
heads), on pairs of prompts (base, source) of equal token length:

1. run the base prompts with the sender's output (``head_out``) taken from the source run
   and every other path frozen at the base run: every other head's output and every MLP's
   output, at every layer from the sender's up to the last receiver, keep their base values;
   record the receivers' values;
2. run the base prompts with the receivers set to those values and measure the metric on
   the answers.

Both stages are plans of ``tracer.execute.run`` (a reference run plus one cell per sender,
so exact reuse computes each sender from its own layer on).  ``IOI`` loads the IOI prompts
the project ships (``recipes/data/ioi.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

import tracer
from tracer import checks, execute
from tracer.interventions import Intervention
from tracer.plan import Activations, Group, Logprobs, copy

from . import dataset
from .patching import _answer_ids, _model, metric_fn
from .results import SweepResult

IOI_FILE = dataset.IOI_FILE

Head = tuple  # ("head_out", layer, head)


def ioi() -> tuple[list[str], list[str], list[list[str]]]:
    """The shipped IOI prompts as lists: (base prompts, source prompts, answers [io, s] per
    prompt); ``recipes.dataset.ioi()`` has them as pairs with their roles."""
    items = json.loads(IOI_FILE.read_text())["items"]
    return ([it["base"] for it in items], [it["source"] for it in items],
            [[it["io"], it["s"]] for it in items])


def _receiver(model: Any, r: Union[str, tuple]) -> tuple[Any, Optional[tuple]]:
    """A receiver as (site, heads): a site name, or (site kind, layer, head or heads)."""
    if isinstance(r, str):
        return tracer.site(model, r), None
    if isinstance(r, tuple) and len(r) == 3:
        s = tracer.site(model, r[0], layer=r[1])
        if s.n_heads is None:
            raise ValueError(f"receiver {r!r}: site {s.name} has no heads; give a site name instead")
        heads = (r[2],) if isinstance(r[2], int) else tuple(r[2])
        return s, tuple(checks.indices(f"heads of receiver {r!r}", heads, s.n_heads, "heads"))
    raise ValueError(f"a receiver is a site name ('resid_post.5', 'final') or (site, layer, "
                     f"head), e.g. ('head_q', 9, 1); got {r!r}")


def _senders(model: Any, sender: Union[None, tuple, list], before: tuple) -> list[list[tuple]]:
    """Sender sets as lists of (layer, head); None: every head of every layer whose output
    comes before the earliest receiver, each alone."""
    dims = tracer.sites.dims_of(model.config)
    if sender is None:
        return [[(layer, h)] for layer in range(dims.n_layers) for h in range(dims.n_heads)
                if tracer.site(model, "head_out", layer=layer).order < before]
    items = [sender] if isinstance(sender, tuple) else list(sender)
    heads = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 3 and item[0] in ("head_out", "out")):
            raise ValueError(f"a sender is ('head_out', layer, head); got {item!r}")
        s = tracer.site(model, "head_out", layer=item[1])
        heads.append((s.layer, checks.indices("sender head", [item[2]], dims.n_heads, "heads")[0]))
        if s.order >= before:
            raise ValueError(f"sender {item!r} does not come before the earliest receiver")
    return [heads]


def path_patch(model: Any, base: Any, source: Union[None, str, Sequence[str]],
               answers: Any, receivers: Sequence[Union[str, tuple]],
               sender: Union[None, tuple, list] = None, metric: Union[str, Callable] = "logit_diff",
               max_batch: Optional[int] = None, progress: bool = True,
               layers: Optional[Sequence[int]] = None, resume_dir: Optional[str] = None,
               seed: int = 0) -> SweepResult:
    """Path patching from ``sender`` (``("head_out", L, H)`` or a list patched together;
    None: every head before the receivers, each alone) to ``receivers``.

    ``base``/``source``: a prompt or a list of prompts, pairs of equal token length (or
    ``base`` a data set as ``recipes.dataset.pairs`` reads it, ``source`` None);
    ``answers``: the answers (a list of strings or ids, shared by all prompts, or one list
    per prompt) whose next-token log-probabilities ``metric`` scores (default
    ``"logit_diff"``: first minus second answer), averaged over the prompts; each prompt's
    grid is kept in ``per_prompt`` (``spread()`` over them, seeded by ``seed``), and
    ``normalized`` takes base as clean and source as corrupted (noising).  Returns a
    layer x head grid (NaN where a head is not a sender; with ``layers``, those layers' rows
    only), or 1 x 1 for given senders, with
    the base and source metrics as baselines.  ``layers`` limits the senders tried one by
    one (``sender=None``) to heads in those layers.  With ``resume_dir`` finished batches of
    both stages are kept there, so an interrupted run resumes.
    """
    model = _model(model)
    tok = model.tokenizer
    if source is None:
        items = dataset.pairs(base, answers=answers or None)
    else:
        bases = [base] if isinstance(base, str) else list(base)
        sources = [source] if isinstance(source, str) else list(source)
        if not bases or len(bases) != len(sources):
            raise ValueError(f"base and source must be prompts in pairs; got {len(bases)} base and "
                             f"{len(sources)} source prompts")
        if not answers:
            raise ValueError("answers must be a non-empty list of strings or token ids, shared or one per prompt")
        items = dataset.pairs(base=bases, source=sources, answers=answers)
    bases, sources = [p.base for p in items], [p.source for p in items]
    answer_lists = [list(p.answers) for p in items]
    pairs = [tracer.tokens.paired_ids(tok, b, s, "path patching pairs them position by position")
             for b, s in zip(bases, sources)]
    rows_b, rows_s = [p[0] for p in pairs], [p[1] for p in pairs]
    ids = [_answer_ids(tok, a, model.config.vocab_size) for a in answer_lists]
    name, fn = metric_fn(metric, min(len(a) for a in ids))
    if not receivers:
        raise ValueError("give at least one receiver")
    recv = [_receiver(model, r) for r in receivers]
    earliest = min(s.order for s, _ in recv)
    latest = max(s.order for s, _ in recv)
    sets = _senders(model, sender, earliest)
    if layers is not None and sender is None:
        sets = [heads for heads in sets if all(layer in layers for layer, _ in heads)]
        if not sets:
            raise ValueError(f"no sender head in layers {list(layers)} comes before the receivers")
    n = len(bases)
    dims = tracer.sites.dims_of(model.config)

    # stage 1: rows [base..., source..., base again (the frozen values)...]
    rows = rows_b + rows_s + rows_b
    reads = [Activations(s.name, i, None) for s, _ in recv for i in range(n)]
    groups = [Group(rows, [], [], key="reference")]
    for heads in sets:
        low = min(layer for layer, _ in heads)
        edits = []
        for layer in range(low, dims.n_layers):
            out = tracer.site(model, "head_out", layer=layer)
            mlp = tracer.site(model, "mlp_out", layer=layer)
            mine = [h for lay, h in heads if lay == layer]
            others = [h for h in range(dims.n_heads) if h not in mine]
            for i in range(n):
                every = tuple(range(len(rows_b[i])))
                if out.order < latest:
                    if mine:
                        edits.append(copy(out.name, i, n + i, every, every, mine))
                    edits.append(copy(out.name, i, 2 * n + i, every, every, others))
                if mlp.order < latest:
                    edits.append(copy(mlp.name, i, 2 * n + i, every, every))
        groups.append(Group(rows, edits, reads, key=tuple(heads)))
    keep = (lambda stage: None) if resume_dir is None else (lambda stage: str(Path(resume_dir) / stage))  # noqa: E731
    stage1 = execute.run(model, groups, max_batch=max_batch, progress=progress, desc="path patching",
                         resume_dir=keep("senders"))

    # stage 2: the base prompts with the receivers set to what stage 1 recorded
    scores = [Logprobs(i, (-1,) * len(ids[i]), tuple(ids[i])) for i in range(n)]
    plain = [Group(rows_b + rows_s, [], scores + [Logprobs(n + i, (-1,) * len(ids[i]), tuple(ids[i]))
                                                  for i in range(n)], key="clean")]
    for heads, values in zip(sets, stage1[1:]):
        edits = []
        for k, (s, hs) in enumerate(recv):
            for i in range(n):
                value = values[k * n + i]
                every = tuple(range(len(rows_b[i])))
                if hs is not None:
                    value = value[:, list(hs)]
                edits.append(Intervention("interchange", s.name, every, hs, rows=[i], source=value))
        plain.append(Group(rows_b + rows_s, edits, scores, key=tuple(heads)))
    stage2 = execute.run(model, plain, max_batch=max_batch, progress=progress, desc="receivers",
                         resume_dir=keep("receivers"))

    def scores(values: list) -> np.ndarray:  # one value per prompt
        return np.array([fn(v.numpy()[None])[0] for v in values])

    clean = stage2[0]
    base_per, source_per = scores(clean[:n]), scores(clean[n:])
    cells = np.array([scores(v) for v in stage2[1:]])                 # (senders, prompts)
    meta = {"base": bases, "source": sources, "answers": [[str(a) for a in x] for x in answer_lists],
            "receivers": [s.name if hs is None else f"{s.name}[{','.join(map(str, hs))}]" for s, hs in recv],
            "title": f"path patching to {', '.join(str(r) for r in receivers)}: {name}"}
    if n > 1:
        meta["prompts_summary"] = dataset.summary(items)
    common = dict(baselines={"base": float(base_per.mean()), "source": float(source_per.mean())},
                  meta=meta, prompt_baselines={"base": base_per, "source": source_per},
                  clean="base", corrupted="source", seed=seed)
    if sender is not None:
        label = "+".join(f"{layer}.{h}" for layer, h in sets[0])
        per = cells.T[:, :, None] if n > 1 else None                 # (prompts, 1, 1)
        return SweepResult(np.array([[cells[0].mean()]]), ("sender", "metric"),
                           {"sender": [label], "metric": [name]}, name, per_prompt=per, **common)
    # rows: the layers asked for (those with a sender), else every layer (NaN after the receivers)
    rows = sorted({hs[0][0] for hs in sets}) if layers is not None else list(range(dims.n_layers))
    grid = np.full((n, len(rows), dims.n_heads), np.nan)
    for heads, value in zip(sets, cells):
        layer, head = heads[0]
        grid[:, rows.index(layer), head] = value
    return SweepResult(grid.mean(0), ("layer", "head"), {"layer": rows, "head": list(range(dims.n_heads))},
                       name, per_prompt=grid if n > 1 else None, **common)
