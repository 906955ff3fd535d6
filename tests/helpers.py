"""Small helpers the tests share (the hook reference lives in hooks.py)."""

import torch


def encode(model, prompts, length=None):
    """Token ids of equal-length prompts (truncated to the shortest) as trace/forward input."""
    ids = [model.tokenizer(p)["input_ids"] for p in prompts]
    n = length or min(len(i) for i in ids)
    input_ids = torch.tensor([i[:n] for i in ids])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def save_tiny(model, folder):
    """A tiny model written as a folder ``tracer.load`` reads."""
    from tracer.testing import save_tiny as save

    return save(model, folder)


def subject_patch_probs(model, base, source, subject, layer, answers):
    """P(answer) after ``base`` with layer ``layer``'s output at the subject's first token
    taken from ``source``, by two plain forward hooks (no tracer)."""
    import tracer

    module, tok = tracer.sites.module(model), model.tokenizer
    pos = tracer.tokens.find(tok, base, subject)[0]
    block = module.model.layers[layer]
    box = []
    h = block.register_forward_hook(lambda m, a, out: box.append(out[:, pos].clone()))
    with torch.no_grad():
        module(**tok(source, return_tensors="pt"))
    h.remove()

    def patch(m, a, out):
        out[:, pos] = box[0]

    h = block.register_forward_hook(patch)
    with torch.no_grad():
        probs = module(**tok(base, return_tensors="pt")).logits[0, -1].softmax(-1)
    h.remove()
    return {a: float(probs[tok(a, add_special_tokens=False)["input_ids"][0]]) for a in answers}


def peer_pyvene():
    """pyvene 0.1.8, the differential peer (``make setup`` installs it --no-deps): CI must
    have it; elsewhere a module using it is skipped."""
    import os

    import pytest

    try:
        import pyvene
    except ImportError as error:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must run the pyvene parity tests: {error} "
                               "(make setup installs pyvene==0.1.8 --no-deps)") from error
        pytest.skip(f"pyvene is not installed: {error}", allow_module_level=True)
    return pyvene
