"""recipes.iti: data, probes, the fitted intervention, evaluation and the command line."""

import json

import numpy as np
import pytest
import torch

import tracer
from recipes import iti



def test_shipped_data_and_pair_preserving_splits():
    data = iti.load_statements()
    assert len(data.text) >= 400 and set(data.label.tolist()) == {0, 1}
    parts = iti.split(data, seed=0)
    seen = [set(p.pair.tolist()) for p in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p.text) for p in parts.values()) == len(data.text)


def test_user_csv_with_statement_and_label_columns(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("statement,label\nIce is cold.,1\nIce is hot.,0\nFire is hot.,true\n")
    data = iti.load_statements(path)
    assert data.text == ["Ice is cold.", "Ice is hot.", "Fire is hot."]
    assert data.label.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"has no column\(s\) \['truth'\]; its columns are \['statement', 'label'\]"):
        iti.load_statements(path, label="truth")


def test_head_activations_equal_site_reads(tiny_models):
    model = tiny_models["qwen2"]
    texts = ["The cat sat on the mat.", "Water is wet."]
    acts = iti.head_activations(model, texts, batch_size=1)
    assert acts.shape == (2, 2, 4, 16)
    s = tracer.site(model, "head_out.1")
    with torch.no_grad(), model.trace(texts[1]):
        want = s.read(positions=[-1]).save()
    torch.testing.assert_close(acts[1, 1], want[0, 0], rtol=0, atol=1e-5)


def test_probes_learn_a_separable_signal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, 3, 8, generator=g)
    y = (torch.rand(200, generator=g) > 0.5).numpy()
    x[:, 1, 2, 0] += torch.as_tensor(y, dtype=torch.float32) * 4  # only head (1, 2) knows the label
    probes = tracer.metrics.fit_probe(x[:150], y[:150])
    acc = probes.accuracy(x[150:], y[150:])
    assert acc[1, 2] > 0.95 and np.delete(acc.ravel(), 5).max() < 0.8
    dirs, spread = iti.directions(x[:150], y[:150], probes)
    assert dirs[1, 2, 0] > 0.9 and torch.allclose(dirs.norm(dim=-1), torch.ones(2, 3))


def test_fit_builds_a_valid_intervention(tiny_models, tmp_path):
    model = tiny_models["llama"]
    spec, report = iti.fit(model, top_k=3, alpha=5.0)
    assert len(report["chosen"]) == 3
    assert sum(len(i.heads) for i in spec.interventions) == 3
    # each head's shift is alpha x (std along the direction) x the unit mass-mean direction
    train = report["splits"]["train"]
    x = iti.head_activations(model, train.text)
    y = torch.as_tensor(train.label, dtype=torch.bool)
    for iv in spec.interventions:
        layer = int(iv.site.split(".")[1])
        for j, h in enumerate(iv.heads):
            d = x[y, layer, h].mean(0) - x[~y, layer, h].mean(0)
            d = d / d.norm()
            want = 5.0 * (x[:, layer, h] @ d).std() * d
            torch.testing.assert_close(iv.params["vector"][j], want, rtol=1e-4, atol=1e-5)
    spec.check(model)
    spec.save(tmp_path)
    again = tracer.files.load(tmp_path, model)
    assert again.meta["top_k"] == 3 and again.meta["heads"] == spec.meta["heads"]
    with pytest.raises(ValueError, match="top_k must be between 1 and 8"):
        iti.fit(model, top_k=9)


def test_top_k_and_alpha_default_to_the_best_on_validation(tiny_models):
    model = tiny_models["llama"]
    spec, report = iti.fit(model)
    sel = report["selection"]
    assert len(sel) == len(iti.ALPHAS) * len([k for k in iti.TOP_KS if k <= 8])
    best = max(r["val_prefers_true"] for r in sel)
    chosen = next(r for r in sel if (r["top_k"], r["alpha"]) == (report["top_k"], report["alpha"]))
    assert chosen["val_prefers_true"] == best and spec.meta["alpha"] == report["alpha"]
    # alpha 0 is the model as is: the choice is never worse than no intervention on validation
    (plain,) = iti.preference(model, report["splits"]["val"], [None])
    assert all(r["val_prefers_true"] == pytest.approx(plain) for r in sel if r["alpha"] == 0)
    assert best >= plain
    # a given value is kept and only the other is searched
    _, fixed = iti.fit(model, top_k=2)
    assert fixed["top_k"] == 2 and {r["top_k"] for r in fixed["selection"]} == {2}


