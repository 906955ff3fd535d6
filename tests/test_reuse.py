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
@pytest.mark.parametrize("branched", [False, True])
def test_the_one_session_form_equals_full_recomputation(tiny_models, arch, branched):
    """What a remote run sends (tracer.reuse.session: the reference states kept in
    the session, cells gathering from them there), run as a local session; with
    ``branched``, its batches run as a prefix and a suffix pass there (tracer.branch)."""
    model = tiny_models[arch]
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, CONTS + ["the sun is"]))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["lay", "qry", "val"], heads="each")
    shared = reuse.plan(model, groups)
    compiled = reuse.compile_plan(model, shared, 8, Costs(0.0, 0.0, 1.0) if branched else None)
    assert any(b.prefix is not None for _, b, _ in compiled.cells) == branched
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


BRANCH_CONTS = ["Paris", "Rome and the", "the sun is"]  # one, three and three tokens


def _branching(monkeypatch):
    """Traces that cost nothing, so every batch that can branch does; returns the traced
    batches' (rows, columns, is a suffix pass)."""
    monkeypatch.setattr(costs, "measure", lambda model: Costs(0.0, 0.0, 1.0))
    seen = []
    real = execute._trace

    def spy(m, batch, within=None):
        seen.append((*batch.inputs["input_ids"].shape, batch.prefix is not None))
        return real(m, batch, within)
    monkeypatch.setattr(execute, "_trace", spy)
    return seen


@pytest.mark.parametrize("arch", ARCHS)
def test_multi_token_continuations_branch_from_the_shared_prompt(tiny_models, arch, monkeypatch):
    """Each prompt's tokens (and the swaps on them) run once per cell, every continuation
    continuing from that pass's KV cache: equal to the full recomputation on every family
    (GQA, sliding windows of 4 tokens, prompts of different lengths), every rep type, heads
    together and each."""
    model = tiny_models[arch]
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, BRANCH_CONTS))
    seen = _branching(monkeypatch)
    for reps, heads in ((["lay", "qry", "key", "val", "out"], None), (["qry", "val"], "each")):
        groups, _ = recipe.plan(["capital", "Eiffel Tower"], reps, heads=heads)
        full = execute.run(model, groups, progress=False, exact_reuse=False)
        seen.clear()
        fast = execute.run(model, groups, progress=False, exact_reuse=True, max_batch=12)
        _close(full, fast)
        suffixes = [i for i, (_, _, suffix) in enumerate(seen) if suffix]
        assert suffixes, "no batch branched"
        for i in suffixes:  # the prefix pass runs just before, one row per prompt of each cell
            (rows, _, _), (prefix_rows, _, prefix) = seen[i], seen[i - 1]
            assert not prefix and prefix_rows * len(BRANCH_CONTS) == rows


def test_branching_needs_one_prompt_and_one_edit_per_class(tiny_models):
    """Rows branch only where they share the tokens before their readouts and the edits
    on them; an edit after a readout, or rows edited differently, keep the batch whole."""
    from tracer import branch

    model = tiny_models["llama"]
    tok = model.tokenizer
    prompt = tok("The capital of Spain is the city")["input_ids"]
    rows = [prompt + [11, 12], prompt + [13], prompt + [14, 15, 16]]
    reads = [Logprobs(r, tuple(range(len(prompt) - 1, len(rows[r]) - 1)), tuple(rows[r][len(prompt):]))
             for r in range(3)]
    free = Costs(0.0, 0.0, 1.0)
    same = Group(rows, [copy("resid_post.1", r, r, (2,), (1,)) for r in range(3)], reads)
    parts = branch.split(model, [same], 2, len(rows[2]) - 1, free)
    assert parts is not None and parts.reps == [0] and parts.of_row == [0, 0, 0]
    assert parts.shared == [len(prompt) - 1] * 3 and parts.start == 1
    differ = Group(rows, [copy("resid_post.1", r, r, (2,), (1 + r,)) for r in range(3)], reads)
    assert branch.split(model, [differ], 2, len(rows[2]) - 1, free) is None
    late = Group(rows, [copy("resid_post.1", r, r, (len(prompt),), (1,)) for r in range(3)], reads)
    assert branch.split(model, [late], 2, len(rows[2]) - 1, free) is None
    # with real costs, one cell of three short rows is not worth a second trace
    assert branch.split(model, [same], 2, len(rows[2]) - 1, reuse.COSTS["cpu"]) is None


