"""Circuits: edge scores and edge patching equal plain hooks on every family; circuits as data."""

import json

import numpy as np
import pytest
import torch

import tracer
from recipes import circuits
import circuit_hooks as ref
from tracer.graph import Graph
from tracer.testing import ARCHS

# two pairs of one token length (one batch) and one of another (a second batch)
PAIRS = [("The capital of France is", "The capital of Italy is", [" Paris", " Rome"]),
         ("The capital of Spain is", "The capital of Italy is", [" Madrid", " Rome"]),
         ("The cat sat on the mat and", "The dog sat on the mat and", [" the", " a"])]


def _data(model, pairs=PAIRS):
    """Records whose base and source have equal token counts under the tiny tokenizer."""
    tok = model.tokenizer
    out = []
    for b, s, a in pairs:
        assert len(tok(b)["input_ids"]) == len(tok(s)["input_ids"]), (b, s)
        out.append({"base": b, "source": s, "answers": a})
    return out


def _ids(model, text):
    return torch.tensor([model.tokenizer(text)["input_ids"]])


def _answers(model, answers):
    return [model.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in answers]


def _reference(model, arch, method):
    module = tracer.sites.module(model)
    s = ref.spec(arch, module.config)
    got = []
    for b, src, a in PAIRS:
        values, senders, receivers = ref.scores(module, s, _ids(model, b), _ids(model, src),
                                                _answers(model, a), steps=3 if method == "eap-ig" else None)
        got.append(values)
    return torch.stack(got).mean(0).numpy(), senders, receivers


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_edge_scores_equal_hooks(tiny_models, arch, method):
    model = tiny_models[arch]
    got = circuits.discover(model, _data(model), method=method, steps=3, progress=False, max_batch=10)
    want, senders, receivers = _reference(model, arch, method)
    assert got.senders == senders and got.receivers == receivers
    assert np.array_equal(np.isnan(got.values), np.isnan(want))
    ok = ~np.isnan(want)
    scale = np.abs(want[ok]).max()
    assert scale > 1e-6  # the scores are not all zero: the comparison can fail
    # Gemma 2: any nnsight trace of it differs from the plain forward by ~6e-5 with no edit
    rtol = 1e-3 if arch == "gemma2" else 1e-4
    np.testing.assert_allclose(got.values[ok], want[ok], atol=1e-5 * scale, rtol=rtol)
    assert all(p.grad is None for p in tracer.sites.module(model).parameters())  # nothing leaks


@pytest.mark.parametrize("arch", ARCHS)
def test_edge_patching_equals_hooks(tiny_models, arch):
    model = tiny_models[arch]
    module = tracer.sites.module(model)
    s = ref.spec(arch, module.config)
    g = Graph(model)
    gen = torch.Generator().manual_seed(1)
    masks = [g.valid & (torch.rand(g.shape, generator=gen) < p) for p in (0.2, 0.6)]
    masks.append(torch.zeros(g.shape, dtype=torch.bool))  # one receiver's edges only
    masks[-1][:, g.mlp_receiver[1]] = g.valid[:, g.mlp_receiver[1]]
    masks[-1][:, g.attn_receivers[1][0] + 1] = g.valid[:, g.attn_receivers[1][0] + 1]
    data = _data(model, PAIRS[:1])
    d = circuits._data(model, data, None, "logit_diff", None)
    clean, corrupted, values = circuits._patched(model, d, masks, 16, False, "test")
    b, src, a = PAIRS[0]
    want = []
    for m in masks:
        excluded = [(g.senders[i], g.receivers[j]) for i, j in zip(*torch.nonzero(m, as_tuple=True))]
        want.append(float(ref.patched(module, s, _ids(model, b), _ids(model, src), _answers(model, a), excluded)))
    np.testing.assert_allclose(values[0], want, atol=2e-5)
    with torch.no_grad():
        plain = [float(ref.logit_diff(module(_ids(model, t)).logits, _answers(model, a))) for t in (b, src)]
    np.testing.assert_allclose([clean[0], corrupted[0]], plain, atol=2e-5)
    assert abs(want[0] - plain[0]) > 1e-4  # the patch changes something


def test_graph_of_each_structure(tiny_models):
    llama = Graph(tiny_models["llama"])  # 4 heads, 2 key-value heads, 2 layers
    assert llama.senders[:6] == ["input", "a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0"]
    assert llama.receivers[:9] == ["a0.h0<q>", "a0.h1<q>", "a0.h2<q>", "a0.h3<q>", "a0.g0<k>", "a0.g1<k>",
                                   "a0.g0<v>", "a0.g1<v>", "m0"]
    assert llama.shape == (11, 19)
    s, r = llama.senders.index, llama.receivers.index
    assert llama.valid[s("a0.h2"), r("m0")] and not llama.valid[s("a0.h2"), r("a0.h1<q>")]
    assert llama.valid[s("m0"), r("a1.g0<k>")] and not llama.valid[s("m1"), r("m1")]
    assert bool(llama.valid[:, r("logits")].all())
    neox = Graph(tiny_models["gpt_neox"])  # parallel attention and MLP: no head -> own MLP edge
    s, r = neox.senders.index, neox.receivers.index
    assert not neox.valid[s("a0.h1"), r("m0")] and neox.valid[s("a0.h1"), r("m1")]
    gemma = Graph(tiny_models["gemma3"])  # the attention output normed as a whole: one sender
    assert gemma.senders == ["input", "a0", "m0", "a1", "m1"]
    assert "a1.h3<q>" in gemma.receivers


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_faithfulness_full_graph_is_one_and_empty_zero(tiny_models, arch):
    model = tiny_models[arch]
    data = _data(model)
    scores = circuits.discover(model, data, progress=False)
    n = int(scores.valid.sum())
    full = circuits.faithfulness(model, scores.top(n), data, progress=False)
    empty = circuits.faithfulness(model, scores.top(0), data, progress=False)
    assert full.value == pytest.approx(1.0, abs=1e-4)
    assert empty.value == pytest.approx(0.0, abs=1e-4)
    assert abs(full.clean - full.corrupted) > 1e-3
    curve = circuits.faithfulness_curve(model, scores, data, sizes=[0, 5, n], progress=False)
    assert curve.values[0] == pytest.approx(0.0, abs=1e-4) and curve.values[-1] == pytest.approx(1.0, abs=1e-4)
    middle = circuits.faithfulness(model, scores.top(5), data, progress=False)
    assert curve.values[1] == pytest.approx(middle.value, abs=1e-5)


