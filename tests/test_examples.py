"""Every script in examples/ runs as a user runs it, on the embedded SmolLM2 (offline), with
small settings where a script has them, and prints what its docstring says it shows.  Every
picture a script draws is checked for readability as it is written (tests/picture_probe.py:
nothing cut, labels present, colours that vary with the values) and its rows carry the true
labels of what was run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# script -> (arguments, a line its output must contain)
EXAMPLES = {
    "attribution_capital.py": (["--out", "{tmp}/attr"], "estimate"),
    "dataset_ioi.py": (["--pairs", "3", "--layers", "0", "15", "29", "--out", "{tmp}/ioi"], "normalized"),
    "circuit_ioi.py": (["--pairs", "2", "--method", "eap", "--top", "20", "--sizes", "0", "20",
                        "--out", "{tmp}/circuit"], "faithfulness"),
    "das_smollm2.py": (["--layers", "6", "--steps", "2", "--dim", "8"], "held-out IIA"),
    "das_three_sum.py": (["--epochs", "1", "--out", "{tmp}/das"], "held-out IIA"),
    "interchange_winograd.py": (["--out", "{tmp}/winograd"], "strongest layers"),
    "iti_truthfulness.py": (["--top-k", "4", "--alpha", "5", "--pairs", "80", "--out", "{tmp}/iti"],
                            "prefers the true statement"),
    "patching.py": ([], "Rome"),
    "path_patching_ioi.py": (["--pairs", "1", "--layers", "28", "29", "--out", "{tmp}/ioi"],
                             "heads whose direct path"),
    "pyvene_seeds.py": (["--new-tokens", "6", "--epochs", "1"],
                        ["equal to the two steps by hand", "equal the edit by hand: True", "(4 rows in one call)",
                         "causal-model DAS"]),
    "steering.py": (["--eval-prompts", "2", "--new-tokens", "8"], "perplexity"),
}

LONGEST = {"pyvene_seeds.py", "das_smollm2.py", "iti_truthfulness.py", "steering.py"}
LAYERS = [str(layer) for layer in range(30)]
# script -> {picture file name: its rows (heatmap) as run, or None for a plot without rows}
PICTURES = {
    "attribution_capital.py": {"attribution.png": LAYERS},
    "circuit_ioi.py": {"circuit.png": None, "faithfulness_curve.png": None},
    "das_three_sum.py": {"das.png": ["layer 0"]},
    "dataset_ioi.py": {"ioi_roles.png": ["0", "15", "29"], "ioi_roles_normalized.png": ["0", "15", "29"]},
    "interchange_winograd.py": {"heatmap_lay+qry+key+val.png": LAYERS},
    "iti_truthfulness.py": {"probe_accuracy.png": LAYERS},
    "path_patching_ioi.py": {"path_patching.png": ["28", "29"]},
    "steering.py": {"success_vs_perplexity.png": None},
}


def test_every_example_is_listed():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


def _run(script, folder):
    """One example as a user runs it (its own process), under the picture probe."""
    folder.mkdir(parents=True, exist_ok=True)
    args = [a.format(tmp=folder) for a in EXAMPLES[script][0]]
    report = folder / "pictures.json"
    # two examples run at once (below), each on one core of the machine's two
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "picture_probe.py"), str(report),
                           str(ROOT / "examples" / script), *args], cwd=folder,
                          capture_output=True, text=True, timeout=900, env=env)
    return proc, report


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """The selected examples, run two at a time: much of a run is starting Python and
    loading the model, which a second run overlaps."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = [item.callspec.params["script"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_example_runs"]
    chosen.sort(key=lambda s: s not in LONGEST)  # the longest first: the pair ends together
    base = tmp_path_factory.mktemp("examples")
    with ThreadPoolExecutor(2) as pool:
        done = {s: pool.submit(_run, s, base / s.removesuffix(".py")) for s in chosen}
        return {s: f.result() for s, f in done.items()}


@pytest.mark.smollm2
@pytest.mark.parametrize("script", list(EXAMPLES))
def test_example_runs(script, runs):
    proc, report = runs[script]
    expected = EXAMPLES[script][1]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in [expected] if isinstance(expected, str) else expected:
        assert line in proc.stdout, proc.stdout[-3000:]
    drawn = json.loads(report.read_text())
    for picture in drawn:
        assert not picture["problems"], picture
    by_name = {}
    for picture in drawn:
        by_name.setdefault(os.path.basename(picture["path"]), picture)
    want = PICTURES.get(script, {})
    assert set(want) <= set(by_name), (sorted(by_name), sorted(want))
    for name, rows in want.items():
        if rows is not None:
            assert by_name[name]["rows"] == rows, (name, by_name[name]["rows"])
