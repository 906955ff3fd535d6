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
