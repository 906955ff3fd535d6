"""End to end on the second embedded model, Gemma 3 270M (base), from its PyPI packages."""

import sys
from pathlib import Path

import pytest
import torch

import tracer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from patching import layer_sweep  # noqa: E402

from helpers import subject_patch_probs  # noqa: E402

pytestmark = pytest.mark.gemma3

BASE, SOURCE = "The capital of France is", "The capital of Italy is"


@pytest.fixture(scope="module")
def gemma3():
    return tracer.load("gemma3-270m")


def test_the_row_passes_its_self_check_on_the_real_config(gemma3):
    report = tracer.check_model(gemma3)
    assert gemma3.config.model_type == "gemma3_text" and report.ok, str(report)
    assert tracer.sites.dims_of(gemma3.config)[:5] == (18, 640, 4, 1, 256)


def test_capitals_are_among_the_top_tokens(gemma3):
    """A 270M base model: the capital is a likely next token, not always the first."""
    tok = gemma3.tokenizer
    with torch.no_grad(), gemma3.trace([BASE, "The capital of Japan is"]):
        top = gemma3.output.logits[:, -1].topk(5).indices.save()
    assert " Paris" in [tok.decode([int(i)]) for i in top[0]]
    assert tok.decode([int(top[1, 0])]) == " Tokyo"


@pytest.fixture(scope="module")
def sweep(gemma3):
    return layer_sweep(gemma3, BASE, SOURCE, " France", [" Paris", " Rome"])


def test_subject_patch_moves_paris_to_rome_early_not_late(sweep):
    """Patching the subject's residual from 'Italy' swaps the answer through layer 11; from
    layer 12 on the answer has left the subject token (measured: P(Rome) 0.07 -> 0.001)."""
    clean, patched = sweep["clean"], sweep["patched"]
    for layer in range(0, 11):
        assert patched[" Rome"][layer] > 10 * clean[" Rome"]
        assert patched[" Paris"][layer] < clean[" Paris"] / 10
    for layer in range(12, 18):
        assert patched[" Rome"][layer] < 0.005
    assert abs(patched[" Paris"][17] - clean[" Paris"]) < 1e-3


@pytest.mark.parametrize("layer", [3, 14])
def test_batched_sweep_row_equals_a_plain_hook_patch(gemma3, sweep, layer):
    """Row L of the one-batch sweep equals a single plain-hook patch at layer L."""
    want = subject_patch_probs(gemma3, BASE, SOURCE, " France", layer, [" Paris", " Rome"])
    for answer, p in want.items():
        assert abs(sweep["patched"][answer][layer] - p) < 1e-5