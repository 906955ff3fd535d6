"""Experiments over data sets: every pair's values equal an independent plain-hook patch.

Tolerance: 2e-4 absolute on log-probabilities.  The engine runs pairs left-padded side by
side in one batch (and reuses the reference run's states); the reference runs each prompt
alone, unpadded.  fp32 attention over padded rows and other batch shapes moves the last
bits (about 1e-6 here), and MoE families route through grouped kernels whose sums depend
on the batch (up to ~1e-5); 2e-4 is far below any patch effect these tests look at.
"""

import csv
import json

import numpy as np
import pytest
import torch

import tracer
from recipes import attribution, dataset, interchange
from tracer import execute

from hooks import capture, edited_logits

TOL = 2e-4
FAMILIES = ["gpt2", "llama", "qwen2", "gemma3", "qwen3_moe"]
DATA = [  # pairs of different token lengths, one subject each
    {"base": "The capital of France is", "source": "The capital of Italy is",
     "answers": [" Paris", " Rome"], "subject": "France", "source_subject": "Italy"},
    {"base": "The tall tower in Tokyo Tower city is", "source": "The tall tower in Paris is",
     "answers": [" Tokyo", " Paris"], "subject": "Tokyo Tower", "source_subject": "Paris"},
    {"base": "Where is Berlin", "source": "Where is Madrid", "answers": [" Germany", " Spain"],
     "subject": "Berlin", "source_subject": "Madrid"},
]


def _ids(tok, text):
    return tok(text, return_tensors="pt")


def hook_cell(model, arch, kind, layer, base, source, b_pos, s_pos, answers, head=None):
    """log p(answer 0) - log p(answer 1) at the base's last token with ``kind`` at ``b_pos``
    set to the source's values at ``s_pos`` (paired from the end), by plain hooks."""
    module = tracer.sites.module(model)
    tok = model.tokenizer
    src = capture(module, arch, kind, layer, _ids(tok, source))

    def edit(t):
        if head is None:
            t[0, b_pos] = src[0, s_pos]
        else:
            t[0, b_pos, head] = src[0, s_pos, head]

    with torch.no_grad():
        lp = edited_logits(module, arch, kind, layer, _ids(tok, base), edit)[0, -1].log_softmax(-1)
    a = [x if isinstance(x, int) else tok(x, add_special_tokens=False)["input_ids"][0] for x in answers]
    assert a[0] != a[1]  # a logit difference that cannot be 0 by construction
    return float(lp[a[0]] - lp[a[1]])


def hook_clean(model, text, answers):
    module = tracer.sites.module(model)
    tok = model.tokenizer
    with torch.no_grad():
        lp = module(**_ids(tok, text)).logits[0, -1].log_softmax(-1)
    a = [tok(x, add_special_tokens=False)["input_ids"][0] for x in answers]
    return float(lp[a[0]] - lp[a[1]])


def _role(tok, prompt, word):
    return tracer.tokens.find(tok, prompt, word)


@pytest.mark.parametrize("arch", FAMILIES)
def test_role_sweep_equals_plain_hooks_per_pair(tiny_models, arch):
    model = tiny_models[arch]
    tok = model.tokenizer
    # roles come from the records' columns only when named: here "end" is shared and the
    # subject column is read through role_cols
    items = dataset.pairs(DATA, role_cols={"subject": "subject"}, roles={"end": -1})
    res = interchange.sweep(model, data=items, site="resid_pre", metric="logit_diff", progress=False,
                            layers=[0, 1])
    assert res.axes == ("layer", "role") and list(res.labels["role"]) == ["subject", "end"]
    assert res.per_prompt.shape == (3, 2, 2) and res.n_prompts == 3
    for i, rec in enumerate(DATA):
        b_sub = _role(tok, rec["base"], rec["subject"])
        s_sub = _role(tok, rec["source"], rec["source_subject"])
        n = min(len(b_sub), len(s_sub))
        spans = {"subject": (b_sub[len(b_sub) - n:], s_sub[len(s_sub) - n:]),
                 "end": ([len(tok(rec["base"])["input_ids"]) - 1], [len(tok(rec["source"])["input_ids"]) - 1])}
        for li, layer in enumerate([0, 1]):
            for ci, role in enumerate(["subject", "end"]):
                want = hook_cell(model, arch, "resid_pre", layer, rec["base"], rec["source"],
                                 spans[role][0], spans[role][1], rec["answers"])
                assert res.per_prompt[i, li, ci] == pytest.approx(want, abs=TOL), (i, layer, role)
        assert res.prompt_baselines["base"][i] == pytest.approx(hook_clean(model, rec["base"], rec["answers"]), abs=TOL)
        assert res.prompt_baselines["source"][i] == pytest.approx(hook_clean(model, rec["source"], rec["answers"]), abs=TOL)
    assert np.allclose(res.values, res.per_prompt.mean(0), atol=1e-6)