def test_cli_fit_and_generate(tiny_models, tmp_path, capsys):
    folder = tmp_path / "model"
    tracer.testing.save_tiny(tiny_models["llama"], folder)
    out = tmp_path / "iti"
    assert iti.main(["fit", "--model", str(folder), "--top-k", "2", "--alpha", "3", "--out", str(out),
                     "--layers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "prefers true (test)" in printed and "KL on neutral text" in printed
    for name in ("config.json", "tensors.safetensors", "probe_accuracy.png", "eval.json"):
        assert (out / name).stat().st_size > 0
    assert {iv.site for iv in tracer.files.load(out).interventions} == {"head_out.1"}  # --layers 1
    assert iti.main(["generate", "--intervention", str(out), "--prompt", "The cat sat",
                     "--max-new-tokens", "4", "--out", str(tmp_path / "gen")]) == 0
    printed = capsys.readouterr().out
    assert "without:" in printed and "with ITI:" in printed
    assert json.loads((tmp_path / "gen" / "generations.json").read_text())[0]["prompt"] == "The cat sat"


@pytest.mark.smollm2
def test_iti_on_smollm2(smollm2):
    spec, report = iti.fit(smollm2, top_k=16, alpha=15.0)
    test = report["splits"]["test"]
    chosen = [report["test_acc"][l, h] for l, h in report["chosen"]]
    assert np.mean(chosen) > 0.55  # held-out statements: the chosen heads' probes beat chance
    assert report["test_acc"].max() > 0.6
    result = iti.evaluate(smollm2, spec, test)
    # computed from real runs: re-derive the unsteered preference with a plain forward
    module, tok = tracer.sites.module(smollm2), smollm2.tokenizer
    lp = []
    for text in test.text:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = module(ids).logits[0, :-1].log_softmax(-1)
        lp.append(float(logp.gather(-1, ids[0, 1:, None]).sum()))
    truth = {int(p): i for i, (p, l) in enumerate(zip(test.pair, test.label)) if l == 1}
    lie = {int(p): i for i, (p, l) in enumerate(zip(test.pair, test.label)) if l == 0}
    want = np.mean([lp[truth[p]] > lp[lie[p]] for p in sorted(truth)])
    assert result["prefers_true_without"] == pytest.approx(want)
    # the neutral-text cost, recomputed with plain forwards and a hook adding the same shifts
    neutral = json.loads(iti.NEUTRAL.read_text())
    hooks = []
    for iv in spec.interventions:
        layer = int(iv.site.split(".")[1])
        o_proj = module.model.layers[layer].self_attn.o_proj

        def shift(m, args, iv=iv):
            args[0].unflatten(-1, (-1, 64))[:, :, iv.heads] += iv.params["vector"]
        hooks.append((o_proj, shift))
    nll, kls = {"without": [], "with": []}, []
    for text in neutral:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            plain = module(ids).logits[0, :-1].log_softmax(-1)
            handles = [m.register_forward_pre_hook(h) for m, h in hooks]
            try:
                steered = module(ids).logits[0, :-1].log_softmax(-1)
            finally:
                for h in handles:
                    h.remove()
        for name, lp in (("without", plain), ("with", steered)):
            nll[name] += (-lp.gather(-1, ids[0, 1:, None])[:, 0]).tolist()
        kls += (plain.exp() * (plain - steered)).sum(-1).tolist()
    assert result["ce_without"] == pytest.approx(np.mean(nll["without"]), rel=1e-4)
    assert result["ce_with"] == pytest.approx(np.mean(nll["with"]), rel=1e-4)
    assert result["kl"] == pytest.approx(np.mean(kls), rel=1e-3) and result["kl"] > 0
