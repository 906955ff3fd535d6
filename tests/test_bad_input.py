"""Bad input, table-driven: each row is one class of mistake, the error class it must raise
and words its message must hold.  Plus interruptions: a killed conversion, a corrupt resume
file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import tracer
from recipes import das, interchange, iti, steering
from tracer import execute, files, plan, resume
from tracer.files import SpecError
from tracer.pyvene import folders
from tracer.interventions import Intervention
from tracer.sites import SiteError

from helpers import encode


def _read(model, **selection):
    """Read resid_post.0 inside a trace with a selection."""
    s = tracer.site(model, "resid_post.0")
    with torch.no_grad(), model.trace(encode(model, ["The cat sat on"])):
        s.read(**selection).save()


def _apply(model, iv):
    with torch.no_grad(), model.trace(encode(model, ["The cat sat on"])):
        iv.apply(model)


def _folder(tmp, config, tensors=None):
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    save_file(tensors or {}, str(tmp / "tensors.safetensors"))
    return tmp


def _entry(**fields):
    return {"format": "interlace.interventions", "version": 2, "model": {}, "interventions": [fields]}


NAN = torch.full((64,), float("nan"))

# (name, call(model, tmp_path), error class, regex the message must match)
ROWS = [
    # sites: types, emptiness, ranges
    ("float layer", lambda m, t: tracer.site(m, "resid_post", layer=1.5), SiteError,
     r"layer of site 'resid_post' must be an integer, got 1.5"),
    ("bool layer", lambda m, t: tracer.site(m, "resid_post", layer=True), SiteError,
     r"must be an integer, got True \(bool\)"),
    ("site name not a string", lambda m, t: tracer.site(m, 3), SiteError, r"must be a string"),
    ("empty rows", lambda m, t: _read(m, rows=[]), SiteError, r"rows at site resid_post.0: an empty list"),
    ("empty heads", lambda m, t: tracer.site(m, "head_q.0")._index(torch.zeros(1, 4, 4, 16), None, [], None),
     SiteError, r"heads at site head_q.0: an empty list selects nothing"),
    ("string positions", lambda m, t: _read(m, positions="3"), SiteError,
     r"must be an integer or a list of integers, got '3'"),
    ("float positions", lambda m, t: _read(m, positions=[1.5]), SiteError, r"must be an integer, got 1.5"),
    ("huge position", lambda m, t: _read(m, positions=[10 ** 30]), SiteError,
     r"position 10{30} out of range at site resid_post.0: the sequence has \d+ tokens"),
    # interventions: finiteness, degenerate directions, shapes
    ("NaN vector", lambda m, t: Intervention("add", "resid_post.0", params={"vector": NAN}), ValueError,
     r"parameter 'vector' contains NaN or infinite values"),
    ("infinite alpha", lambda m, t: Intervention("add", "resid_post.0",
                                                 params={"vector": torch.ones(64), "alpha": float("inf")}),
     ValueError, r"parameter 'alpha' must be finite"),
    ("zero direction", lambda m, t: Intervention("project_out", "resid_post.0",
                                                 params={"direction": torch.zeros(64)}),
     ValueError, r"the direction is zero"),
    ("wrong-shaped vector", lambda m, t: _apply(m, Intervention("add", "resid_post.0",
                                                                params={"vector": torch.ones(32)})),
     SiteError, r"\{'vector': \(32,\)\} do not fit the selection \(1, \d+, 64\) at resid_post.0"),
    # target words
    ("word inside a word", lambda m, t: tracer.tokens.find(m.tokenizer, "Is there a cat", "he"),
     ValueError, r"'he' does not occur .* only inside a longer word"),
    ("repeated word", lambda m, t: tracer.tokens.find(m.tokenizer, "the cat and the dog", "the"),
     ValueError, r"occurs 2 times .* choose one with occurrence=0..1"),
    ("occurrence out of range", lambda m, t: tracer.tokens.find(m.tokenizer, "the cat", "cat", 3),
     ValueError, r"occurrence 3 does not exist \(valid: 0..0"),
    # recipes, before any work
    ("sweep position past the end", lambda m, t: interchange.sweep(m, "The cat sat", "The dog sat", [" a"],
                                                                   positions=[9], progress=False),
     ValueError, r"positions: 9 is out of range; there are \d+ tokens in the base prompt"),
    ("no answers", lambda m, t: interchange.sweep(m, "The cat", "The dog", [], progress=False),
     ValueError, r"answers must be a non-empty list"),
    ("answer id outside the vocabulary", lambda m, t: interchange.sweep(m, "The cat", "The dog", [10 ** 6],
                                                                        progress=False),
     ValueError, r"answer token id must be >= 0 and <= 511"),
    ("empty layers", lambda m, t: interchange.sweep(m, "The cat", "The dog", [" a"], layers=[],
                                                    progress=False),
     ValueError, r"layers is empty"),
    ("causal trace without samples", lambda m, t: interchange.causal_trace(m, "The cat sat", "cat", " on",
                                                                           samples=0, progress=False),
     ValueError, r"samples must be >= 1"),
    ("prompt not a string", lambda m, t: interchange.InterchangeInterventionConfig([1, "x"], ["a", "b"]),
     ValueError, r"sents\[0\] must be a non-empty string, got 1"),
    ("empty generation prompt", lambda m, t: tracer.generation.generate(m, [""], [], 2),
     ValueError, r"prompts\[0\] must be a non-empty string"),
    ("empty steering phrase", lambda m, t: steering.keyword_success("San Francisco", ""),
     ValueError, r"intervention phrase must be a non-empty string"),
    ("ITI top_k 0", lambda m, t: iti.fit(m, top_k=0), ValueError, r"top_k must be between 1 and 8"),
    ("DAS layer out of range", lambda m, t: das.das(das.SumMLP(8), layer=5), ValueError,
     r"layer must be >= 0 and <= 1, got 5"),
    ("DAS dim out of range", lambda m, t: das.das(das.SumMLP(8), dim=9), ValueError,
     r"dim \(rotated dims interchanged\) must be >= 1 and <= 8, got 9"),
    # files: foreign, corrupt, outside the folder, oversized, incomplete
    ("negative version", lambda m, t: files.load(_folder(t, {"format": "interlace.interventions",
                                                             "version": -7})),
     SpecError, r"has version -7; this Interlace reads versions up to 3"),
    ("deeply nested config", lambda m, t: files.load(_folder(t, "[" * 100000 + "]" * 100000)),
     SpecError, r"nested too deeply"),
    ("add without its vector", lambda m, t: files.load(_folder(t, _entry(kind="add", site="resid_post.0"))),
     SpecError, r"needs \['vector'\]"),
    ("NaN in a loaded vector", lambda m, t: files.load(_folder(
        t, _entry(kind="add", site="resid_post.0", params={"vector": {"tensor": "v"}}), {"v": NAN})),
     SpecError, r"contains NaN"),
    ("huge embed_dim", lambda m, t: files.load(_folder(
        t, _entry(site="resid_post.0", **{"class": "RotatedSpaceIntervention"}, init={"embed_dim": 10 ** 7}))),
     SpecError, r"embed_dim=10000000 is not a width between 1 and 65536"),
    ("embed_dim against the model", lambda m, t: files.load(_folder(
        t, _entry(site="resid_post.0", **{"class": "RotatedSpaceIntervention"}, init={"embed_dim": 4096})), m),
     SpecError, r"embed_dim 4096 does not fit a model 64 wide"),
    ("0-d vector in a folder", lambda m, t: files.load(_folder(
        t, _entry(kind="add", site="resid_post.0", params={"vector": {"tensor": "v"}}), {"v": torch.tensor(1.0)})),
     SpecError, r"tensor 'vector' is a single number \(0-d\)"),
    ("boolean heads in a folder", lambda m, t: files.load(_folder(
        t, _entry(kind="zero", site="head_out.0", heads=[True]))), SpecError,
     r"heads must be an integer, got True \(bool\)"),
    ("pyvene key outside the folder", lambda m, t: folders.from_pyvene(_pyvene(t), m), SpecError,
     r"points outside the folder"),
    ("front-end folder without components", lambda m, t: tracer.IntervenableModel.load(_folder(
        t, {**_entry(kind="zero", site="resid_post.0"), "meta": {"pyvene": [{"unit": "pos"}]}}), m),
     SpecError, r"must list one representation \(with a 'component' and its 'key'\) per intervention"),
    ("truncated GGUF", lambda m, t: _truncated_gguf(t), tracer.ModelLoadError,
     r"is not a readable GGUF model .* may be truncated"),
    # the plain site functions check like the record, before the model runs
    ("NaN vector to add", lambda m, t: _plain(m, lambda s: tracer.interventions.add(s, NAN)), ValueError,
     r"vector at site resid_post.0 contains NaN"),
    ("infinite scale", lambda m, t: _plain(m, lambda s: tracer.interventions.scale(s, float("inf"))),
     ValueError, r"factor at site resid_post.0 must be finite"),
    ("zero direction", lambda m, t: _plain(m, lambda s: tracer.interventions.project_out(s, torch.zeros(64))),
     SiteError, r"direction at site resid_post.0 is zero"),
    ("source of the wrong width", lambda m, t: _plain(m, lambda s: tracer.interventions.interchange(
        s, torch.ones(1, 1, 32), positions=[-1])), SiteError,
     r"source of shape \(1, 1, 32\) does not fit site resid_post.0, whose values are 64 wide"),
    ("head vector of the model's width", lambda m, t: _plain(m, lambda s: tracer.interventions.add(
        s, torch.ones(64), heads=[1]), "head_out.0"), SiteError,
     r"vector of shape \(64,\) does not fit site head_out.0, whose values are 16 wide \(a selection "
     r"is \(rows, positions, heads, 16\)\)"),
    # remote, without a server
    ("bad NDIF timeout", lambda m, t: _env_timeout("abc"), ValueError,
     r"INTERLACE_NDIF_TIMEOUT must be a number of seconds, got 'abc'"),
    ("no answer in time", lambda m, t: execute._bounded(time.sleep, (5,), {}, 0.2), execute.RemoteError,
     r"gave no answer within 0.2 s"),
]


def _plain(model, fn, name="resid_post.0"):
    """A plain site function inside a trace; the model's output is never read."""
    s = tracer.site(model, name)
    with torch.no_grad(), model.trace(encode(model, ["The cat sat on"])):
        fn(s)


