"""End to end on the embedded SmolLM2-135M-Instruct."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tracer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from patching import layer_sweep  # noqa: E402

from helpers import subject_patch_probs  # noqa: E402

pytestmark = pytest.mark.smollm2

BASE, SOURCE = "The capital of France is", "The capital of Italy is"


def test_paris_is_the_top_token(smollm2):
    with torch.no_grad(), smollm2.trace(BASE):
        top = smollm2.output.logits[0, -1].argmax().save()
    assert smollm2.tokenizer.decode([int(top)]) == " Paris"


@pytest.fixture(scope="module")
def sweep(smollm2):
    return layer_sweep(smollm2, BASE, SOURCE, " France", [" Paris", " Rome"])


def test_subject_patch_moves_paris_to_rome_early_not_late(sweep):
    clean, patched = sweep["clean"], sweep["patched"]
    n = len(sweep["layers"])
    for layer in (0, 3, 8):  # early: the subject token still carries the country
        assert patched[" Rome"][layer] > clean[" Rome"] + 0.2
        assert patched[" Paris"][layer] < clean[" Paris"] - 0.4
        assert patched[" Rome"][layer] > patched[" Paris"][layer]
    for layer in (n - 3, n - 2, n - 1):  # late: the answer has moved to the last token
        assert abs(patched[" Paris"][layer] - clean[" Paris"]) < 0.05
        assert patched[" Rome"][layer] < 0.05


@pytest.mark.parametrize("layer", [4, 26])
def test_batched_sweep_row_equals_a_plain_hook_patch(smollm2, sweep, layer):
    """Row L of the one-batch sweep equals a single plain-hook patch at layer L."""
    want = subject_patch_probs(smollm2, BASE, SOURCE, " France", layer, [" Paris", " Rome"])
    for answer, p in want.items():
        assert abs(sweep["patched"][answer][layer] - p) < 1e-5


def test_conversion_is_safe_when_two_processes_race(tmp_path):
    """Two processes convert the GGUF into an empty cache at once; both get a good folder."""
    env = {**os.environ, "INTERLACE_CACHE": str(tmp_path)}
    code = ("from tracer import models; "
            "print(models.converted_folder(models.embedded_gguf()))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    folders = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    model = tracer.load(str(folder))
    assert model.config.num_hidden_layers == 30