def test_a_branched_batch_is_its_own_resume_key(tiny_models):
    """A suffix pass carries no edits (its prefix pass does): cells that differ only in
    their edits still get different request keys, so a resumed run never mixes them up."""
    from tracer.resume import request_key

    model = tiny_models["llama"]
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, BRANCH_CONTS))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["qry"], heads="each", layers=[1])
    compiled = reuse.compile_plan(model, reuse.plan(model, groups), 6, Costs(0.0, 0.0, 1.0))
    work = [b for _, b, _ in compiled.cells]
    assert len(work) > 1 and all(b.prefix is not None for b in work)
    assert len({request_key(model, [b]) for b in work}) == len(work)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_a_prefix_pass_from_the_first_token_and_above_layer_zero(tiny_models, arch, monkeypatch):
    """Swaps at the first token (the prefix pass has no earlier columns: it starts from an
    empty cache) and at a later one, below and above layer 0 (the suffix pass's cache holds
    zeros for the layers both passes skip): equal to the full recomputation."""
    model = tiny_models[arch]
    tok = model.tokenizer
    prompts = [tok(s)["input_ids"] for s in ("The capital of Spain is the city", "A capital of Italy is the city")]
    conts = [[11, 12], [13], [14, 15, 16]]
    rows, reads = [], []
    for c in conts:
        for p in prompts:
            reads.append(Logprobs(len(rows), tuple(range(-len(c), 0)), tuple(c)))
            rows.append(p + c[:-1])
    groups = [Group(rows, [], reads)]
    for layer in (0, 1):
        for pos in (0, 2):
            groups.append(Group(rows, [copy(f"resid_pre.{layer}", 2 * c + a, 2 * c + 1 - a, (pos,), (pos,))
                                       for c in range(len(conts)) for a in (0, 1)], reads))
    seen = _branching(monkeypatch)
    fast = execute.run(model, groups, progress=False, exact_reuse=True, max_batch=6)
    assert sum(suffix for _, _, suffix in seen) == 4  # every cell branched
    _close(execute.run(model, groups, progress=False, exact_reuse=False), fast)


def test_a_data_set_of_pairs_branches_each_pairs_prompts(tiny_models, monkeypatch):
    """Over a data set (every pair's plan merged, tracer.plan.merge) each pair's prompts
    form their own classes: branched, and equal to the full recomputation."""
    model = tiny_models["llama"]
    pairs = [["The capital of France is a city", "The capital of Italy is a city"],
             ["The Eiffel Tower is in Paris and", "The Colosseum is in Rome and"]]
    targets = [["France", "Italy"], ["Eiffel Tower", "Colosseum"]]
    real = execute.run
    runs = {}
    for mode in (False, True):
        seen = _branching(monkeypatch)
        monkeypatch.setattr(execute, "run", lambda *a, **k: real(*a, **{**k, "exact_reuse": mode}))
        runs[mode] = interchange.interchange(model, pairs, BRANCH_CONTS, targets, ["lay", "qry"],
                                             heads="each", progress=False)
        assert any(suffix for _, _, suffix in seen) == mode
    for p in range(len(pairs)):
        for name, arrays in runs[False].per_pair[p].items():
            for key, value in arrays.items():
                np.testing.assert_allclose(runs[True].per_pair[p][name][key], value, rtol=0, atol=1e-6)


def test_repeated_groups_run_once(tiny_models, monkeypatch):
    """Under grouped-query attention a key/value head swapped for each query head that
    reads it repeats the same group: it runs once (tracer.plan.distinct) and every copy gets
    its readouts, equal to running each; a group with a callable kind is never merged."""
    from tracer import plan as plans
    from tracer.interventions import Intervention

    model = tiny_models["llama"]
    dims = tracer_dims(model)
    assert dims.n_kv_heads < dims.n_heads
    recipe = interchange.InterchangeIntervention(
        model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    groups, _ = recipe.plan(["capital", "Eiffel Tower"], ["key"], heads="each")
    unique, where = plans.distinct(groups)
    assert len(groups) == 1 + dims.n_layers * dims.n_heads
    assert len(unique) == 1 + dims.n_layers * dims.n_kv_heads
    assert [unique[i] is groups[k] for k, i in enumerate(where)].count(True) == len(unique)
    got = execute.run(model, groups, progress=False)
    monkeypatch.setattr(execute, "distinct", lambda gs: (list(gs), list(range(len(gs)))))
    _close(execute.run(model, groups, progress=False), got)
    g = groups[1]
    odd = Intervention(lambda x, source: x, g.interventions[0].site, (1,), rows=[0])
    twice = [plans.Group(g.rows, [odd], g.reads), plans.Group(g.rows, [odd], g.reads)]
    assert len(plans.distinct(twice)[0]) == 2


def tracer_dims(model):
    from tracer.sites import config, dims_of

    return dims_of(config(model))
