"""The sweeps command line: output folder checked first, files written, errors one line."""

import json

import numpy as np

from recipes import sweeps
from tracer.testing import save_tiny


def test_each_command_writes_npz_json_and_png(tmp_path, capsys):
    model = str(save_tiny("llama", tmp_path / "m"))
    runs = {
        "sweep": ["sweep", "--base", "The capital of Spain is", "--source", "The capital of Italy is",
                  "--answers", " Rome", " Madrid", "--layers", "0", "1"],
        "causal_trace": ["causal-trace", "--prompt", "The capital of Spain is the city of",
                         "--subject", "Spain", "--answer", " Madrid", "--samples", "2"],
        "path_patch": ["path-patch", "--base", "The capital of Spain is", "--source",
                       "The capital of Italy is", "--answers", " Rome", " Madrid",
                       "--receivers", "head_q.1.2", "final"],
        "attribute": ["attribute", "--base", "The capital of Spain is", "--source",
                      "The capital of Italy is", "--answers", " Rome", "--method", "gradrop"],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        assert sweeps.main(argv + ["--model", model, "--out", str(out)]) == 0
        for ext in ("npz", "json", "png"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
        saved = json.loads((out / f"{name}.json").read_text())
        with np.load(out / f"{name}.npz") as npz:
            np.testing.assert_allclose(npz["values"], np.array(saved["values"], dtype=float))
        assert not (out / ".partial").exists()
    assert "wrote" in capsys.readouterr().out


def test_a_file_as_out_fails_before_any_work(tmp_path, capsys, monkeypatch):
    target = tmp_path / "taken"
    target.write_text("x")
    calls = []
    monkeypatch.setattr(sweeps.tracer, "load", lambda *a, **k: calls.append(1))
    code = sweeps.main(["sweep", "--base", "a b", "--source", "a c", "--answers", " x",
                        "--out", str(target)])
    assert code == 2 and calls == []
    assert "is a file, not a folder" in capsys.readouterr().err
