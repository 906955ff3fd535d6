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


def test_data_files_drive_every_command(tmp_path, capsys):
    import csv

    model = str(save_tiny("llama", tmp_path / "m"))
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clean", "corrupt", "good", "bad", "subject", "source_subject"])
        w.writerow(["The capital of Spain is", "The capital of Italy is", " Madrid", " Rome", "Spain", "Italy"])
        w.writerow(["The capital of France is", "The capital of Italy is", " Paris", " Rome", "France", "Italy"])
    facts = tmp_path / "facts.jsonl"
    facts.write_text('{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "answer": " Paris"}\n'
                     '{"prompt": "Big Ben is in", "subject": "Big Ben", "answer": " London"}\n')
    data = ["--data", str(pairs), "--base-col", "clean", "--source-col", "corrupt",
            "--answers-col", "good", "bad"]
    runs = {
        "sweep": ["sweep", *data, "--role-col", "subject=subject", "--role", "end=-1",
                  "--metric", "logit_diff", "--layers", "0"],
        "attribute": ["attribute", *data, "--role-col", "subject=subject", "--role", "end=-1"],
        "path_patch": ["path-patch", *data, "--receivers", "final"],
        "causal_trace": ["causal-trace", "--data", str(facts), "--samples", "2"],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        assert sweeps.main(argv + ["--model", model, "--out", str(out)]) == 0, capsys.readouterr().err
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["n_prompts"] == 2 and "spread" in saved
        with np.load(out / f"{name}.npz") as npz:
            assert npz["per_prompt"].shape[0] == 2
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert sweep["labels"]["role"] == ["subject", "end"] and sweep["normalized"]["clean"] == "source"
    assert (tmp_path / "sweep" / "sweep_normalized.png").stat().st_size > 0


def test_a_missing_data_file_or_column_is_one_line(tmp_path, capsys):
    assert sweeps.main(["sweep", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "no such data file" in capsys.readouterr().err
    f = tmp_path / "d.csv"
    f.write_text("base,source\nThe cat,The dog\n")
    assert sweeps.main(["sweep", "--data", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "pair 0 has no answers" in capsys.readouterr().err
    assert sweeps.main(["sweep", "--out", str(tmp_path / "o")]) == 2
    assert "needs --base, --source and --answers, or --data" in capsys.readouterr().err