@pytest.mark.smollm2
def test_ioi_roles_on_smollm2_equal_plain_hooks(smollm2):
    """The shipped IOI pairs on the embedded model: every (layer, role) cell of every pair
    equals a plain-hook patch at hand-placed token indices (IO, S1, S2 found word by word)."""
    items = dataset.ioi(limit=3)
    layers = [0, 14, 29]
    res = interchange.sweep(smollm2, data=items, site="resid_pre", metric="logit_diff", layers=layers,
                            progress=False)
    assert list(res.labels["role"]) == ["IO", "S1", "S2", "END"] and res.per_prompt.shape == (3, 3, 4)
    tok = smollm2.tokenizer
    raw = json.loads(dataset.IOI_FILE.read_text())["items"][:3]
    for i, rec in enumerate(raw):
        io, s, s2 = rec["fills"]["IO"], rec["fills"]["S"], rec["source_fills"]["S2"]
        base_at = {"IO": _role(tok, rec["base"], io), "S1": tracer.tokens.find(tok, rec["base"], s, 0),
                   "S2": tracer.tokens.find(tok, rec["base"], s, 1),
                   "END": [len(tok(rec["base"])["input_ids"]) - 1]}
        source_at = {"IO": _role(tok, rec["source"], io), "S1": tracer.tokens.find(tok, rec["source"], s, 0),
                     "S2": _role(tok, rec["source"], s2), "END": [len(tok(rec["source"])["input_ids"]) - 1]}
        for li, layer in enumerate(layers):
            for ci, role in enumerate(["IO", "S1", "S2", "END"]):
                b, src = list(base_at[role]), list(source_at[role])
                n = min(len(b), len(src))
                want = hook_cell(smollm2, "llama", "resid_pre", layer, rec["base"], rec["source"],
                                 b[len(b) - n:], src[len(src) - n:], [rec["io"], rec["s"]])
                assert res.per_prompt[i, li, ci] == pytest.approx(want, abs=TOL), (i, layer, role)
    assert np.allclose(res.values, res.per_prompt.mean(0), atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral"])
def test_head_sweep_over_pairs_equals_single_pairs_and_hooks(tiny_models, arch):
    model = tiny_models[arch]
    bases = ["The capital of France is", "Where is Rome"]
    sources = ["The capital of Italy is", "Where is Paris"]
    answers = [[" Paris", " Rome"], [" Germany", " Spain"]]
    res = interchange.sweep(model, bases, sources, answers, site="head_out", heads="each",
                            metric="logit_diff", progress=False, layers=[1])
    for i in range(2):
        alone = interchange.sweep(model, bases[i], sources[i], answers[i], site="head_out", heads="each",
                                  metric="logit_diff", progress=False, layers=[1])
        assert np.allclose(res.per_prompt[i], alone.values, atol=TOL)
        n = len(model.tokenizer(bases[i])["input_ids"])
        want = hook_cell(model, arch, "head_out", 1, bases[i], sources[i], list(range(n)), list(range(n)),
                         answers[i], head=2)
        assert res.per_prompt[i, 0, 2] == pytest.approx(want, abs=TOL)


def test_single_pair_unchanged_and_chunks_equal_one_chunk(tiny_models):
    model = tiny_models["llama"]
    items = dataset.pairs(DATA, role_cols={"subject": "subject"}, roles={"end": -1})
    whole = interchange.sweep(model, data=items, metric="logit_diff", progress=False)
    chunked = interchange.sweep(model, data=items, metric="logit_diff", progress=False, max_chunk_rows=2)
    full = interchange.sweep(model, data=items, metric="logit_diff", progress=False, exact_reuse=False)
    assert np.allclose(whole.per_prompt, chunked.per_prompt, atol=TOL)
    assert np.allclose(whole.per_prompt, full.per_prompt, atol=TOL)
    one = interchange.sweep(model, "The capital of France is", "The capital of Italy is", [" Paris"],
                            progress=False)
    assert one.per_prompt is None and one.n_prompts == 1 and one.spread() is None


def _tokens_of(tok, prompt, start, end):
    """Token indices overlapping characters start:end, from the offsets (placed by hand)."""
    offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def test_template_roles_equal_hand_placed_indices(tiny_models):
    model = tiny_models["gpt2"]
    tok = model.tokenizer
    template = "When {IO} and {S} went to the store, {S} gave a drink to"
    rows = [{"IO": "Mary", "S": "John", "source_S2": "Peter", "answers": [45, 42]},
            {"IO": "Christopher", "S": "Tom", "source_S2": "Alexander", "answers": [35, 348]}]  # ids: M/J, C/To
    items = dataset.pairs(rows, template=template)
    assert items[0].base == "When Mary and John went to the store, John gave a drink to"
    assert items[0].source == "When Mary and John went to the store, Peter gave a drink to"
    assert list(items[0].roles) == ["IO", "S1", "S2", "END"]
    res = interchange.sweep(model, data=items, site="resid_post", metric="logit_diff", progress=False)
    assert list(res.labels["role"]) == ["IO", "S1", "S2", "END"]
    for i, (p, row) in enumerate(zip(items, rows)):
        b, s = p.base, p.source
        io, s1 = b.index(row["IO"]), b.index(row["S"], 5 + len(row["IO"]))
        s2_b, s2_s = b.rindex(row["S"]), s.rindex(row["source_S2"])
        by_hand = {
            "IO": (_tokens_of(tok, b, io, io + len(row["IO"])), _tokens_of(tok, s, io, io + len(row["IO"]))),
            "S1": (_tokens_of(tok, b, s1, s1 + len(row["S"])), _tokens_of(tok, s, s1, s1 + len(row["S"]))),
            "S2": (_tokens_of(tok, b, s2_b, s2_b + len(row["S"])),
                   _tokens_of(tok, s, s2_s, s2_s + len(row["source_S2"]))),
            "END": ([len(tok(b)["input_ids"]) - 1], [len(tok(s)["input_ids"]) - 1]),
        }
        for col, role in enumerate(["IO", "S1", "S2", "END"]):
            bp, sp = by_hand[role]
            n = min(len(bp), len(sp))
            want = hook_cell(model, "gpt2", "resid_post", 0, b, s, bp[len(bp) - n:], sp[len(sp) - n:],
                             row["answers"])
            assert res.per_prompt[i, 0, col] == pytest.approx(want, abs=TOL), (i, role)
    # hand-placed indices as roles: (base index, source index) pairs
    ends = [(len(tok(p.base)["input_ids"]) - 1, len(tok(p.source)["input_ids"]) - 1) for p in items]
    by_index = interchange.sweep(model, data=items, site="resid_post", metric="logit_diff", progress=False,
                                 roles={"end": ends}, positions=["end"])
    assert np.allclose(by_index.per_prompt[:, :, 0], res.per_prompt[:, :, 3], atol=TOL)


def test_spread_normalized_and_directions(tiny_models):
    model = tiny_models["llama"]
    items = dataset.pairs(DATA, role_cols={"subject": "subject"}, roles={"end": -1})
    res = interchange.sweep(model, data=items, metric="logit_diff", progress=False, seed=3)
    a, b = res.spread(), res.spread()
    assert np.array_equal(a["low"], b["low"]) and np.array_equal(a["high"], b["high"])
    from tracer.metrics import bootstrap_interval

    sample = np.random.default_rng(0).normal(size=(40, 3))
    assert np.array_equal(bootstrap_interval(sample, seed=1)[0], bootstrap_interval(sample, seed=1)[0])
    assert not np.array_equal(bootstrap_interval(sample, seed=1)[0], bootstrap_interval(sample, seed=2)[0])
    assert np.all(a["low"] <= res.values + 1e-9) and np.all(res.values <= a["high"] + 1e-9)
    want_se = res.per_prompt.std(0, ddof=1) / np.sqrt(3)
    assert np.allclose(a["stderr"], want_se)
    base, source = res.baselines["base"], res.baselines["source"]
    assert np.allclose(res.normalized, (res.values - base) / (source - base))
    noising = interchange.sweep(model, data=items, metric="logit_diff", progress=False, direction="noising")
    assert np.allclose(noising.normalized, (res.values - source) / (base - source))
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        interchange.sweep(model, data=items, direction="sideways", progress=False)
    saved = res.to_dict()
    assert saved["n_prompts"] == 3 and len(saved["spread"]["ci95_low"]) == res.values.shape[0]


def test_csv_jsonl_and_datasets_give_the_same_result(tiny_models, tmp_path):
    datasets = pytest.importorskip("datasets")
    model = tiny_models["gpt2"]
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["base", "source", "answers", "subject", "source_subject"])
        w.writeheader()
        for rec in DATA:
            w.writerow({**rec, "answers": json.dumps(rec["answers"])})
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in DATA))
    kw = dict(role_cols={"subject": "subject"}, roles={"end": -1})
    from_csv = dataset.pairs(path, **kw)
    from_jsonl = dataset.pairs(jsonl, **kw)
    from_hf = dataset.pairs(datasets.Dataset.from_list(DATA), **kw)
    assert from_csv == from_jsonl == from_hf
    a = interchange.sweep(model, data=from_csv, metric="logit_diff", progress=False)
    b = interchange.sweep(model, data=datasets.Dataset.from_list(DATA), metric="logit_diff",
                          progress=False, roles={"subject": [(r["subject"], r["source_subject"]) for r in DATA], "end": -1})
    assert np.allclose(a.per_prompt, b.per_prompt, atol=1e-6)


