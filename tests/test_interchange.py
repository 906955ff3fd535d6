"""recipes.interchange: batched results equal single interventions and plain hooks."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch

import tracer
from recipes import interchange
from tracer.testing import ARCHS, tokenizer

from hooks import hooked

SENTS = ["The capital of France is", "The capital of Italy is"]
CONTS = ["Paris", "Rome", "Madrid"]
TARGETS = ["France", "Italy"]
KINDS = {"lay": "resid_post", "qry": "head_q", "key": "head_k", "val": "head_v", "out": "head_out"}


def _padded(rows, pad_id=0):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask,
            "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}, width


def hook_reference(model, sents, conts, targets, rep_types, layer, head):
    """P(cont | sent) for every cont and sent with the targets swapped by plain hooks."""
    tok, module = model.tokenizer, tracer.sites.module(model)
    cfg = module.config
    p1 = tracer.tokens.find(tok, sents[0], targets[0], -1)
    p2 = tracer.tokens.find(tok, sents[1], targets[1], -1)
    n = min(len(p1), len(p2))
    p1, p2 = p1[len(p1) - n:], p2[len(p2) - n:]
    rows, conts_ids = [], []
    for c in conts:
        cid = tok(" " + c, add_special_tokens=False)["input_ids"]
        conts_ids.append(cid)
        rows += [tok(s)["input_ids"] + cid for s in sents]
    inputs, width = _padded(rows)
    group = cfg.num_attention_heads // (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)

    def swap(rep):
        def edit(t):
            for c in range(len(conts)):
                a, b = 2 * c, 2 * c + 1
                da = [q + width - len(rows[a]) for q in p1]
                db = [q + width - len(rows[b]) for q in p2]
                if head is None or rep == "lay":
                    va, vb = t[a, da].clone(), t[b, db].clone()
                    t[a, da], t[b, db] = vb, va
                else:
                    h = head // group if rep in ("key", "val") else head
                    va, vb = t[a, da, h].clone(), t[b, db, h].clone()
                    t[a, da, h], t[b, db, h] = vb, va
        return edit

    with ExitStack() as stack, torch.no_grad():
        for rep in rep_types:
            stack.enter_context(hooked(module, _arch(cfg), KINDS[rep], layer, swap(rep)))
        logits = module(**inputs).logits.log_softmax(-1)
    out = np.zeros((len(conts), 2))
    for c, cid in enumerate(conts_ids):
        for s in range(2):
            lp = [float(logits[2 * c + s, width - len(cid) - 1 + i, t]) for i, t in enumerate(cid)]
            out[c, s] = np.exp(np.mean(lp))
    return out


def _arch(cfg):
    return cfg.model_type


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_single_and_plain_hooks(tiny_models, arch):
    model = tiny_models[arch]
    config = interchange.InterchangeInterventionConfig(sents=SENTS, conts=CONTS)
    ii = interchange.InterchangeIntervention(model, config)
    reps = ["lay", "qry", "key", "val", "out"]
    batched = ii.run(TARGETS, reps, heads="each", progress=False)
    single = ii.run(TARGETS, reps, heads="each", max_batch=1, progress=False)  # one trace per swap
    multi = ii.run(TARGETS, ["qry", "val"], multihead=True, progress=False)
    assert batched["original"].shape == (3, 2, 1)
    assert batched["interv_layer_1"].shape == (3, 2, 4)
    assert multi["interv_layer_0"].shape == (3, 2, 1)
    for key in batched:
        np.testing.assert_allclose(batched[key], single[key], rtol=0, atol=1e-6)
    np.testing.assert_allclose(batched["original"][:, :, 0],
                               hook_reference(model, SENTS, CONTS, TARGETS, [], 0, None), atol=1e-6)
    for layer in (0, 1):
        for head in range(4):
            want = hook_reference(model, SENTS, CONTS, TARGETS, reps, layer, head)
            np.testing.assert_allclose(batched[f"interv_layer_{layer}"][:, :, head], want,
                                       rtol=1e-5, atol=1e-6, err_msg=f"layer {layer} head {head}")
        want = hook_reference(model, SENTS, CONTS, TARGETS, ["qry", "val"], layer, None)
        np.testing.assert_allclose(multi[f"interv_layer_{layer}"][:, :, 0], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched["interv_layer_0"], batched["original"])


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "qwen3_moe"])
def test_multi_token_continuations_equal_plain_hooks(tiny_models, arch, monkeypatch):
    """Continuations of one to three tokens, teacher-forced: the engine (each prompt's pass
    branched from its continuations, tracer.branch, with traces costing nothing) equals
    plain hooks on the full ``prompt + continuation`` rows."""
    from tracer import costs
    from tracer.costs import Costs

    monkeypatch.setattr(costs, "measure", lambda model: Costs(0.0, 0.0, 1.0))
    model = tiny_models[arch]
    conts = ["Paris", "Rome and the", "the sun is"]
    ii = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(SENTS, conts))
    reps = ["lay", "qry", "val"]
    got = ii.run(TARGETS, reps, heads="each", progress=False)
    np.testing.assert_allclose(got["original"][:, :, 0],
                               hook_reference(model, SENTS, conts, TARGETS, [], 0, None), atol=1e-6)
    for layer in (0, 1):
        for head in (0, 3):
            want = hook_reference(model, SENTS, conts, TARGETS, reps, layer, head)
            np.testing.assert_allclose(got[f"interv_layer_{layer}"][:, :, head], want,
                                       rtol=1e-5, atol=1e-6, err_msg=f"layer {layer} head {head}")


def test_targets_of_different_lengths_pair_from_the_end(tiny_models):
    tok = tokenizer()
    sents = ["The cat sat on the xylophone today", "The cat sat on the mat today"]
    p1 = tracer.tokens.find(tok, sents[0], "xylophone")
    p2 = tracer.tokens.find(tok, sents[1], "mat")
    assert len(p1) > len(p2) == 1
    a, b = interchange.aligned_positions(tok, sents, ["xylophone", "mat"])
    assert a == (p1[-1],) and b == (p2[-1],)
    model = tiny_models["llama"]
    config = interchange.InterchangeInterventionConfig(sents=sents, conts=["Yes", "No"])
    out = interchange.InterchangeIntervention(model, config).run(
        ["xylophone", "mat"], ["lay"], progress=False)
    want = hook_reference(model, sents, ["Yes", "No"], ["xylophone", "mat"], ["lay"], 0, None)
    np.testing.assert_allclose(out["interv_layer_0"][:, :, 0], want, rtol=1e-5, atol=1e-6)


PAIRS = [SENTS, ["The capital of Spain is", "The capital of Germany is"],
         ["The cat sat on the xylophone today", "The cat sat on the mat today"]]
PAIR_TARGETS = [TARGETS, ["Spain", "Germany"], ["xylophone", "mat"]]


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_interchange_over_pairs_equals_each_pair_and_plain_hooks(tiny_models, arch):
    """Many prompt pairs run as one merged plan; every pair's numbers equal that pair alone
    (and plain hooks), and the effects are the mean of the pairs' tables."""
    model = tiny_models[arch]
    reps = ["lay", "qry", "val"]
    many = interchange.interchange(model, PAIRS, CONTS, PAIR_TARGETS, reps, heads="each",
                                   together=True, progress=False, max_batch=7)
    assert len(many.per_pair) == 3 and many.pair_effects["lay"].shape == (3, 2, 1)
    for k, (pair, targets) in enumerate(zip(PAIRS, PAIR_TARGETS)):
        alone = interchange.interchange(model, pair, CONTS, targets, reps, heads="each", together=True,
                                        progress=False)
        for rep in alone.outputs:
            for key, value in alone.outputs[rep].items():
                np.testing.assert_allclose(many.per_pair[k][rep][key], value, rtol=1e-5, atol=1e-6,
                                           err_msg=f"pair {k} {rep} {key}")
        want = hook_reference(model, pair, CONTS, targets, ["val"], 1, 2)
        np.testing.assert_allclose(many.per_pair[k]["val"]["interv_layer_1"][:, :, 2], want,
                                   rtol=1e-5, atol=1e-6)
    for rep, effects in many.effects.items():
        np.testing.assert_allclose(effects, many.pair_effects[rep].mean(0), atol=1e-12)
    top = interchange.strongest(many, top=50)
    assert top[0][0] == pytest.approx(max(float(e.max()) for e in many.effects.values()))
    data = many.to_dict()["results"]["qry"]
    assert data["layers"] == [0, 1] and np.array(data["pair_effects"]).shape == (3, 2, 4)
    assert np.all(np.array(data["effect_stderr"]) >= 0)