def _pyvene(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps({
        "representations": [[1, "mlp_output"]], "sorted_keys": ["../../../outside"],
        "intervention_types": ["<class 'pyvene.models.interventions.AdditionIntervention'>"]}))
    return tmp


def _truncated_gguf(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "cut.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 20)
    os.environ["INTERLACE_CACHE"] = str(tmp / "cache")
    try:
        tracer.load(str(path))
    finally:
        del os.environ["INTERLACE_CACHE"]


def _env_timeout(value):
    os.environ["INTERLACE_NDIF_TIMEOUT"] = value
    try:
        execute.timeout_seconds()
    finally:
        del os.environ["INTERLACE_NDIF_TIMEOUT"]


@pytest.mark.parametrize("name, call, error, words", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_clear_error(tiny_models, tmp_path, name, call, error, words):
    with pytest.raises(error, match=words):
        call(tiny_models["llama"], tmp_path / "case")


def test_remote_failures_are_named():
    reconnecting = execute.explain(RuntimeError("compute backend is reconnecting"), "http://h")
    assert isinstance(reconnecting, execute.RemoteTransient) and "passing state" in str(reconnecting)
    dropped = execute.explain(ConnectionResetError("Connection reset by peer"), "http://h")
    assert "connection to the NDIF server at http://h dropped" in str(dropped)
    refused = execute.explain(ConnectionRefusedError("Connection refused"), "http://h")
    assert "unreachable" in str(refused)


def test_passing_server_states_are_retried(monkeypatch):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("compute backend is reconnecting")
        return "done"
    monkeypatch.setattr(execute, "register", lambda: None)
    monkeypatch.setattr(execute, "check_versions", lambda force=False: None)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert execute.call(flaky) == "done" and len(calls) == 3


def test_clis_print_one_line_and_exit_2(tiny_models, tmp_path, capsys):
    folder = tracer.testing.save_tiny(tiny_models["llama"], tmp_path / "model")
    capsys.readouterr()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    rc = interchange.main(["--model", str(folder), "--sents", "The cat sat", "The dog sat",
                           "--conts", "on", "in", "--targets", "cat", "dog", "--out", str(a_file)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --out") and "is a file" in err
    assert len(err.strip().splitlines()) == 1
    assert iti.main(["fit", "--model", str(folder), "--top-k", "0", "--out", str(tmp_path / "iti")]) == 2
    assert "error: top_k must be between 1 and 8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top_k must be between"):
        iti.main(["fit", "--model", str(folder), "--top-k", "0", "--out", str(tmp_path / "iti"), "--debug"])
    assert steering.main(["--model", str(folder), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert steering.main(["--model", str(folder), "--out", str(tmp_path / "steer")]) == 2
    assert "the model has 2 layers" in capsys.readouterr().err  # --layer-idx 8 by default
    assert das.main(["--layers", "5", "--epochs", "1"]) == 2
    assert "error: layers: '5' is outside 0-1" in capsys.readouterr().err


def _spoil(path, how, key):
    """A resume file at ``path`` spoiled one way: garbage, truncated, a value edited by hand
    (its checksum kept), or a valid file of another plan."""
    import numpy as np

    good = {"0.n": np.array(1), "0.0": np.zeros(1, dtype=np.float32)}
    if how == "garbage":
        path.write_bytes(b"not a zip file")
    elif how == "truncated":
        resume.save_npz(path, good, key)
        path.write_bytes(path.read_bytes()[:60])
    elif how == "edited":
        resume.save_npz(path, good, key)
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in saved.files}
        arrays["0.0"] = np.ones(1, dtype=np.float32)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        resume.save_npz(path, good, "another plan")


@pytest.mark.parametrize("how, why", [("garbage", ""), ("truncated", ""),
                                      ("edited", "do not match their checksum"),
                                      ("other", "written for another plan")])
def test_a_corrupt_resume_file_is_discarded_and_recomputed(tiny_models, tmp_path, monkeypatch, how, why):
    """The request-splitting path with a local stand-in for the server: a spoiled result file
    left where the first request's result goes is warned about by name, recomputed (never
    used, never a BadZipFile traceback), then removed."""
    model = tiny_models["llama"]
    tok = model.tokenizer
    rows = [tok("The capital of France is")["input_ids"], tok("The capital of Italy is")["input_ids"]]
    groups = [plan.Group(rows, [plan.copy(f"resid_post.{layer}", 0, 1, [3], [3])],
                         [plan.Logprobs(0, [-1], [5])]) for layer in (0, 1)]
    monkeypatch.setattr(execute, "register", lambda: None)
    monkeypatch.setattr(execute, "check_versions", lambda force=False: None)
    monkeypatch.setattr(execute, "_session", lambda m, work: [execute._trace(m, b) for b in work])
    work = [plan.compile_batch(model, [g])[0] for g in groups]
    keep = tmp_path / "keep"
    keep.mkdir()
    key = resume.request_key(model, work[:1])
    first = keep / f"{key}.npz"
    _spoil(first, how, key)
    with pytest.warns(UserWarning, match=f"{first.name} is not usable \\(.*{why}.*\\); it is discarded"):
        got = execute.run(model, groups, max_batch=2, remote=True, max_request_rows=2,
                          resume_dir=str(keep), progress=False)
    want = execute.run(model, groups, max_batch=2, progress=False)
    assert all(torch.allclose(a[0], b[0]) for a, b in zip(got, want))
    assert not keep.exists()  # complete: the partial results and their folder are gone


@pytest.mark.smollm2
def test_a_killed_conversion_leaves_nothing_behind_after_the_next_run(tmp_path):
    """SIGTERM a GGUF conversion while it writes; the next run removes its temporary folder."""
    env = {**os.environ, "INTERLACE_CACHE": str(tmp_path)}
    code = "import tracer.models as m; m.converted_folder(m.embedded_gguf())"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    models = tmp_path / "models"
    deadline = time.time() + 120
    while time.time() < deadline and not (models.exists() and any(models.glob(".*"))):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    stale = list(models.glob(".*"))
    assert stale and not [p for p in models.iterdir() if not p.name.startswith(".")]  # not finished
    files.remove_dead_temps(models)  # what the next conversion does first
    assert not list(models.glob(".*"))


def test_an_interrupted_local_sweep_resumes_from_its_finished_batches(tiny_models, tmp_path, monkeypatch):
    """Ctrl-C after two patched batches: they are kept; the rerun computes only the rest (and
    the reference run the patched batches start from) and equals an uninterrupted run;
    nothing is left behind."""
    model = tiny_models["gpt2"]
    args = (model, "The capital of Spain is", "The capital of Italy is", [" Rome", " Madrid"])
    real, calls = execute._trace, []
    monkeypatch.setattr(execute, "_trace", lambda m, b, within=None: (calls.append(1), real(m, b, within))[1])
    want = interchange.sweep(*args, max_batch=2, progress=False)
    total = len(calls)  # the reference run, then one batch per layer and pair of positions
    assert total >= 5
    calls.clear()

    def interrupted(m, batch, within=None):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(m, batch, within)
    monkeypatch.setattr(execute, "_trace", interrupted)
    keep = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        interchange.sweep(*args, max_batch=2, progress=False, resume_dir=str(keep))
    assert len(list(keep.glob("*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(execute, "_trace", lambda m, b, within=None: (calls.append(1), real(m, b, within))[1])
    got = interchange.sweep(*args, max_batch=2, progress=False, resume_dir=str(keep))
    assert len(calls) == total - 2 and not keep.exists()
    torch.testing.assert_close(torch.tensor(got.values), torch.tensor(want.values), rtol=0, atol=1e-6)
    assert got.baselines == pytest.approx(want.baselines)


@pytest.mark.smollm2
def test_a_killed_sweep_resumes_from_its_finished_batches(smollm2, tmp_path):
    """SIGTERM a local SmolLM2 sweep once its first batches are saved; the rerun computes
    only what is missing and equals an uninterrupted run."""
    keep = tmp_path / "partial"
    args = ("The capital of Spain is", "The capital of Italy is", [" Rome", " Madrid"])
    code = (f"import tracer; from recipes import interchange; "
            f"interchange.sweep(tracer.load('smollm2'), *{args!r}, max_batch=4, progress=False, "
            f"resume_dir={str(keep)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 300
    # whole files only: a write in progress is a hidden temporary, and counting it stopped
    # the run one file early on a busy machine
    while time.time() < deadline and len(list(keep.glob("[!.]*.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    saved = len(list(keep.glob("[!.]*.npz")))  # whole files; a cut write stays a hidden temp
    assert saved >= 3
    real, calls = execute._trace, []
    try:
        execute._trace = lambda m, b, within=None: (calls.append(1), real(m, b, within))[1]
        got = interchange.sweep(smollm2, *args, max_batch=4, progress=False, resume_dir=str(keep))
        resumed = len(calls)
        calls.clear()
        want = interchange.sweep(smollm2, *args, max_batch=4, progress=False)
    finally:
        execute._trace = real
    # the uninterrupted run: the reference run, then every batch; the rerun: the reference
    # run and the batches not saved
    assert resumed == len(calls) - saved and not keep.exists()
    torch.testing.assert_close(torch.tensor(got.values), torch.tensor(want.values), rtol=0, atol=1e-6)


def test_the_version_check_asks_every_host(monkeypatch):
    """nnsight keeps the first server's environment for the process; each host is asked
    itself: a second host with another nnsight is refused."""
    import nnsight

    local = nnsight.ndif.get_local_env()
    envs = {"http://a": local, "http://b": {**local, "packages": {**local["packages"], "nnsight": "0.0.1"}}}
    monkeypatch.setattr(nnsight.ndif, "_get", lambda path, **kw: envs[nnsight.CONFIG.API.HOST])
    monkeypatch.setattr(nnsight.ndif, "_REMOTE_ENV", None)
    monkeypatch.setattr(execute, "_CHECKED", set())
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "http://a")
    execute.check_versions()
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "http://b")
    with pytest.raises(execute.RemoteError, match="nnsight .* here vs 0.0.1 on the server"):
        execute.check_versions()


def _sae_folder(folder, hidden=64, width=32, nan=False, truncate=False):
    from recipes import lens

    w_enc = torch.randn(hidden, width)
    if nan:
        w_enc[0, 0] = float("nan")
    sae = lens.SAE(0, w_enc, torch.zeros(width), torch.randn(width, hidden), torch.zeros(hidden))
    lens.SAE.save(sae, folder)  # save writes what it is given, NaN included
    if truncate:
        path = folder / "sae_weights.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    return folder


@pytest.mark.parametrize("case", ["nan", "truncated", "width"])
def test_a_bad_sae_folder_is_one_clear_error(tiny_models, tmp_path, capsys, case):
    """steer with --method-path at an SAE folder with NaN weights, cut short, or made for
    another width: one line naming what is wrong, before any generation."""
    model_dir = tracer.testing.save_tiny(tiny_models["llama"], tmp_path / "model")
    sae = _sae_folder(tmp_path / "sae", hidden=32 if case == "width" else 64, nan=case == "nan",
                      truncate=case == "truncated")
    capsys.readouterr()
    rc = steering.main(["--model", str(model_dir), "--method", "sae", "--method-path", str(sae),
                        "--layer-idx", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    words = {"nan": "W_enc contains NaN", "truncated": "or its files are cut short or corrupt",
             "width": "the SAE reads 32-wide activations, but the model's residual stream is 64 wide"}[case]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and words in errors[0], err


def test_cli_options_are_checked_before_any_work(tiny_models, tmp_path, capsys):
    """Counts, devices, phrases, heads and saved outputs that cannot work: each one line and
    exit 2 (the model folder is never loaded for the option checks)."""
    from recipes import sweeps

    model_dir = str(tracer.testing.save_tiny(tiny_models["llama"], tmp_path / "model"))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "outputs.json").write_text(json.dumps({"outputs": [1, {"prompt": "a"}], "args": {}}))
    pair = ["--base", "The cat sat", "--source", "The dog sat", "--answers", " on"]
    cases = [
        (sweeps.main, ["sweep", "--model", model_dir, *pair, "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
        (sweeps.main, ["sweep", "--model", model_dir, *pair, "--limit", "-3"], "--limit must be >= 1, got -3"),
        (das.main, ["--epochs", "-1"], "--epochs must be >= 1, got -1"),
        (steering.main, ["--model", model_dir, "--intervention-phrase", " ", "--out", str(tmp_path / "s")],
         "--intervention-phrase must be a non-empty string"),
        (sweeps.main, ["causal-trace", "--model", model_dir, "--prompt", "The cat sat", "--subject", "cat",
                       "--answer", " on", "--samples", "1000000"], "--samples must be >= 1 and <= 1000"),
        (sweeps.main, ["sweep", "--model", model_dir, *pair, "--device", "bogus"], "--device 'bogus' is not a device"),
        (interchange.main, ["--model", model_dir, "--sents", "The cat sat", "The dog sat", "--conts", " on", " in",
                            "--targets", "cat", "dog", "--heads", "x", "--out", str(tmp_path / "i")],
         "--heads takes 'each' or head indices"),
        (interchange.main, ["--model", model_dir, "--sents", "The cat sat", "The dog sat", "--conts", " on", " in",
                            "--targets", "cat", "dog", "--heads", "99", "--out", str(tmp_path / "i")],
         "head 99 out of range"),
        (interchange.main, ["--model", model_dir, "--sents", "The cat sat", "The dog sat", "--conts", " on", " on",
                            "--targets", "cat", "dog", "--out", str(tmp_path / "i")], "continuations must differ"),
        (steering.main, ["score", str(garbage), "--out", str(tmp_path / "scores")],
         "'outputs' must be a non-empty list of records with a 'prompt' and an 'output' string"),
    ]
    for main, argv, words in cases:
        capsys.readouterr()
        rc = main(argv)
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert rc == 2 and len(errors) == 1 and words in errors[0], (argv, errors)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_prompt_past_the_models_positions_is_refused(tiny_models, arch):
    """GPT-2 used to fail on an index, Llama to run silently past its learned positions."""
    long = " ".join(["cat"] * 300)  # > 256 positions of the tiny models
    with pytest.raises(ValueError, match="tokens long, but this model has 256 positions"):
        interchange.sweep(tiny_models[arch], long, long, [" cat"], layers=[0], progress=False)
    with pytest.raises(ValueError, match="new tokens is .* tokens long, but this model has 256 positions"):
        tracer.generation.generate(tiny_models[arch], ["The cat sat"], [], max_new_tokens=300)


def test_numpy_integers_are_positions_and_booleans_are_not(tiny_models):
    import numpy as np

    model = tiny_models["llama"]
    s = tracer.site(model, "resid_post.0")
    with torch.no_grad(), model.trace(encode(model, ["The cat sat on"])):
        a = s.read(positions=[np.int64(1), np.int32(2)]).save()
        b = s.read(positions=[1, 2]).save()
    assert torch.equal(a, b)
    for bad in ([True], [np.bool_(True)]):
        with pytest.raises((SiteError, ValueError), match="integer"):
            Intervention("zero", "head_out.0", None, bad)
        with pytest.raises((SiteError, ValueError), match="integer"):
            Intervention("zero", "resid_post.0", bad)
