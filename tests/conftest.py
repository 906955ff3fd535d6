import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tracer.testing import ARCHS, tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny random model per family, built once."""
    return {arch: tiny(arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2, converted once into the cache and shared by the session."""
    import tracer

    return tracer.load("smollm2")


def encode(model, prompts, length=None):
    """Token ids of equal-length prompts (truncated to the shortest) as trace/forward input."""
    ids = [model.tokenizer(p)["input_ids"] for p in prompts]
    n = length or min(len(i) for i in ids)
    input_ids = torch.tensor([i[:n] for i in ids])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
