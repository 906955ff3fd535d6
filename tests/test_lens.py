"""recipes.lens and recipes.steering on tiny models (fast suite): the affine and SAE kinds
against plain hooks, lens bottlenecks, SAE reconstruction, CAA vectors and output scoring."""

import pytest
import torch

import tracer
from recipes import lens, steering
from tracer import execute, plan
from tracer.interventions import Intervention

from hooks import capture, edited_logits
from helpers import encode, save_tiny  # noqa: F401

LAYER = 1


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_affine_and_sae_kinds_match_hooks(tiny_models, arch):
    model = tiny_models[arch]
    inputs = encode(model, ["The cat sat on the mat", "Water is wet and fire is"])
    g = torch.Generator().manual_seed(0)
    m, b = torch.randn(64, 64, generator=g) / 8, torch.randn(64, generator=g)
    w_enc, b_enc = torch.randn(64, 32, generator=g) / 8, torch.randn(32, generator=g)
    w_dec, b_dec = torch.randn(32, 64, generator=g) / 8, torch.randn(64, generator=g)
    cases = {
        "affine": (Intervention("affine", f"resid_post.{LAYER}", params={"matrix": m, "bias": b}),
                   lambda t: t.copy_(t @ m + b)),
        "sae": (Intervention("sae", f"resid_post.{LAYER}",
                             params={"w_enc": w_enc, "b_enc": b_enc, "w_dec": w_dec, "b_dec": b_dec}),
                lambda t: t.copy_(torch.relu((t - b_dec) @ w_enc + b_enc) @ w_dec + b_dec)),
    }
    module = tracer.sites.module(model)
    for name, (iv, edit) in cases.items():
        with torch.no_grad(), model.trace(inputs):
            iv.apply(model)
            got = model.output.logits.save()
        want = edited_logits(module, arch, "resid_post", LAYER, inputs, edit)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=name)


def test_logit_lens_bottleneck_is_exact_on_a_full_rank_unembedding(tiny_models):
    # vocabulary 512 > hidden 64: W_U has full column rank, so decode(encode(x)) = x
    model = tiny_models["llama"]
    logit = lens.LogitLens(model, LAYER)
    x = torch.randn(5, 64)
    torch.testing.assert_close(logit.decode(logit.encode(x)), x, rtol=0, atol=1e-3)
    inputs = encode(model, ["The cat sat on the mat"])
    with torch.no_grad(), model.trace(inputs):
        plain = model.output.logits.log_softmax(-1).save()
    with torch.no_grad(), model.trace(inputs):
        logit.bottleneck().apply(model)
        through = model.output.logits.log_softmax(-1).save()
    assert float(tracer.metrics.kl(plain, through).max()) < 1e-6


def test_tuned_lens_round_trip_in_both_folder_formats(tiny_models, tmp_path):
    model = tiny_models["llama"]
    tuned = lens.TunedLens.train(model, LAYER, texts=lens.training_texts()[:16], steps=5)
    again = lens.TunedLens.load(tuned.save(tmp_path / "tl", model), model)
    x = torch.randn(3, 64)
    assert torch.equal(tuned.encode(x), again.encode(x)) and again.scale == tuned.scale
    from safetensors.torch import save_file
    old = tmp_path / "old"
    old.mkdir()
    save_file({"a": tuned.a.contiguous(), "b": tuned.b.contiguous()}, str(old / "tuned_lens.safetensors"))
    (old / "tuned_lens.json").write_text(
        f'{{"format": "interlace.tuned_lens", "layer": {LAYER}, "scale": {tuned.scale}, "hidden": 64}}')
    assert torch.equal(lens.TunedLens.load(old, model).encode(x), tuned.encode(x))


def test_sae_bottleneck_replaces_the_stream_by_its_reconstruction(tiny_models):
    model = tiny_models["gpt2"]
    sae = lens.SAE.train(model, LAYER, width=128, texts=lens.training_texts()[:32], steps=20)
    row = list(model.tokenizer("The cat sat on the mat")["input_ids"])
    site = f"resid_post.{LAYER}"
    clean, edited = execute.run(model, [
        plan.Group([row], [], [plan.Activations(site, 0)]),
        plan.Group([row], [sae.bottleneck()], [plan.Activations(site, 0)])], progress=False)
    x, x_hat = clean[0], edited[0]
    torch.testing.assert_close(x_hat, sae.decode(sae.encode(x)), rtol=0, atol=1e-5)
    error = float((x_hat - x).norm() / x.norm())
    print("SAE relative reconstruction error", error)
    assert 0 < error < 1


def test_caa_vector_is_the_mean_difference_of_last_token_states(tiny_models):
    model = tiny_models["qwen2"]
    pos, neg = ["I love San Francisco", "San Francisco is here"], ["I love the park", "The cat sat"]
    vector = steering.caa_vector(model, pos, neg, LAYER)
    module = tracer.sites.module(model)

    def last(texts):
        return torch.stack([capture(module, "qwen2", "resid_post", LAYER, encode(model, [t]))[0, -1]
                            for t in texts])
    torch.testing.assert_close(vector, last(pos).mean(0) - last(neg).mean(0), rtol=0, atol=1e-5)


def test_output_scoring_equals_a_plain_forward(tiny_models):
    model = tiny_models["llama"]
    tok, module = model.tokenizer, tracer.sites.module(model)
    records = [{"prompt": "The cat", "output": " sat on the mat"},
               {"prompt": "Once upon a time there was", "output": " a dog"}]
    got = steering.continuation_logprobs(model, records)
    for r, lps in zip(records, got):
        p = tok(r["prompt"])["input_ids"]
        o = tok(r["output"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = module(torch.tensor([p + o])).logits[0].log_softmax(-1)
        want = [float(logp[len(p) - 1 + i, t]) for i, t in enumerate(o)]
        assert lps == pytest.approx(want, abs=1e-5)
    scores = steering.evaluate(model, records, "dog")
    every = [x for lps in got for x in lps]
    assert scores["perplexity"] == pytest.approx(tracer.metrics.perplexity(every))
    assert scores["success"] == 0.5


def test_steering_cli_on_a_model_folder(tiny_models, tmp_path, capsys):
    folder = save_tiny(tiny_models["llama"], tmp_path / "model")
    out = tmp_path / "run.json"
    assert steering.main(["--model", str(folder), "--method", "steering", "--layer-idx", "1",
                          "--generation-length", "3", "--limit", "2", "--out", str(out)]) == 0
    assert '"success"' in capsys.readouterr().out and out.stat().st_size > 0
