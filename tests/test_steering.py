"""recipes.steering and recipes.lens on the embedded SmolLM2: bottlenecks, probe, CAA vectors,
steering toward " happy", the CLI's files."""

import json

import pytest
import torch

import tracer
from recipes import lens, steering
from tracer.interventions import Intervention

pytestmark = pytest.mark.smollm2
LAYER = 8
PROMPTS = ["The capital of France is", "Once upon a time there was", "My favourite food is"]


def last_logprobs(model, ivs):
    with torch.no_grad(), model.trace(PROMPTS):
        for iv in ivs:
            iv.apply(model)
        lp = model.lm_head.output[:, -1].log_softmax(-1).save()
    return lp


def kl(p, q):
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_lens_bottlenecks_keep_the_distribution(smollm2):
    base = last_logprobs(smollm2, [])
    logit = lens.LogitLens(smollm2, LAYER)
    # 8 steps already halve the logit lens's error (measured: KL 55 vs 101 on these texts)
    tuned = lens.TunedLens.train(smollm2, LAYER, texts=lens.training_texts()[::8], steps=8)
    kls = {"logit": kl(base, last_logprobs(smollm2, [logit.bottleneck()])),
           "tuned": kl(base, last_logprobs(smollm2, [tuned.bottleneck()]))}
    print("bottleneck KL", kls)
    assert all(v < 0.05 for v in kls.values())
    # the tuned lens predicts the final distribution better than the logit lens at this layer
    x, final = lens.activations(smollm2, lens.training_texts()[:40], LAYER, with_logits=True)
    err = {name: float(torch.nn.functional.kl_div(torch.log_softmax(m.encode(x) * m.scale, -1), final,
                                                  log_target=True, reduction="batchmean"))
           for name, m in (("logit", logit), ("tuned", tuned))}
    assert err["tuned"] < err["logit"]


def test_tuned_lens_and_sae_round_trip(smollm2, tmp_path):
    tuned = lens.TunedLens.train(smollm2, LAYER, texts=lens.training_texts()[:32], steps=5)
    again = lens.TunedLens.load(tuned.save(tmp_path / "tl"), smollm2)
    x = torch.randn(3, smollm2.config.hidden_size)
    assert torch.allclose(tuned.encode(x), again.encode(x))
    sae = lens.SAE.train(smollm2, LAYER, width=256, texts=lens.training_texts()[:64], steps=30)
    loaded = lens.SAE.load(sae.save(tmp_path / "sae"))
    assert loaded.layer == LAYER and torch.equal(loaded.w_dec, sae.w_dec)
    assert (tmp_path / "sae" / "cfg.json").exists()
    lp = last_logprobs(smollm2, [loaded.bottleneck()])
    # the same bottleneck as a plain hook: the layer's output replaced by its reconstruction
    module, tok = tracer.sites.module(smollm2), smollm2.tokenizer
    handle = module.model.layers[LAYER].register_forward_hook(
        lambda m, a, o: loaded.decode(loaded.encode(o)).to(o.dtype))
    tok.padding_side = "left"
    try:
        with torch.no_grad():
            want = module(**tok(PROMPTS, return_tensors="pt", padding=True)).logits[:, -1].log_softmax(-1)
    finally:
        handle.remove()
    torch.testing.assert_close(lp, want, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="not a SAELens folder"):
        lens.SAE.load(tmp_path / "tl")


def test_probe_beats_chance(smollm2):
    _, acc = lens.Probe.fit(smollm2, "San Francisco", LAYER)
    print("probe held-out balanced accuracy", acc)
    assert acc > 0.7


def test_caa_vector_save_load(smollm2, tmp_path):
    pos, neg = lens.contrast_texts("San Francisco")
    v = steering.caa_vector(smollm2, pos, neg, LAYER)
    assert v.shape == (smollm2.config.hidden_size,) and v.norm() > 0
    steering.save_vector(tmp_path / "v", smollm2, v, LAYER, alpha=2.0)
    spec = tracer.files.load(tmp_path / "v", smollm2)
    assert torch.equal(spec.interventions[0].params["vector"], v)


def test_steering_toward_happy_raises_happy_tokens(smollm2):
    tok = smollm2.tokenizer
    words = [" happy", " joy", " smile", " cheerful", " glad", " Happy"]
    ids = [tok(w)["input_ids"][0] for w in words]
    emb = tracer.sites.module(smollm2).model.embed_tokens.weight[tok(" happy")["input_ids"][0]].detach().float()
    ivs = [Intervention("add", f"mlp_out.{layer}", params={"vector": emb, "alpha": 4.0})
           for layer in range(smollm2.config.num_hidden_layers)]
    plain = last_logprobs(smollm2, [])[:, ids].exp().sum(-1)
    steered = last_logprobs(smollm2, ivs)[:, ids].exp().sum(-1)
    print("P(happy tokens) plain", plain.tolist(), "steered", steered.tolist())
    assert bool((steered > 2 * plain).all())


def test_cli_run_and_eval(tmp_path):
    out = tmp_path / "run"
    assert steering.main(["--method", "steering", "--limit", "2", "--generation-length", "4",
                          "--out", str(out)]) == 0
    data = json.loads((out / "outputs.json").read_text())
    assert len(data["outputs"]) == 2 and set(data["scores"]) >= {"success", "coherence", "perplexity"}
    assert steering.main(["eval", "--methods", "logit", "--alphas", "0.5", "--limit", "2",
                          "--generation-length", "4", "--out", str(tmp_path / "ev")]) == 0
    rows = json.loads((tmp_path / "ev" / "table.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["clean", "prompting", "logit"]
    assert (tmp_path / "ev" / "success_vs_perplexity.png").stat().st_size > 1000


def test_the_evaluation_builds_each_method_once_not_per_alpha(smollm2, monkeypatch):
    calls = []
    real = steering.make_method

    def counted(model, name, layer, phrase, **kwargs):
        calls.append(name)
        return real(model, name, layer, phrase, **kwargs)
    monkeypatch.setattr(steering, "make_method", counted)
    table = steering.sweep(smollm2, ["logit", "steering"], [0.5, 1.0], phrase=" happy", layer=LAYER,
                           length=2, texts=PROMPTS[:1], progress=False)
    assert sorted(calls) == ["logit", "steering"]  # 2 methods x 2 alphas, built twice in all
    assert len(table.rows) == 2 + 4


def test_an_interrupted_evaluation_keeps_its_rows_and_resumes(smollm2, monkeypatch, tmp_path):
    real, calls = steering.evaluate, []

    def stop_at_fourth(model, recs, phrase):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(model, recs, phrase)
    monkeypatch.setattr(steering, "evaluate", stop_at_fourth)
    args = dict(phrase=" happy", layer=LAYER, length=2, texts=PROMPTS[:1], out=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        steering.sweep(smollm2, ["logit"], [0.5, 1.0], **args)
    saved = json.loads((tmp_path / ".partial.json").read_text())
    assert [(r["method"], r["alpha"]) for r in saved["rows"]] == [("clean", None), ("prompting", None),
                                                                  ("logit", 0.5)]
    calls.clear()
    table = steering.sweep(smollm2, ["logit"], [0.5, 1.0], **args)
    assert len(calls) == 1 and len(table.rows) == 4  # only the unfinished row ran again
    assert table.rows[:3] == saved["rows"] and not (tmp_path / ".partial.json").exists()
    assert (tmp_path / "table.csv").is_file()
