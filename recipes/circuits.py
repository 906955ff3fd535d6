"""Circuits: which edges between components carry a behaviour, and how much of it they keep.

``discover(model, data, metric, method="eap"|"eap-ig")`` scores every edge of the model's
graph (``tracer.graph``: heads' query/key/value inputs, MLPs and logits receiving from the
embeddings, heads and MLPs before them) over a data set of (clean, corrupted) prompt pairs:

    score(u -> v) = (u_corrupted - u_clean) . d metric / d input_v

summed over positions and averaged over pairs: the first-order change of the metric when
receiver v sees sender u's corrupted value (EAP, Syed et al. 2023).  EAP-IG (Hanna et al.
2024) averages the gradient over ``steps`` points between the corrupted and the clean input
embeddings.  All rows of a pair (clean, corrupted, the steps) are one forward and one
backward pass; pairs of equal length share it; remotely each chunk of pairs is one request.

``EdgeScores.top(k)`` / ``.threshold(t)`` choose a ``Circuit`` (edges with their scores; saved
as JSON, drawn as a layered graph).  ``faithfulness(model, circuit, data, metric)`` runs the
model with every edge outside the circuit patched from the corrupted run and reports
``(circuit - corrupted) / (clean - corrupted)``; ``faithfulness_curve`` does so over circuit
sizes, every size a row of the same pass.  ``edge_effects`` patches single edges exactly.
The clean prompt is a pair's base, the corrupted one its source (``recipes.dataset``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

import tracer
from tracer import checks, graph
from tracer.files import writable_dir
from tracer.graph import Graph
from tracer.resume import requests_of, steps as progress_steps

from . import dataset
from .circuit_data import Circuit, EdgeScores, node_of  # noqa: F401 - this module's public names
from .patching import _answer_ids, _model, metric_fn
from .plotting import faithfulness_plot
from .results import Result

METHODS = ("eap", "eap-ig")


@dataclass
class _Data:
    """A data set ready to run: pairs, token ids (clean, corrupted), answer ids, metric."""

    items: list
    ids: list
    answers: list
    name: str
    fn: Callable
    named: Optional[str]
    torch_fn: Optional[Callable]


def _data(model: Any, data: Any, answers: Any, metric: Union[str, Callable], limit: Optional[int]) -> _Data:
    items = dataset.pairs(data, answers=answers, limit=limit)
    tok = model.tokenizer
    ids = [tracer.tokens.paired_ids(tok, p.base, p.source, "a circuit's edges pair the clean and "
                                    "corrupted prompts position by position") for p in items]
    ans = [_answer_ids(tok, list(p.answers), model.config.vocab_size) for p in items]
    width = min(len(a) for a in ans)
    name, fn = metric_fn(metric, width)
    if callable(metric) and tracer.execute.is_remote(model):
        raise ValueError("a remote circuit needs a named metric (prob, logprob, logit_diff): a Python "
                         "function cannot be shipped to NDIF")
    # a callable metric runs on torch log-probabilities in the trace (tracer.gradients.metric
    # checks that it returns a tensor)
    return _Data(items, ids, [a[:width] for a in ans], name, fn,
                 None if callable(metric) else name, metric if callable(metric) else None)


def _batches(d: _Data, rows_per_pair: int, max_rows: int) -> list[list[int]]:
    """Pairs grouped by token length, as many per batch as ``max_rows`` allows."""
    by_len: dict[int, list[int]] = {}
    for i, (b, _) in enumerate(d.ids):
        by_len.setdefault(len(b), []).append(i)
    per = max(1, max_rows // rows_per_pair)
    return [group[k:k + per] for group in by_len.values() for k in range(0, len(group), per)]


def _device(model: Any) -> Any:
    return "cpu" if tracer.execute.is_remote(model) else next(tracer.sites.module(model).parameters()).device


def _run(model: Any, kind: str, jobs: list, desc: str, progress: Any,
         max_request_rows: Optional[int] = None) -> list:
    """Each job (token ids, the pass's arguments) as one trace of ``tracer.graph.run``:
    locally one after another with a progress bar; remotely as traces of one NDIF session
    (one request), or of one session per chunk of at most ``max_request_rows`` rows."""
    import nnsight

    if tracer.execute.is_remote(model):
        def session(part: list) -> list:
            with model.session(remote=True):
                outputs = nnsight.save([])
                for ids, args in part:
                    with model.trace(ids, use_cache=False):
                        outputs.append(nnsight.save(graph.run(model, kind, args)))
            return list(outputs)
        sized = [SimpleNamespace(n_rows=len(ids)) for ids, _ in jobs]
        chunks = [[jobs[i] for i in part] for part in requests_of(sized, max_request_rows)]
        return [out for part in progress_steps(chunks, f"{desc} (requests)", progress)
                for out in tracer.execute.call(session, part)]
    out = []
    grad = kind == "scores"
    guard = tracer.execute.frozen(model) if grad else contextlib.nullcontext()
    with guard, (torch.enable_grad() if grad else torch.no_grad()):
        for ids, args in progress_steps(jobs, desc, progress):
            with model.trace(ids, use_cache=False):
                got = nnsight.save(graph.run(model, kind, args))
            out.append(got)
    return out


# -- scores -----------------------------------------------------------------------------------

def _meta(model: Any, g: Graph, d: _Data, **extra: Any) -> dict:
    return {"model": getattr(tracer.sites.config(model), "_name_or_path", "") or "",
            "metric": d.name, "n_layers": g.dims.n_layers, "n_heads": g.dims.n_heads,
            "n_kv_heads": g.dims.n_kv_heads, "prompts_summary": dataset.summary(d.items), **extra}


def discover(model: Any, data: Any, metric: Union[str, Callable] = "logit_diff", method: str = "eap",
             steps: int = 5, answers: Any = None, limit: Optional[int] = None,
             max_batch: int = 16, progress: Any = True,
             max_request_rows: Optional[int] = None) -> EdgeScores:
    """Edge attribution scores of every edge over the pairs of ``data`` (anything
    ``recipes.dataset.pairs`` reads; base = clean, source = corrupted, equal token
    lengths): ``method="eap"`` (gradient at the clean input) or ``"eap-ig"`` (mean gradient
    at ``steps`` points k/steps of the way from the corrupted to the clean embeddings,
    k = 1..steps).  ``metric`` on the answers' next-token log-probabilities: ``"logit_diff"``
    (first minus second answer), ``"logprob"``, ``"prob"`` or a torch function of the
    ``(rows, answers)`` log-probabilities.  ``max_batch``: rows per pass (a pair takes 2, or
    2 + steps).  On a remote model every pass is one NDIF request, or one per chunk of
    pairs with at most ``max_request_rows`` rows."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    if method == "eap-ig":
        checks.integer("steps", steps, 1, 1000)
    checks.integer("max_batch", max_batch, 1)
    model = _model(model)
    d = _data(model, data, answers, metric, limit)
    g = Graph(model)
    per = 2 + (steps if method == "eap-ig" else 0)
    device = _device(model)

    def job(pairs: list) -> tuple:
        rows, corrupt, base, interp, weight = [], [], [], [], []
        for k, i in enumerate(pairs):
            clean, corr = d.ids[i]
            start = len(rows)
            rows += [clean, corr]
            base.append(start)
            corrupt.append(start + 1)
            if method == "eap":
                weight.append((start, k, 1.0))
            for s in range(1, per - 1):
                interp.append((len(rows), start, start + 1, s / steps))
                weight.append((len(rows), k, 1.0 / steps))
                rows.append(clean)
        w = torch.zeros(len(rows), len(pairs))
        for r, k, v in weight:
            w[r, k] = v
        answer = torch.tensor([d.answers[i] for i in pairs for _ in range(per)])
        return torch.tensor(rows).to(device), (corrupt, base, interp, w, answer, d.named, d.torch_fn)

    batches = _batches(d, per, max_batch)
    results = _run(model, "scores", [job(b) for b in batches], f"edge attribution ({method})", progress,
                   max_request_rows)
    total = np.zeros(g.shape)
    clean, corrupted = [], []
    for pairs, (scores, lp) in zip(batches, results):
        total += scores.double().sum(0).cpu().numpy()
        lp = lp.cpu().numpy()
        clean += list(d.fn(lp[0::per]))
        corrupted += list(d.fn(lp[1::per]))
    values = np.where(g.valid.numpy(), total / len(d.items), np.nan)
    if not np.isfinite(values[g.valid.numpy()]).all():
        raise FloatingPointError("edge scores are not finite (the metric or its gradient overflowed); "
                                 "try float32 weights")
    meta = _meta(model, g, d, method=method, **({"steps": steps} if method == "eap-ig" else {}),
                 clean=float(np.mean(clean)), corrupted=float(np.mean(corrupted)))
    return EdgeScores(values, list(g.senders), list(g.receivers), meta, len(d.items))


# -- exact edge patching ------------------------------------------------------------------------

def _patched(model: Any, d: _Data, masks: list, max_batch: int, progress: Any, desc: str,
             max_request_rows: Optional[int] = None) -> tuple:
    """Per pair: the metric of the clean run, the corrupted run, and each of ``masks``
    (excluded edges, (senders, receivers) bool) patched from the corrupted run.  Returns
    arrays (pairs,), (pairs,), (pairs, masks)."""
    g = Graph(model)
    device = _device(model)
    n = len(masks)
    chunk = max(1, max_batch - 2)
    jobs = [(i, masks_lo) for i in range(len(d.items)) for masks_lo in range(0, max(n, 1), chunk)]

    excluded = {}  # one mask tensor per chunk of masks, shared by every pair's job
    for lo in range(0, max(n, 1), chunk):
        part = masks[lo:lo + chunk]
        excluded[lo] = torch.zeros((2 + len(part),) + g.shape, dtype=torch.bool)
        for k, m in enumerate(part):
            excluded[lo][2 + k] = m

    def job(i: int, lo: int) -> tuple:
        clean, corr = d.ids[i]
        rows = [clean, corr] + [clean] * (len(excluded[lo]) - 2)
        answer = torch.tensor([d.answers[i]] * len(rows))
        return torch.tensor(rows).to(device), ([1] * len(rows), excluded[lo], answer)

    results = _run(model, "patch", [job(i, lo) for i, lo in jobs], desc, progress, max_request_rows)
    clean = np.zeros(len(d.items))
    corrupted = np.zeros(len(d.items))
    values = np.zeros((len(d.items), n))
    for (i, lo), lp in zip(jobs, results):
        m = d.fn(lp.cpu().numpy())
        clean[i], corrupted[i] = m[0], m[1]
        values[i, lo:lo + len(m) - 2] = m[2:]
    return clean, corrupted, values


def _excluded(g: Graph, circuit: Circuit) -> torch.Tensor:
    return g.valid & ~circuit.mask(g)


@dataclass
class Faithfulness(Result):
    """How much of the clean-corrupted metric gap a circuit keeps: ``value`` =
    (circuit - corrupted) / (clean - corrupted) of the metrics' means over pairs."""

    value: float
    circuit: float
    clean: float
    corrupted: float
    edges: int
    per_pair: dict = field(default_factory=dict)
    name = "faithfulness"

    def to_dict(self) -> dict:
        return {"faithfulness": self.value, "circuit": self.circuit, "clean": self.clean,
                "corrupted": self.corrupted, "edges": self.edges,
                "per_pair": {k: list(map(float, v)) for k, v in self.per_pair.items()}}


def _ratio(circuit: float, clean: float, corrupted: float) -> float:
    gap = clean - corrupted
    if abs(gap) < 1e-9:
        raise ValueError(f"the clean and corrupted runs score the same ({clean:.4g}): faithfulness "
                         f"is undefined; choose pairs or a metric that tells them apart")
    return (circuit - corrupted) / gap


def faithfulness(model: Any, circuit: Circuit, data: Any, metric: Union[str, Callable] = "logit_diff",
                 answers: Any = None, limit: Optional[int] = None, max_batch: int = 16,
                 progress: Any = True, max_request_rows: Optional[int] = None) -> Faithfulness:
    """Run every pair with each edge outside ``circuit`` patched from the corrupted run (a
    receiver sees the corrupted value of excluded senders and this run's value of included
    ones) and compare the metric with the clean and corrupted runs."""
    model = _model(model)
    d = _data(model, data, answers, metric, limit)
    g = Graph(model)
    clean, corrupted, values = _patched(model, d, [_excluded(g, circuit)], max_batch, progress, "faithfulness",
                                        max_request_rows)
    c = float(values[:, 0].mean())
    return Faithfulness(_ratio(c, float(clean.mean()), float(corrupted.mean())), c, float(clean.mean()),
                        float(corrupted.mean()), len(circuit),
                        {"circuit": values[:, 0], "clean": clean, "corrupted": corrupted})


@dataclass
class FaithfulnessCurve(Result):
    """Faithfulness of the top-k circuits for each k in ``sizes``."""

    sizes: list
    values: list
    clean: float
    corrupted: float
    circuits: list
    meta: dict = field(default_factory=dict)
    name = "faithfulness_curve"

    def to_dict(self) -> dict:
        return {"sizes": self.sizes, "faithfulness": self.values, "clean": self.clean,
                "corrupted": self.corrupted, "circuit_metric": self.circuits, "meta": self.meta}

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        out = writable_dir(out)
        return {"png": faithfulness_plot(self.sizes, self.values, out / f"{self.name}.png",
                                         self.meta.get("title", "faithfulness of the top-k circuits"),
                                         int(self.meta.get("of_edges", max(self.sizes or [1]))))}


def default_sizes(n_edges: int, points: int = 10) -> list[int]:
    """0, then about ``points`` sizes spaced evenly on a log scale, up to every edge."""
    grid = np.unique(np.round(np.geomspace(1, max(1, n_edges), points)).astype(int))
    return sorted({0, *map(int, grid), n_edges})


def faithfulness_curve(model: Any, scores: EdgeScores, data: Any, metric: Union[str, Callable] = "logit_diff",
                       sizes: Optional[Sequence[int]] = None, answers: Any = None,
                       limit: Optional[int] = None, max_batch: int = 16, progress: Any = True,
                       max_request_rows: Optional[int] = None) -> FaithfulnessCurve:
    """Faithfulness of ``scores.top(k)`` for each k in ``sizes`` (default ``default_sizes``),
    every size a row of the same pass per pair."""
    model = _model(model)
    d = _data(model, data, answers, metric, limit)
    g = Graph(model)
    if (len(scores.senders), len(scores.receivers)) != g.shape or list(scores.senders) != g.senders:
        raise ValueError(f"these scores are of another model's graph ({len(scores.senders)} senders, "
                         f"{len(scores.receivers)} receivers; this model has {g.shape[0]} and {g.shape[1]})")
    n_edges = int(scores.valid.sum())
    sizes = default_sizes(n_edges) if sizes is None else [checks.integer("circuit size", k, 0, n_edges)
                                                          for k in sizes]
    circuits = [scores.top(k) for k in sizes]
    clean, corrupted, values = _patched(model, d, [_excluded(g, c) for c in circuits], max_batch,
                                        progress, "faithfulness curve", max_request_rows)
    c, r = float(clean.mean()), float(corrupted.mean())
    means = values.mean(0)
    meta = {**scores.meta, "of_edges": n_edges,
            "title": f"faithfulness of the top-k edges ({scores.meta.get('method', '')}, {d.name}, "
                     f"{len(d.items)} prompt pair{'s' if len(d.items) > 1 else ''})"}
    return FaithfulnessCurve(list(sizes), [_ratio(float(v), c, r) for v in means], c, r,
                             [float(v) for v in means], meta)


def edge_effects(model: Any, edges: Sequence[tuple], data: Any, metric: Union[str, Callable] = "logit_diff",
                 answers: Any = None, limit: Optional[int] = None, max_batch: int = 16,
                 progress: Any = True, max_request_rows: Optional[int] = None) -> np.ndarray:
    """The exact change of the mean metric when only edge (sender, receiver) sees the
    corrupted run, for each edge: what an edge's score estimates."""
    model = _model(model)
    d = _data(model, data, answers, metric, limit)
    g = Graph(model)
    masks = [Circuit([(s, r, 0.0)]).mask(g) for s, r, *_ in edges]
    clean, _, values = _patched(model, d, masks, max_batch, progress, "single edges", max_request_rows)
    return values.mean(0) - clean.mean()