def test_interchange_over_pairs_bad_input(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="targets must be one pair of words per prompt pair"):
        interchange.interchange(model, PAIRS, CONTS, TARGETS, ["lay"], progress=False)
    with pytest.raises(ValueError, match="2 continuation lists for 3 prompt pairs"):
        interchange.interchange(model, PAIRS, [CONTS, CONTS], PAIR_TARGETS, ["lay"], progress=False)


def test_strongest_names_the_layers_run(tiny_models):
    result = interchange.interchange(tiny_models["llama"], SENTS, CONTS, TARGETS, ["lay"], layers=[1],
                                     progress=False)
    assert [row[2] for row in interchange.strongest(result)] == [1]


def test_effect_score():
    original = np.array([[[0.6], [0.2]], [[0.2], [0.6]]])
    flipped = original[:, ::-1]
    assert interchange.effect_scores(original, original)[0] == 0
    assert interchange.effect_scores(original, flipped)[0] == pytest.approx(0.5)


def test_bad_input(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="at least two continuations"):
        interchange.InterchangeInterventionConfig(sents=SENTS, conts=["Paris"])
    ii = interchange.InterchangeIntervention(model, interchange.InterchangeInterventionConfig(SENTS, CONTS))
    with pytest.raises(ValueError, match=r"target 'Spain' does not occur in the prompt 'The capital of France is'"):
        ii.run(["Spain", "Italy"], ["lay"], progress=False)
    with pytest.raises(ValueError, match=r"unknown rep type\(s\) \['mlp'\]; valid rep types are lay, qry, key, val, out"):
        ii.run(TARGETS, ["lay", "mlp"], progress=False)
    with pytest.raises(IndexError, match="head 4 out of range: the model has 4 heads per layer, valid heads are 0..3"):
        ii.run(TARGETS, ["qry"], heads=[4], progress=False)


