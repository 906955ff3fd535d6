"""Every script in examples/ runs as a user runs it, on the embedded SmolLM2 (offline), with
small settings where a script has them, and prints what its docstring says it shows."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# script -> (arguments, a line its output must contain)
EXAMPLES = {
    "attribution_capital.py": ([], "estimate"),
    "dataset_ioi.py": (["--pairs", "3", "--layers", "0", "15", "29", "--out", "{tmp}/ioi"], "normalized"),
    "circuit_ioi.py": (["--pairs", "2", "--method", "eap", "--top", "20", "--sizes", "0", "20",
                        "--out", "{tmp}/circuit"], "faithfulness"),
    "das_smollm2.py": (["--layers", "6", "--steps", "2", "--dim", "8"], "held-out IIA"),
    "das_three_sum.py": (["--epochs", "1", "--out", "{tmp}/das"], "held-out IIA"),
    "interchange_winograd.py": ([], "strongest layers"),
    "iti_truthfulness.py": (["--top-k", "4", "--alpha", "5", "--out", "{tmp}/iti"], "prefers the true statement"),
    "patching.py": ([], "Rome"),
    "path_patching_ioi.py": (["--pairs", "1", "--layers", "28", "29", "--out", "{tmp}/ioi"],
                             "heads whose direct path"),
    "pyvene_seeds.py": (["--new-tokens", "6", "--epochs", "1"],
                        ["equal to the two steps by hand", "equal the edit by hand: True", "(4 rows in one call)",
                         "causal-model DAS"]),
    "steering.py": (["--eval-prompts", "2", "--new-tokens", "8"], "perplexity"),
}


def test_every_example_is_listed():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.smollm2
@pytest.mark.parametrize("script", list(EXAMPLES))
def test_example_runs(script, tmp_path):
    args, expected = EXAMPLES[script]
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in [expected] if isinstance(expected, str) else expected:
        assert line in proc.stdout, proc.stdout[-3000:]
