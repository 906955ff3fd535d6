"""tracer.load on local folders and remote (meta) builds, without any network."""

import pytest
import torch

import tracer
from tracer.testing import ARCHS, tiny


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny("llama")
    tracer.testing.save_tiny(model, path)
    return path, model


def test_load_a_local_folder(folder):
    path, original = folder
    model = tracer.load(str(path))
    ids = model.tokenizer("The cat sat", return_tensors="pt")
    with torch.no_grad(), model.trace(dict(ids)):
        logits = model.output.logits.save()
    torch.testing.assert_close(logits, tracer.sites.module(original)(**ids).logits.detach(), rtol=0, atol=1e-6)
    assert model.tokenizer.padding_side == "left"


def test_load_dtype(folder):
    model = tracer.load(str(folder[0]), dtype=torch.bfloat16)
    assert next(tracer.sites.module(model).parameters()).dtype == torch.bfloat16


def test_remote_load_builds_on_meta_without_weights(folder):
    model = tracer.load(str(folder[0]), remote=True)
    params = list(tracer.sites.module(model).parameters())
    assert params and all(p.device.type == "meta" for p in params)
    # sites resolve on the meta model: traces are planned client-side
    assert tracer.site(model, "head_v.1").n_heads == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_are_small_and_deterministic(arch):
    a, b = tiny(arch), tiny(arch)
    cfg = a.config
    assert cfg.hidden_size <= 64 and cfg.num_hidden_layers in (2, 3)
    for pa, pb in zip(tracer.sites.module(a).parameters(), tracer.sites.module(b).parameters()):
        assert torch.equal(pa, pb)
    if arch in ("llama", "mistral", "qwen2", "gemma2"):
        assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