def test_sweep_matches_hooks_and_full_last_position_patch(tiny_models):
    model = tiny_models["gpt2"]
    base, source = "The capital of Spain is", "The capital of Italy is"
    tok = model.tokenizer
    assert len(tok(base)["input_ids"]) == len(tok(source)["input_ids"])
    answers = [" Rome", " Madrid"]
    res = interchange.sweep(model, base, source, answers, site="resid_post", metric="logit_diff",
                            progress=False)
    n = len(tok(base)["input_ids"])
    assert res.values.shape == (2, n) and res.axes == ("layer", "position")
    # the last layer's residual at the last position decides the next token: full source value
    assert res.values[-1, -1] == pytest.approx(res.baselines["source"], abs=1e-5)
    # an independent hook patch for one cell
    module = tracer.sites.module(model)
    box = []
    with hooked(module, "gpt2", "resid_post", 0, lambda t: box.append(t[:, 2].clone())), torch.no_grad():
        module(**tok(source, return_tensors="pt"))
    with hooked(module, "gpt2", "resid_post", 0, lambda t: t[:, 2].copy_(box[0])), torch.no_grad():
        lp = module(**tok(base, return_tensors="pt")).logits[0, -1].log_softmax(-1)
    ids = [tok(a, add_special_tokens=False)["input_ids"][0] for a in answers]
    assert res.values[0, 2] == pytest.approx(float(lp[ids[0]] - lp[ids[1]]), abs=1e-5)
    heads = interchange.sweep(model, base, source, answers, site="head_out", heads="each",
                              positions=[-1], progress=False)
    assert heads.values.shape == (2, 4) and heads.axes == ("layer", "head")


def test_sweep_bad_input(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="same number of tokens"):
        interchange.sweep(model, "The cat", "The cat sat on the mat", [" a"], progress=False)
    with pytest.raises(ValueError, match="unknown metric 'kl'"):
        interchange.sweep(model, "The cat", "The dog", [" a"], metric="kl", progress=False)
    with pytest.raises(ValueError, match="site 'resid_post' has no heads"):
        interchange.sweep(model, "The cat", "The dog", [" a"], heads="each", progress=False)


