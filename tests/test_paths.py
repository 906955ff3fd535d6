"""Path patching equals an independent two-stage plain-hook implementation."""

import numpy as np
import pytest
import torch

from recipes import paths

from hooks import _get

BASE = ["The capital of Spain is Madrid and the", "Once upon a time there was a dog"]
SOURCE = ["The capital of Italy is Rome and the", "Once upon a time there was a cat"]
ANSWERS = [[" Rome", " Madrid"], [" cat", " dog"]]


def _plain(module, tok, sender, receiver, arch_paths):
    """Stage 1 and 2 with forward hooks: sender head from the source run, every other head
    and every MLP from the sender's layer on frozen at the base run; the receiver (q of one
    head, or the final norm's output) recorded, then patched into the base run."""
    cfg = module.config
    H, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    L, layers = arch_paths
    n_layers = cfg.num_hidden_layers
    s_layer, s_head = sender
    scores = []
    for b, s, ans in zip(BASE, SOURCE, ANSWERS):
        ib, is_ = tok(b, return_tensors="pt"), tok(s, return_tensors="pt")
        cache = {}

        def grab(key):
            def pre(m, args):
                cache[key] = args[0].clone()
            def post(m, a, out):
                cache[key] = (out[0] if isinstance(out, tuple) else out).clone()
            return pre, post
        runs = {}
        for tag, ids in (("b", ib), ("s", is_)):
            handles = []
            for layer in range(n_layers):
                pre, _ = grab((tag, "o", layer))
                handles.append(_get(module, f"{layers}.{layer}.self_attn.o_proj").register_forward_pre_hook(pre))
                _, post = grab((tag, "mlp", layer))
                handles.append(_get(module, f"{layers}.{layer}.mlp").register_forward_hook(post))
            with torch.no_grad():
                runs[tag] = module(**ids).logits
            for h in handles:
                h.remove()
        rec_kind, rec_layer, rec_head = receiver
        handles, box = [], {}
        last = rec_layer if rec_kind == "head_q" else n_layers  # freeze below the receiver
        for layer in range(s_layer, last):
            def o_pre(m, args, layer=layer):
                x = args[0].unflatten(-1, (H, hd))
                new = cache[("b", "o", layer)].unflatten(-1, (H, hd)).clone()
                if layer == s_layer:
                    new[:, :, s_head] = cache[("s", "o", layer)].unflatten(-1, (H, hd))[:, :, s_head]
                x[:] = new
            handles.append(_get(module, f"{layers}.{layer}.self_attn.o_proj").register_forward_pre_hook(o_pre))

            def mlp_post(m, a, out, layer=layer):
                return cache[("b", "mlp", layer)].clone()
            handles.append(_get(module, f"{layers}.{layer}.mlp").register_forward_hook(mlp_post))
        if rec_kind == "head_q":
            target = _get(module, f"{layers}.{rec_layer}.self_attn.q_proj")
            hook = target.register_forward_hook(
                lambda m, a, out: box.update(v=out.unflatten(-1, (H, hd))[:, :, rec_head].clone()))
        else:
            target = _get(module, "model.norm")
            hook = target.register_forward_hook(lambda m, a, out: box.update(v=out.clone()))
        with torch.no_grad():
            module(**ib)
        hook.remove()
        for h in handles:
            h.remove()
        if rec_kind == "head_q":
            def patch(m, a, out):
                out.unflatten(-1, (H, hd))[:, :, rec_head] = box["v"]
            hook = target.register_forward_hook(patch)
        else:
            hook = target.register_forward_hook(lambda m, a, out: box["v"])
        with torch.no_grad():
            lp = module(**ib).logits[0, -1].log_softmax(-1)
        hook.remove()
        a, c = (tok(x, add_special_tokens=False)["input_ids"][0] for x in ans)
        scores.append(float(lp[a] - lp[c]))
    return float(np.mean(scores))


@pytest.mark.parametrize("exact_reuse", [True, False])
def test_path_patching_equals_plain_hooks(tiny_models, monkeypatch, exact_reuse):
    from tracer import execute
    real = execute.run
    monkeypatch.setattr(execute, "run", lambda *a, **k: real(*a, **{**k, "exact_reuse": exact_reuse}))
    model = tiny_models["llama"]
    module, tok = model._module, model.tokenizer
    for receivers, plain_receiver in ((["final"], ("final", None, None)),
                                      ([("head_q", 1, 2)], ("head_q", 1, 2))):
        grid = paths.path_patch(model, BASE, SOURCE, ANSWERS, receivers, progress=False)
        senders = [(0, 0), (0, 3)] + ([(1, 1)] if receivers == ["final"] else [])
        for layer, head in senders:
            want = _plain(module, tok, (layer, head), plain_receiver, ("", "model.layers"))
            assert abs(grid.values[layer, head] - want) < 1e-5, (receivers, layer, head)
        if receivers != ["final"]:
            assert np.isnan(grid.values[1]).all()  # heads at the receiver's layer send nothing
        one = paths.path_patch(model, BASE, SOURCE, ANSWERS, receivers, sender=("head_out", 0, 3),
                               progress=False)
        assert abs(one.values[0, 0] - grid.values[0, 3]) < 1e-6


def test_bad_senders_and_receivers_are_named(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="does not come before the earliest receiver"):
        paths.path_patch(model, BASE, SOURCE, ANSWERS, [("head_q", 0, 1)], sender=("head_out", 1, 0))
    with pytest.raises(ValueError, match="a receiver is a site name"):
        paths.path_patch(model, BASE, SOURCE, ANSWERS, [("head_q", 0)])
    with pytest.raises(ValueError, match="have 9 and 10 tokens|tokens; path patching"):
        paths.path_patch(model, BASE[:1], ["The capital of Italy is Rome and the big"], ANSWERS[:1], ["final"])


def test_the_shipped_ioi_prompts_pair_up():
    bases, sources, answers = paths.ioi()
    assert len(bases) == len(sources) == len(answers) >= 100
    for b, s, (io, subject) in zip(bases, sources, answers):
        assert b.count(subject.strip()) == 2 and s.count(subject.strip()) == 1 and io.strip() in b


@pytest.mark.smollm2
def test_the_shipped_ioi_roles_resolve(smollm2):
    from recipes import dataset

    items = dataset.pairs(paths.IOI_FILE, answers_col=["io", "s"])
    assert len(items) >= 100
    tok = smollm2.tokenizer
    for i, p in enumerate(items):
        roles = dataset.resolve(tok, p, i)
        assert list(roles) == ["IO", "S1", "S2", "END"]
        assert all(len(b) == len(s) == 1 for b, s in roles.values())  # single-token names
        assert len(tok(p.base)["input_ids"]) == len(tok(p.source)["input_ids"])
