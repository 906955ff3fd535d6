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