def test_cli_writes_results_and_heatmaps(tmp_path, tiny_models, capsys):
    folder = tmp_path / "model"
    model = tiny_models["qwen2"]
    tracer.testing.save_tiny(model, folder)
    out = tmp_path / "results"
    rc = interchange.main(["--model", str(folder), "--sents", *SENTS, "--conts", "Paris", "Rome",
                           "--targets", *TARGETS, "--rep-types", "lay", "qry", "--heads", "each",
                           "--together", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "strongest effects" in printed
    for name in ("results.npz", "results.json", "heatmap_lay.png", "heatmap_qry.png",
                 "heatmap_lay+qry.png"):
        assert (out / name).stat().st_size > 0, name
    data = np.load(out / "results.npz")
    assert data["qry/effect"].shape == (2, 4) and data["lay/effect"].shape == (2, 1)
    assert data["qry/interv_layer_1"].shape == (2, 2, 4)


@pytest.mark.smollm2
@pytest.mark.parametrize("example", range(3))
def test_seed_examples_on_smollm2(smollm2, example):
    sent_1, sent_2, conts, targets = interchange.SEED_EXAMPLES[example]
    config = interchange.InterchangeInterventionConfig(sents=[sent_1, sent_2], conts=conts)
    model = interchange.InterchangeIntervention(smollm2, config)
    output = model.run(targets=targets, rep_types=["lay", "qry", "key", "val"], multihead=True,
                       progress=False)
    assert list(output) == ["original"] + [f"interv_layer_{i}" for i in range(30)]
    for value in output.values():
        assert value.shape == (len(conts), 2, 1)
    # the original probabilities, recomputed with a plain forward of each prompt + continuation
    module, tok = tracer.sites.module(smollm2), smollm2.tokenizer
    for c, cont in enumerate(conts):
        for s, sent in enumerate((sent_1, sent_2)):
            prompt, ids = tracer.tokens.continuation_ids(tok, sent, cont)
            with torch.no_grad():
                logp = module(torch.tensor([prompt + ids])).logits[0].log_softmax(-1)
            want = np.exp(np.mean([float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(ids)]))
            assert output["original"][c, s, 0] == pytest.approx(want, rel=1e-4)
    if example == 2:
        # the targets are the prompts' last tokens: swapping the last layer's residual there
        # (alone: with q/k/v swapped too, the source row itself changes) hands each prompt the
        # other's next-token prediction (single-token continuations)
        single = [c for c, cont in enumerate(conts)
                  if len(tracer.tokens.continuation_ids(tok, sent_1, cont)[1]) == 1]
        last = model.run(targets=targets, rep_types=["lay"], layers=[29], progress=False)
        assert single
        np.testing.assert_allclose(last["interv_layer_29"][single, 0, 0],
                                   output["original"][single, 1, 0], rtol=1e-4)
        np.testing.assert_allclose(last["interv_layer_29"][single, 1, 0],
                                   output["original"][single, 0, 0], rtol=1e-4)
    if example == 0:
        per_head = model.run(targets=targets, rep_types=["out"], heads=[0, 8], progress=False)
        assert per_head["interv_layer_29"].shape == (2, 2, 2)


@pytest.mark.smollm2
def test_pyvene_capital_patch_on_smollm2(smollm2):
    res = interchange.sweep(smollm2, "The capital of Spain is", "The capital of Italy is",
                            [" Rome", " Madrid"], site="resid_post", progress=False)
    assert res.values.shape == (30, 5)
    subject = [i for i, label in enumerate(res.labels["position"]) if "Spain" in label][0]
    assert res.values[2, subject] > res.baselines["base"] + 0.1  # early subject patch: Rome
    assert res.values[-1, -1] == pytest.approx(res.baselines["source"], abs=1e-5)


@pytest.mark.smollm2
def test_causal_trace_on_smollm2(smollm2, tmp_path):
    res = interchange.causal_trace(smollm2, "The Eiffel Tower is located in the city of",
                                   "Eiffel Tower", " Paris", layers=[0, 8, 16, 29], samples=3,
                                   progress=False)
    clean, corrupted = res.baselines["clean"], res.baselines["corrupted"]
    assert clean > corrupted + 0.05
    assert res.values[-1, -1] == pytest.approx(clean, abs=1e-5)  # restoring the last state: clean
    assert res.values.shape == (4, len(res.labels["position"]))
    paths = res.save(tmp_path, "trace")
    assert all(p.stat().st_size > 0 for p in paths.values())