def test_answers_in_a_csv_cell_keep_their_leading_spaces(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('base,source,answers\nThe capital of France is,The capital of Italy is, Paris| Rome\n'
                    'Where is Rome,Where is Oslo,"["" Italy"", "" Norway""]"\n')
    assert [p.answers for p in dataset.pairs(path)] == [(" Paris", " Rome"), (" Italy", " Norway")]


def test_missing_role_and_bad_data_are_clear_errors(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    with pytest.raises(ValueError, match=r"pair 1: role 'subject': target 'Rome' does not occur in the prompt 'Where is Berlin'"):
        interchange.sweep(model, ["The capital of France is", "Where is Berlin"],
                          ["The capital of Italy is", "Where is Madrid"], [" a"],
                          roles={"subject": [("France", "Italy"), ("Rome", "Madrid")]}, progress=False)
    with pytest.raises(ValueError, match="give roles="):
        interchange.sweep(model, ["The capital of France is", "Where is Berlin"],
                          ["The capital of Italy is", "Where is Madrid"], [" a"], progress=False)
    with pytest.raises(ValueError, match="no such data file"):
        dataset.pairs(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="pair 0 has no answers"):
        dataset.pairs([{"base": "a b", "source": "c d"}])
    with pytest.raises(ValueError, match="no role column 'subj'"):
        dataset.pairs(DATA, role_cols={"subject": "subj"})
    with pytest.raises(ValueError, match="role 'end': token index 99 is out of range"):
        interchange.sweep(model, data=DATA, roles={"end": 99}, progress=False)


def test_resume_after_an_interrupted_chunk(tiny_models, tmp_path, monkeypatch):
    model = tiny_models["llama"]
    items = dataset.pairs(DATA, role_cols={"subject": "subject"}, roles={"end": -1})
    want = interchange.sweep(model, data=items, progress=False, max_chunk_rows=2)
    calls, fail = [], [True]
    real = execute.run

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and fail[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(execute, "run", failing)
    keep = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        interchange.sweep(model, data=items, progress=False, max_chunk_rows=2, resume_dir=str(keep))
    assert len(list(keep.glob("chunk-*.npz"))) == 1
    calls.clear()
    fail[0] = False
    got = interchange.sweep(model, data=items, progress=False, max_chunk_rows=2, resume_dir=str(keep))
    assert len(calls) == 2  # the finished chunk was read back, the other two computed
    assert np.allclose(got.per_prompt, want.per_prompt, atol=1e-6)
    assert not keep.exists()


def test_causal_trace_over_prompts(tiny_models):
    model = tiny_models["llama"]
    prompts = ["The Eiffel Tower is in", "Big Ben stands in the city of"]
    subjects = ["Eiffel Tower", "Big Ben"]
    res = interchange.causal_trace(model, prompts, subjects, [" Paris", " London"], samples=3,
                                   noise=0.5, progress=False, layers=[0, 1])
    assert res.axes == ("layer", "role") and list(res.labels["role"]) == ["subject", "subject_last", "last"]
    assert res.per_prompt.shape == (2, 2, 3)
    alone = interchange.causal_trace(model, prompts[0], subjects[0], " Paris", samples=3, noise=0.5,
                                     progress=False, layers=[0, 1],
                                     roles={"subject": "subject", "subject_last": "subject_last", "last": -1})
    assert np.allclose(res.per_prompt[0], alone.values, atol=TOL)
    assert res.prompt_baselines["clean"][0] == pytest.approx(alone.baselines["clean"], abs=TOL)
    # restoring the last layer's residual at the last token restores the clean run
    assert np.allclose(res.per_prompt[:, -1, 2], res.prompt_baselines["clean"], atol=TOL)


def test_attribution_over_pairs_equals_each_pair(tiny_models):
    model = tiny_models["llama"]
    items = dataset.pairs(DATA, role_cols={"subject": "subject"}, roles={"end": -1})
    res = attribution.attribute(model, data=items, site="resid_pre", metric="logit_diff", progress=False)
    assert res.per_prompt.shape == (3, 2, 2)
    for i, p in enumerate(items):
        if len(model.tokenizer(p.base)["input_ids"]) != len(model.tokenizer(p.source)["input_ids"]):
            continue
        alone = attribution.attribute(model, p.base, p.source, list(p.answers), site="resid_pre",
                                      metric="logit_diff")
        tok = model.tokenizer
        sub = tracer.tokens.find(tok, p.base, p.roles["subject"][0])
        assert np.allclose(res.per_prompt[i][:, 0], alone.values[:, sub].sum(1), atol=1e-5)
        assert np.allclose(res.per_prompt[i][:, 1], alone.values[:, -1], atol=1e-5)


def test_path_patch_keeps_each_prompt(tiny_models):
    model = tiny_models["gpt2"]
    bases = ["When Mary and John went to the store, John gave a drink to",
             "When Mary and Peter went to the store, Peter gave a drink to"]
    sources = ["When Mary and John went to the store, Anna gave a drink to",
               "When Mary and Peter went to the store, Lisa gave a drink to"]
    tok = model.tokenizer
    pairs = [(b, s) for b, s in zip(bases, sources) if len(tok(b)["input_ids"]) == len(tok(s)["input_ids"])]
    assert len(pairs) == 2
    answers = [[45, 42], [45, 48]]  # token ids: the tiny tokenizer splits names into letters
    res = interchange.path_patch(model, bases, sources, answers, ["final"], progress=False)
    assert res.per_prompt.shape == (2, 2, 4)
    for i in range(2):
        alone = interchange.path_patch(model, bases[i], sources[i], answers[i], ["final"], progress=False)
        assert np.allclose(res.per_prompt[i], alone.values, atol=TOL, equal_nan=True)
    assert res.clean == "base" and res.normalized is not None
