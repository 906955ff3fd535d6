"""Exact reuse (tracer.reuse) equals the full recomputation on every family, and really
computes less: cells start at their patched layer and their earliest position."""

import numpy as np
import pytest
import torch

from recipes import interchange
from tracer import costs, execute, reuse
from tracer.costs import Costs
from tracer.plan import Group, Logprobs, copy
from tracer.testing import ARCHS

# targets of different token lengths ("capital" vs "Eiffel Tower"), prompts of different
# lengths (left padding), a multi-token continuation
SENTS = ["The capital of France is Paris and the", "The Eiffel Tower is in Paris and the sun"]
CONTS = ["Paris", "Rome and the"]


def _both(model, groups, **kw):
    full = execute.run(model, groups, progress=False, exact_reuse=False, **kw)
    fast = execute.run(model, groups, progress=False, exact_reuse=True, **kw)
    return full, fast


def _close(a, b):
    for ga, gb in zip(a, b, strict=True):
        for x, y in zip(ga, gb, strict=True):
            torch.testing.assert_close(y, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_seed_plans_equal_full_recomputation(tiny_models, arch):
    model = tiny_models[arch]
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    for reps, heads in ((["lay", "qry", "key", "val", "out"], None), (["qry", "key"], "each"),
                        (["val", "out"], [1, 3]), (["lay"], None)):
        groups, _ = recipe.plan(["capital", "Eiffel Tower"], reps, heads=heads)
        assert reuse.plan(model, groups) is not None
        _close(*_both(model, groups, max_batch=7))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "gpt_neox", "qwen3_moe", "gpt_oss"])
def test_sweeps_and_causal_tracing_equal_full_recomputation(tiny_models, arch, monkeypatch):
    model = tiny_models[arch]
    real = execute.run
    runs = {}
    for mode in (False, True):
        monkeypatch.setattr(execute, "run", lambda *a, **k: real(*a, **{**k, "exact_reuse": mode}))
        runs[mode] = [
            interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                              [" Rome", " Madrid"], progress=False).values,
            interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                              [" Rome"], site="head_v", heads="each", progress=False).values,
            interchange.causal_trace(model, "The capital of Spain is the city of", "Spain",
                                     " Madrid", samples=3, progress=False).values]
    for full, fast in zip(runs[False], runs[True]):
        np.testing.assert_allclose(fast, full, rtol=0, atol=1e-6)


def test_cells_start_at_their_layer_and_position(tiny_models, monkeypatch):
    """A copy at layer 1, position 3 of 8-token rows computes 5 columns from layer 1; the
    unedited source row is not computed at all (its value comes from the reference run).
    (Batches cost nothing here, so each cell gets its own.)"""
    monkeypatch.setattr(costs, "measure", lambda model: Costs(0.0, 0.0, 1.0))
    model = tiny_models["llama"]
    tok = model.tokenizer
    rows = [tok(s)["input_ids"] for s in ("The capital of Spain is the city", "The capital of Italy is the city")]
    n = len(rows[0])
    reads = [Logprobs(0, (-1,), (5,))]
    groups = [Group(rows, [], reads), Group(rows, [copy("resid_post.1", 0, 1, (3,), (3,))], reads),
              Group(rows, [copy("head_q.0", 0, 1, (5,), (5,), (2,))], reads)]
    shared = reuse.plan(model, groups)
    assert [(c.rows, c.layer, c.column) for c in shared.cells] == [([0], 1, 3), ([0], 0, 5)]
    seen = []
    real = execute._trace

    def spy(m, batch, within=None):
        seen.append((tuple(batch.inputs["input_ids"].shape), len(batch.skip[0]) if batch.skip else 0))
        return real(m, batch, within)

    execute._trace = spy
    try:
        fast = execute.run(model, groups, progress=False, exact_reuse=True)
    finally:
        execute._trace = real
    assert seen == [((2, n), 0), ((1, n - 5), 0), ((1, n - 3), 1)]  # reference, then by layer
    _close(execute.run(model, groups, progress=False, exact_reuse=False), fast)


def test_plans_of_another_shape_run_in_full(tiny_models):
    model = tiny_models["llama"]
    tok = model.tokenizer
    a, b = tok("The cat sat on the mat")["input_ids"], tok("The dog sat on the mat")["input_ids"]
    reads = [Logprobs(0, (-1,), (5,))]
    other_rows = [Group([a, b], [], reads), Group([b, a], [copy("resid_post.0", 0, 1, (1,), (1,))], reads)]
    assert reuse.plan(model, other_rows) is None
    scaled = [Group([a, b], [], reads),
              Group([a, b], [tracer_intervention("scale", "resid_post.0", factor=2.0)], reads)]
    assert reuse.plan(model, scaled) is None
    _close(*_both(model, other_rows))


