"""tracer.check_model: every row passes on its family, wrong rows fail with the check that
caught them, unknown model types laid out like a known family are offered its row."""

import warnings

import pytest
import torch
import transformers as T

import tracer
from tracer import selfcheck
from tracer.families import FAMILIES
from tracer.testing import ARCHS, save_tiny, tiny_config

from helpers import encode


class _ConfigOnly:
    """A model known only by its config (as a remote model is before any request)."""

    def __init__(self, config):
        self.config = config


@pytest.mark.parametrize("arch", ARCHS)
def test_every_row_passes_on_its_family(tiny_models, arch):
    report = tracer.check_model(tiny_models[arch], force=True)
    assert report.ok and not report.offered and len(report.passed) == 4, str(report)


# A wrong row for each kind of mistake, and the check that must catch it.
WRONG = [
    ("gemma2", FAMILIES["llama"]._replace(name="gemma2"), "the residual stream adds up: resid_mid.0"),
    ("olmo2", FAMILIES["olmo2"]._replace(q_proj="self_attn.q_proj"),
     "a change to head_q.0 head 0 reached output heads [0, 1, 2, 3], expected [0]"),
    ("gpt_neox", FAMILIES["gpt_neox"]._replace(qkv_layout="blocks"), "each head site addresses one head"),
    ("gpt2", FAMILIES["gpt2"]._replace(qkv_layout="interleaved"), "each head site addresses one head"),
    ("llama", FAMILIES["llama"]._replace(mid_norm="input_layernorm"), "OutOfOrderError"),
    ("phi3", FAMILIES["phi3"]._replace(residual="post", post_attn="post_attention_layernorm",
                                       post_mlp="post_attention_layernorm"), "post-normed attn_out"),
    ("qwen3", FAMILIES["qwen3"]._replace(lm_head="model.norm"), "logits"),
]


@pytest.mark.parametrize("arch,row,caught", WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_row_fails_with_what_caught_it(arch, row, caught):
    report = selfcheck.check_row(tiny_config(arch), row)
    assert not report.ok
    assert any(caught in f for f in report.failed), str(report)
    assert FAMILIES[arch] != row  # the real row is back in place


def test_a_llama_like_model_type_is_offered_the_llama_row(monkeypatch):
    """OLMo (1) has no row; its modules are Llama's, so after the check it gets that row,
    with a warning, and its sites then read what plain hooks see."""
    monkeypatch.setattr(selfcheck, "_CHECKED", {})
    cfg = T.OlmoConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, vocab_size=512, pad_token_id=0, bos_token_id=0,
                       eos_token_id=0)
    try:
        with pytest.warns(UserWarning, match="'olmo' has no row.*laid out like llama"):
            report = tracer.check_model(_ConfigOnly(cfg))
        assert report.ok and report.offered and report.family == "olmo"
        torch.manual_seed(0)
        from nnsight.modeling.transformers import TransformersModel
        model = TransformersModel(T.AutoModelForCausalLM.from_config(cfg).eval(),
                                  tokenizer=tracer.testing.tokenizer())
        inputs = encode(model, ["The capital of France is"])
        with torch.no_grad(), model.trace(inputs):
            got = tracer.site(model, "resid_mid.1").read().save()
        box = []
        layer = tracer.sites.module(model).model.layers[1]
        handle = layer.post_attention_layernorm.register_forward_pre_hook(
            lambda m, args: box.append(args[0].clone()))
        with torch.no_grad():
            tracer.sites.module(model)(**inputs)
        handle.remove()
        torch.testing.assert_close(got, box[0], rtol=0, atol=1e-5)
    finally:
        FAMILIES.pop("olmo", None)


def test_a_llama_like_model_whose_residual_differs_is_refused(monkeypatch):
    """Granite has Llama's module names but scales each sublayer by residual_multiplier:
    the residual sums fail, so the Llama row is not offered."""
    monkeypatch.setattr(selfcheck, "_CHECKED", {})
    cfg = T.GraniteConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, residual_multiplier=0.22)
    with pytest.raises(tracer.ModelCheckError,
                       match=r"unsupported architecture 'granite'.*llama-like: the residual "
                             r"stream adds up: resid_mid.0 = resid_pre \+ attn_out"):
        tracer.check_model(_ConfigOnly(cfg))
    assert "granite" not in FAMILIES


def test_an_unknown_layout_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(selfcheck, "_CHECKED", {})
    cfg = T.CohereConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4)
    with pytest.raises(tracer.ModelCheckError) as caught:
        tracer.check_model(_ConfigOnly(cfg))
    message = str(caught.value)
    assert "supported model types are gemma2, gemma3_text, gpt2" in message
    assert "llama-like: no model.layers.0.post_attention_layernorm" in message
    assert "gpt2-like: no transformer.wte" in message


def test_load_checks_once_per_config_and_refuses_a_broken_row(tmp_path, monkeypatch):
    monkeypatch.setattr(selfcheck, "_CHECKED", {})
    folder = save_tiny("phi3", tmp_path / "phi3")
    calls = []
    real = selfcheck.check_row
    monkeypatch.setattr(selfcheck, "check_row", lambda *a: calls.append(1) or real(*a))
    tracer.load(str(folder))
    tracer.load(str(folder))
    assert calls == [1]
    monkeypatch.setattr(selfcheck, "_CHECKED", {})
    monkeypatch.setitem(FAMILIES, "phi3", FAMILIES["phi3"]._replace(qkv_layout="interleaved"))
    with pytest.raises(tracer.ModelCheckError, match="each head site addresses one head"):
        tracer.load(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracer.load(str(folder), check=False) is not None
