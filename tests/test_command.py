"""The ``interlace`` command: dispatch, seed 002's spellings, help on every option, the
steering steps (fit and save a vector, reuse it, score saved outputs) and the judges."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import command, steering
from recipes.cli import HelpFormatter
from tracer import testing


def test_seed_002_spellings_become_ours():
    argv = ["-method", "logit", "-model", "gpt2", "-intervention_phrase", "San Francisco",
            "-alpha", "-6", "-layer_idx", "18", "--test_clean", "-h", "--out=a_b.json"]
    assert command.normalize(argv) == [
        "--method", "logit", "--model", "openai-community/gpt2", "--intervention-phrase",
        "San Francisco", "--alpha", "-6", "--layer-idx", "18", "--test-clean", "-h", "--out=a_b.json"]


def test_help_lists_every_command_and_unknown_ones_are_refused(capsys):
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in command.COMMANDS)
    assert command.main(["sweeep"]) == 2
    assert "unknown command 'sweeep'" in capsys.readouterr().err


def _parsers(argv):
    """Every argparse parser ``interlace argv`` builds (caught at parse time)."""
    seen = []
    real = argparse.ArgumentParser.parse_known_args  # parse_args calls it too

    def catch(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)
    argparse.ArgumentParser.parse_known_args = catch
    try:
        with pytest.raises(SystemExit):
            command.main(argv)
    finally:
        argparse.ArgumentParser.parse_known_args = real
    out = []
    while seen:
        p = seen.pop()
        out.append(p)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen.extend(action.choices.values())
    return out


@pytest.mark.parametrize("name", list(command.COMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    prefix = ["fit"] if name == "iti" else []
    for p in _parsers([name] + prefix):
        assert p.prog.startswith("interlace"), p.prog
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help"
        assert p.formatter_class is HelpFormatter, p.prog
        text = p.format_help()
        assert "(default: [])" not in text and "(default: None)" not in text, p.prog
        for chunk in text.split("\n  -")[1:]:  # each option's help says its default at most once
            assert " ".join(chunk.split()).count("default") <= 1, (p.prog, chunk)


def test_console_script_is_installed():
    exe = shutil.which("interlace", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . installs the interlace console script"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "causal-trace" in proc.stdout


def test_steer_in_seed_spelling_then_vector_reuse_and_score(tmp_path, capsys):
    folder = testing.save_tiny("llama", tmp_path / "tiny")
    common = ["-model", str(folder), "-intervention_phrase", "Paris", "-layer_idx", "1",
              "-generation_length", "3", "--limit", "2"]
    out = tmp_path / "run"
    assert command.main(common + ["-method", "steering", "-alpha", "2", "--alpha_units", "raw",
                                  "--out", str(out), "--seed", "3", "--dtype", "float32"]) == 0
    saved = json.loads((out / "outputs.json").read_text())
    assert saved["args"]["seed"] == 3 and saved["args"]["dtype"] == "float32"
    assert len(saved["outputs"]) == 2 and {"matched_word", "degenerate"} <= set(saved["scores"])
    vec = tmp_path / "vec"
    assert command.main(["steering-vector", "--model", str(folder), "--intervention-phrase", "Paris",
                         "--layer-idx", "1", "--out", str(vec)]) == 0
    reuse = tmp_path / "reuse"
    assert command.main(["steer"] + common + ["-method", "steering", "-alpha", "2", "--alpha_units",
                                              "raw", "--method-path", str(vec), "--out", str(reuse)]) == 0
    again = json.loads((reuse / "outputs.json").read_text())
    assert again["outputs"] == saved["outputs"]  # same vector, same text
    assert command.main(["steer"] + common + ["-method", "probing", "--method-path", str(vec),
                                              "--out", str(tmp_path / "p")]) == 2
    assert "holds a 'steering' method, not 'probing'" in capsys.readouterr().err
    scores = tmp_path / "scores"
    assert command.main(["eval", str(out), "--out", str(scores)]) == 0
    assert json.loads((scores / "scores.json").read_text())["scores"] == pytest.approx(saved["scores"])
    # seed 002's same inputs on every step: the vector, and eval_outputs.py's inputs on eval
    seed_vec = tmp_path / "seed-vec"
    assert command.main(["steering-vector"] + common + ["-method", "steering", "-alpha", "2",
                                                        "--out", str(seed_vec)]) == 0
    assert command.main(["steering-vector"] + common + ["-method", "logit", "--out", str(seed_vec)]) == 2
    assert "fits the 'steering' method" in capsys.readouterr().err
    assert command.main(["eval", str(out)] + common[:-2] + ["-method", "steering", "-alpha", "2"]) == 0
    assert (out / "scores.json").is_file()  # beside the outputs when no --out is given
    assert command.main(["eval", str(out)] + common[:-2] + ["-method", "logit", "-alpha", "2"]) == 2
    assert "generated with --method 'steering', not 'logit'" in capsys.readouterr().err
    # the seed's spelling on the module the README names
    assert steering.main(["-model", str(folder), "-method", "logit", "-intervention_phrase", "Paris",
                          "-layer_idx", "1", "-generation_length", "2", "--limit", "1", "--test_clean",
                          "--out", str(tmp_path / "m")]) == 0
    # an output path that is a file is refused before any work
    (tmp_path / "file").write_text("x")
    assert command.main(["steer"] + common + ["--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


def test_judge_matches_whole_words_and_flags_degenerate_outputs():
    assert steering.keyword_match("we met in san francisco", "San Francisco") == "San Francisco"
    assert steering.keyword_match(" San San San San", "San Francisco") == "San"
    assert steering.keyword_match("Franciscans and sandals", "San Francisco") is None
    assert steering.degenerate(" San San San San") and steering.degenerate("wis wis wis the")
    assert not steering.degenerate("The city by the bay is foggy")
    # a repetition that names the phrase is no success: the judge can fail
    assert steering.keyword_success(" San San San San San", "San Francisco") == 0.0
    assert steering.keyword_success("We flew to San Francisco on Monday", "San Francisco") == 1.0