def tracer_intervention(kind, site, **params):
    from tracer.interventions import Intervention

    return Intervention(kind, site, (1,), rows=[0], params=params)


def test_small_cells_share_a_batch_when_batches_cost_more_than_layers(tiny_models, monkeypatch):
    """One row per cell: with the CPU costs, all cells of a 2-layer model run as one batch
    from layer 0; with free batches, one batch per (layer, column)."""
    model = tiny_models["llama"]
    rows = [model.tokenizer(s)["input_ids"] for s in ("The cat sat on the mat", "The dog sat on the mat")]
    reads = [Logprobs(0, (-1,), (5,))]
    groups = [Group(rows, [], reads)] + [
        Group(rows, [copy(f"resid_post.{layer}", 0, 1, (p,), (p,))], reads)
        for layer in (0, 1) for p in (1, 2)]
    shared = reuse.plan(model, groups)
    width = len(rows[0])
    cpu, free = reuse.COSTS["cpu"], Costs(0.0, 0.0, 1.0)
    assert [len(b) for b in reuse.pack(shared.cells, 64, 2, width, cpu)[0]] == [4]
    assert [len(b) for b in reuse.pack(shared.cells, 64, 2, width, free)[0]] == [1, 1, 1, 1]
    assert [len(b) for b in reuse.pack(shared.cells, 1, 2, width, free)[0]] == [1, 1, 1, 1]


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "qwen3_moe"])
def test_the_one_session_form_equals_full_recomputation(tiny_models, arch):
    """What a remote run sends (tracer.reuse.session: the reference states kept in
    the session, cells gathering from them there), run as a local session."""
    model = tiny_models[arch]
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["lay", "qry", "val"], heads="each")
    shared = reuse.plan(model, groups)
    compiled = reuse.compile_plan(model, shared, 8)
    ref_out, outputs = reuse.session(model, compiled.ref, [b for _, b, _ in compiled.cells],
                                     remote=False)
    got = reuse.results(shared, compiled, ref_out, outputs)
    _close(execute.run(model, groups, progress=False, exact_reuse=False), got)


@pytest.mark.parametrize("exact_reuse", [True, False])
def test_a_progress_bar_moves_inside_batches_and_changes_no_batch(tiny_models, monkeypatch, exact_reuse):
    """A bar (or a callable) reports each layer a batch runs, and the plan runs the same
    batches with and without one."""
    model = tiny_models["llama"]
    recipe = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["qry"], heads="each")
    traced = []
    real = execute._trace
    monkeypatch.setattr(execute, "_trace", lambda m, b, within=None: traced.append(b.n_rows) or real(m, b, within))
    want = execute.run(model, groups, progress=False, exact_reuse=exact_reuse)
    quiet, traced[:] = list(traced), []
    seen = []
    got = execute.run(model, groups, progress=lambda done, total, desc: seen.append((done, total)),
                      exact_reuse=exact_reuse)
    assert traced == quiet  # the same batches, row for row
    _close(want, got)
    total = seen[-1][1]
    assert seen[-1][0] == total and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert any(d != int(d) for d, _ in seen)  # moved inside a batch, layer by layer
    if total == 1:
        assert len(seen) > 2
    execute.run(model, groups, progress=True, exact_reuse=exact_reuse)  # a tqdm bar runs too
    assert traced[-len(quiet):] == quiet


def test_the_engine_runs_the_plan_predicted_faster(tiny_models, monkeypatch, fixed_costs):
    """With traces that cost much more than tokens, a plan of many small cells runs in full
    (a few big batches); with traces that cost nothing, exact reuse; either way the same
    numbers.  The costs are measured once per model and are positive."""
    model = tiny_models["llama"]
    measured = fixed_costs(model)
    assert measured.per_trace > 0 and measured.per_layer > 0 and measured.per_token_layer > 0
    assert fixed_costs(model) is measured  # once per process
    recipe = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["qry"], heads="each")
    shared = reuse.plan(model, groups)
    dear, cheap = Costs(1.0, 0.0, 1e-9), Costs(0.0, 0.0, 1.0)
    assert not reuse.worth_it(model, shared, 64, dear) and reuse.worth_it(model, shared, 64, cheap)
    chosen = {}
    real = reuse.run
    monkeypatch.setattr(reuse, "run", lambda *a, **k: chosen.setdefault("reuse", True) and real(*a, **k))
    want = execute.run(model, groups, progress=False, exact_reuse=False)
    for c, reused in ((dear, False), (cheap, True)):
        chosen.clear()
        monkeypatch.setattr(costs, "measure", lambda m, c=c: c)
        _close(want, execute.run(model, groups, progress=False))
        assert chosen.get("reuse", False) == reused