def test_edge_effects_are_single_edge_patches(tiny_models):
    model = tiny_models["llama"]
    module = tracer.sites.module(model)
    s = ref.spec("llama", module.config)
    data = _data(model, PAIRS[:1])
    edges = [("input", "a0.h1<q>"), ("a0.h2", "m0"), ("m1", "logits")]
    got = circuits.edge_effects(model, edges, data, progress=False)
    b, src, a = PAIRS[0]
    ids, ans = (_ids(model, b), _ids(model, src)), _answers(model, a)
    base = float(ref.patched(module, s, *ids, ans, []))
    want = [float(ref.patched(module, s, *ids, ans, [e])) - base for e in edges]
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_circuit_choice_save_load_and_plot(tiny_models, tmp_path):
    model = tiny_models["qwen2"]
    scores = circuits.discover(model, _data(model), progress=False)
    top = scores.top(6)
    assert len(top) == 6
    mags = [abs(e[2]) for e in scores.edges()]
    assert mags == sorted(mags, reverse=True)
    cut = scores.threshold(mags[9])
    assert len(cut) >= 10 and all(abs(e[2]) >= mags[9] for e in cut.edges)
    path = top.save(tmp_path / "c")
    again = circuits.Circuit.load(tmp_path / "c")
    assert again.edges == top.edges and again.meta == top.meta
    assert set(top.nodes) >= {e[0] for e in top.edges}
    assert torch.equal(again.mask(Graph(model)), top.mask(Graph(model)))
    saved = scores.save(tmp_path / "s")
    loaded = circuits.EdgeScores.load(saved["npz"])
    np.testing.assert_array_equal(loaded.values, scores.values)
    assert loaded.receivers == scores.receivers and loaded.meta["method"] == "eap"
    png = top.plot(tmp_path / "c" / "graph.png")
    assert png.stat().st_size > 5000
    data = json.loads(path.read_text())
    assert data["format"] == "interlace-circuit" and len(data["edges"]) == 6


def test_bad_input_is_one_clear_error(tiny_models, tmp_path):
    model = tiny_models["llama"]
    data = _data(model, PAIRS[:1])
    with pytest.raises(ValueError, match="valid methods are eap, eap-ig"):
        circuits.discover(model, data, method="acdc")
    with pytest.raises(ValueError, match="tokens"):
        circuits.discover(model, [{"base": "The cat sat", "source": "The big dog sat down", "answers": [" a", " b"]}])
    with pytest.raises(ValueError, match="is not an edge of this model"):
        circuits.faithfulness(model, circuits.Circuit([("m1", "a0.h0<q>", 1.0)]), data, progress=False)
    with pytest.raises(ValueError, match="no such circuit"):
        circuits.Circuit.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "circuit.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a circuit file"):
        circuits.Circuit.load(tmp_path / "bad")
    other = circuits.discover(tiny_models["gemma3"], _data(tiny_models["gemma3"], PAIRS[:1]), progress=False)
    with pytest.raises(ValueError, match="another model's graph"):
        circuits.faithfulness_curve(model, other, data, progress=False)
    scores = circuits.discover(model, data, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        scores.threshold(float("nan"))
    with pytest.raises(ValueError):
        scores.top(10 ** 6)


def test_command_writes_scores_circuit_and_pictures(tiny_models, tmp_path, capsys):
    from recipes import command
    from tracer.testing import save_tiny

    model = str(save_tiny("llama", tmp_path / "m"))
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(_data(tiny_models["llama"])))
    out = tmp_path / "out"
    assert command.main(["circuit", "--model", model, "--data", str(data), "--method", "eap",
                         "--top", "7", "--sizes", "0", "7", "82", "--out", str(out)]) == 0
    for name in ("scores.npz", "scores.json", "circuit.json", "circuit.png", "faithfulness_curve.json",
                 "faithfulness_curve.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(circuits.Circuit.load(out)) == 7
    curve = json.loads((out / "faithfulness_curve.json").read_text())
    assert curve["sizes"] == [0, 7, 82]
    assert curve["faithfulness"][0] == pytest.approx(0, abs=1e-4) and curve["faithfulness"][2] == pytest.approx(1, abs=1e-4)
    printed = capsys.readouterr().out
    assert "circuit: 7 of 82 edges" in printed and "faithfulness" in printed
    assert command.main(["circuit", "--model", model, "--data", str(data), "--sizes", "9999",
                         "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "circuit size" in err and "edge attribution" not in err  # refused before any work
