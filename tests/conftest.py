import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tracer.testing import ARCHS, tiny  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def fixed_costs():
    """The engine's choice between exact reuse and full recomputation (tracer.costs) made
    with fixed CPU costs, not ones timed on a machine that may be busy: every in-process
    test takes the same path on every run (tests/test_reuse.py tests the timed choice)."""
    from tracer import costs, reuse

    real = costs.measure
    costs.measure = lambda model: reuse.COSTS["cpu"]
    yield real
    costs.measure = real


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny random model per family, built once."""
    return {arch: tiny(arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2, converted once into the cache and shared by the session."""
    import tracer

    return tracer.load("smollm2")
