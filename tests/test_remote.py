"""Remote execution against a real NDIF server started here (``make test-remote``).

The fixture installs, starts and deploys the server with ``../shared/ndif-local`` (its own
venv, without Interlace: what runs there was shipped by value).  Ray advertises addresses
only inside network namespace ``ndiflab``, so each client runs there as a subprocess and
prints JSON.  The import-whitelist and unreachable-server tests need no server.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tracer
from tracer import execute as remote

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT.parent / "shared" / "ndif-local"
LAB = Path(os.environ.get("NDIF_LAB", "/tmp/interlace-ndif"))
HOST = "http://127.0.0.1:8001"


def _sh(*cmd, timeout=600):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((LAB / "logs").glob("*.log"))) \
            if (LAB / "logs").exists() else ""
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}{logs}")
    return proc.stdout


def _match_server_versions() -> None:
    """The server's transformers as the client's: install.sh keeps any version >= 5.15 it
    installed before, so a client venv made later (a newer release) would be refused."""
    import transformers

    server = LAB / "venv" / "bin" / "python"
    got = subprocess.run([str(server), "-c", "import transformers; print(transformers.__version__)"],
                         capture_output=True, text=True).stdout.strip()
    if got != transformers.__version__:
        _sh(str(LAB / "venv" / "bin" / "pip"), "install", "-q", f"transformers=={transformers.__version__}",
            timeout=900)


@pytest.fixture(scope="session")
def ndif(tmp_path_factory):
    """A running local NDIF with a tiny random Llama deployed; yields its model folder."""
    if not SCRIPTS.is_dir():
        pytest.fail(f"the NDIF scripts are missing: expected {SCRIPTS}")
    _sh("bash", str(SCRIPTS / "install.sh"), timeout=900)
    _match_server_versions()
    # always a fresh server: a leftover one may hold other deployments on its one GPU slot
    subprocess.run(["bash", str(SCRIPTS / "stop.sh")], capture_output=True)
    _sh("bash", str(SCRIPTS / "start.sh"), timeout=300)
    folder = LAB / "models" / "tiny-llama"
    if not (folder / "config.json").exists():
        model = tracer.testing.tiny("llama")
        tracer.testing.save_tiny(model, folder)
    _sh("bash", str(SCRIPTS / "deploy.sh"), str(folder), timeout=300)
    yield folder
    subprocess.run(["bash", str(SCRIPTS / "stop.sh")], capture_output=True)


def _client(code: str) -> dict:
    """Run client code inside the namespace; it must print one JSON line last."""
    script = "import json, torch, nnsight, numpy as np, tracer\n" \
             f"tracer.execute.configure({HOST!r})\nnnsight.CONFIG.APP.REMOTE_LOGGING = False\n" \
             + textwrap.dedent(code)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)  # a file, not -c: nnsight reads trace bodies from their source
    proc = subprocess.run(["ip", "netns", "exec", "ndiflab", sys.executable, f.name],
                          capture_output=True, text=True, timeout=600, cwd="/")
    os.unlink(f.name)
    if proc.returncode != 0:
        pytest.fail(f"client failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _requests() -> int:
    text = (LAB / "logs" / "api.log").read_text()
    return len(set(re.findall(r"request_id=(\w+) stage=received", text)))


def _new_requests(before: int, expected: int) -> int:
    """Requests the server logged since ``before``: the API's log can lag the client, so wait
    for ``expected`` (20 s at most), then a little longer for any extra one."""
    import time

    deadline = time.time() + 20
    while _requests() - before < expected and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    return _requests() - before


@pytest.mark.remote
def test_server_cannot_import_interlace(ndif):
    proc = subprocess.run([str(LAB / "venv" / "bin" / "python"), "-c", "import tracer"],
                          capture_output=True, text=True, cwd=str(LAB))
    assert proc.returncode != 0 and "No module named 'tracer'" in proc.stderr


@pytest.mark.remote
def test_interchange_sweep_remote_equals_local_in_one_request(ndif):
    before = _requests()
    out = _client(f"""
        from recipes import interchange
        path = {str(ndif)!r}
        cfg = interchange.InterchangeInterventionConfig(["The capital of France is",
                                                         "The capital of Italy is"], ["Paris", "Rome"])
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load(path, remote=remote)
            ii = interchange.InterchangeIntervention(model, cfg)
            out = ii.run(["France", "Italy"], ["lay", "qry", "key", "val", "out"], heads="each",
                         max_batch=16, remote=remote, progress=False)
            res[name] = {{k: v.tolist() for k, v in out.items()}}
        print(json.dumps(res))
    """)
    assert _new_requests(before, 1) == 1  # 9 groups x 4 rows in 3 batches: still one request
    assert out["local"].keys() == out["remote"].keys()
    for key in out["local"]:
        assert torch.allclose(torch.tensor(out["local"][key]), torch.tensor(out["remote"][key]),
                              rtol=0, atol=1e-5), key


@pytest.mark.remote
def test_multi_token_continuations_branch_on_the_server_in_one_request(ndif):
    """Multi-token continuations: each batch's prompts run once there (tracer.branch's
    prefix pass, its KV cache kept on the server) and every continuation from it; equal to
    the local full recomputation, one request."""
    before = _requests()
    out = _client(f"""
        from recipes import interchange
        from tracer import reuse
        from tracer.costs import Costs
        reuse.COSTS = {{"cpu": Costs(0.0, 0.0, 1.0), "cuda": Costs(0.0, 0.0, 1.0)}}  # branch all
        path = {str(ndif)!r}
        cfg = interchange.InterchangeInterventionConfig(["The capital of France is a city",
                                                         "The capital of Italy is a city"],
                                                        ["Paris", "Rome and the", "the sun is"])
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load(path, remote=remote)
            ii = interchange.InterchangeIntervention(model, cfg)
            groups, _ = ii.plan(["France", "Italy"], ["lay", "qry"], heads="each")
            if remote:
                compiled = reuse.compile_plan(model, reuse.plan(model, groups), 16)
                res["branched"] = sum(b.prefix is not None for _, b, _ in compiled.cells)
            got = tracer.execute.run(model, groups, max_batch=16, remote=remote, progress=False,
                                     exact_reuse=None if remote else False)
            res[name] = [[v.tolist() for v in g] for g in got]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 1) == 1
    assert out["branched"] > 0
    for a, b in zip(out["local"], out["remote"], strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.allclose(torch.tensor(x), torch.tensor(y), rtol=0, atol=1e-5)


@pytest.mark.remote
def test_sweep_and_causal_trace_remote_equal_local_one_request_each(ndif):
    before = _requests()
    out = _client(f"""
        import os, tempfile
        from recipes import interchange, plotting
        tmp = tempfile.mkdtemp()
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            sweep = interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                                      [" Rome", " Madrid"], metric="logit_diff", remote=remote,
                                      layers=[1], progress=False)
            trace = interchange.causal_trace(model, "The Eiffel Tower is in Paris", "Eiffel Tower",
                                             " Paris", noise=0.5, samples=2, remote=remote,
                                             progress=False)
            drawn = []
            real = plotting._write
            plotting._write = lambda fig, path: drawn.append(
                [t.get_text() for t in fig.axes[0].get_yticklabels()]) or real(fig, path)
            sweep.plot(os.path.join(tmp, name + ".png"))
            plotting._write = real
            res[name] = [sweep.values.tolist(), trace.values.tolist(), trace.baselines, drawn[0]]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 2) == 2
    for a, b in zip(out["local"][:2], out["remote"][:2]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)
    assert out["local"][2] == pytest.approx(out["remote"][2], abs=1e-6)
    assert out["remote"][3] == out["local"][3] == ["1"]  # the picture's rows: the layer run


@pytest.mark.remote
def test_a_data_set_sweep_remote_equals_local_one_request_per_chunk(ndif):
    """Five pairs of different lengths by role, two pairs per chunk (a row budget of four
    reference rows): three requests, every pair's values equal the local run's."""
    before = _requests()
    out = _client(f"""
        from recipes import dataset, interchange
        names = [("France", "Italy"), ("Spain", "Peru"), ("Tokyo Tower", "Paris"), ("Rome", "Oslo"),
                 ("the big city of Berlin", "Madrid")]
        data = [dict(base=f"The capital of {{a}} is", source=f"The capital of {{b}} is",
                     answers=[" Paris", " Rome"], subject=a, source_subject=b) for a, b in names]
        items = dataset.pairs(data, role_cols={{"subject": "subject"}}, roles={{"end": -1}})
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            sweep = interchange.sweep(model, data=items, site="resid_pre", metric="logit_diff",
                                      remote=remote, progress=False, max_chunk_rows=4)
            res[name] = [sweep.per_prompt.tolist(), sweep.prompt_baselines["base"].tolist()]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 3) == 3
    for a, b in zip(out["local"], out["remote"]):
        assert len(a) == 5
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)


@pytest.mark.remote
def test_attribution_remote_equals_local_one_request_each(ndif):
    before = _requests()
    out = _client(f"""
        from recipes import attribution
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            args = (model, "The capital of Spain is", "The capital of Italy is", [" Rome"])
            plain = attribution.attribute(*args, site="resid_pre")
            star = attribution.attribute(*args, site="head_k", method="atp*", heads=True)
            res[name] = [plain.values.tolist(), star.values.tolist()]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 2) == 2  # source run, base run and backward: one request
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-6)


@pytest.mark.remote
def test_circuits_remote_equal_local_one_request_per_call(ndif):
    before = _requests()
    out = _client(f"""
        from recipes import circuits
        data = [{{"base": "The capital of France is", "source": "The capital of Italy is",
                 "answers": [" Paris", " Rome"]}},
                {{"base": "The cat sat on the mat and", "source": "The dog sat on the mat and",
                 "answers": [" the", " a"]}}]
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            ig = circuits.discover(model, data, method="eap-ig", steps=2, progress=False)
            # a pair's pass has 5 rows (clean, corrupted, 3 sizes): at most 6 a request is one each
            curve = circuits.faithfulness_curve(model, ig, data, sizes=[0, 5, 82], progress=False,
                                                max_request_rows=6)
            res[name] = [np.nan_to_num(ig.values).tolist(), curve.values, [curve.clean, curve.corrupted]]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 3) == 3  # scores: one request (two traces); the curve: one per pair
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-6)
    assert abs(out["remote"][1][0]) < 1e-4 and abs(out["remote"][1][2] - 1) < 1e-4


@pytest.mark.remote
def test_cache_remote_equals_local_in_one_request(ndif):
    before = _requests()
    out = _client(f"""
        names = ["blocks.0.hook_resid_post", "head_q.1", "attn_out.0", "blocks.1.attn.hook_result", "logits"]
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            acts = tracer.cache(model, "The capital of France is", names)
            res[name] = [acts[n].tolist() for n in names]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 1) == 1
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)


@pytest.mark.remote
def test_sites_and_interventions_in_a_users_remote_trace(ndif):
    out = _client(f"""
        from tracer import interventions as iv
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            s = tracer.site(model, "head_v.1")
            tracer.execute.register()
            with torch.no_grad(), model.trace("The cat sat on the mat", remote=remote):
                v = s.read(positions=[-1]).save()
                iv.add(s, torch.ones(16), alpha=0.5, positions=[-1], heads=[1])
                logits = model.output.logits.save()
            res[name] = [v.tolist(), logits.tolist()]
        print(json.dumps(res))
    """)
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)


@pytest.mark.remote
def test_error_inside_the_remote_trace_reaches_the_client(ndif, monkeypatch):
    from tracer import execute, plan

    # the head check runs client-side while compiling: nothing is sent (here, in this
    # process, outside the server's network namespace, sending would fail otherwise)
    model = tracer.load(str(ndif), remote=True)
    ids = model.tokenizer("The cat sat")["input_ids"]
    bad = [plan.Group([ids, ids], [plan.copy("head_k.0", 0, 1, (0,), (0,), (5,))],
                      [plan.Logprobs(0, (-1,), (1,))])]
    monkeypatch.setattr(execute, "_session", lambda *a, **k: pytest.fail("a request was sent"))
    with pytest.raises(IndexError, match="head 5 out of range at site head_k.0"):
        execute.run(model, bad, remote=True)
    out = _client(f"""
        model = tracer.load({str(ndif)!r}, remote=True)
        s = tracer.site(model, "resid_post.0")
        tracer.execute.register()
        try:
            with torch.no_grad(), model.trace("The cat", remote=True):
                s.read(positions=[9]).save()
        except Exception as error:
            error = tracer.execute.explain(error)
            print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
    """)
    assert out["type"] == "RemoteError" and "position 9 out of range" in out["message"]


def test_trace_time_modules_import_only_what_ndif_allows():
    assert remote.check_imports() == {}


def test_unreachable_server_is_one_clear_error(tiny_models, monkeypatch, tmp_path):
    import nnsight

    folder = tmp_path / "m"
    tracer.testing.save_tiny(tiny_models["llama"], folder)
    model = tracer.load(str(folder), remote=True)
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", "http://127.0.0.1:9")  # nothing listens
    from recipes import interchange

    cfg = interchange.InterchangeInterventionConfig(["The capital of France is",
                                                     "The capital of Italy is"], ["Paris", "Rome"])
    ii = interchange.InterchangeIntervention(model, cfg)
    with pytest.raises(remote.RemoteError, match=r"the NDIF server at http://127.0.0.1:9 is unreachable"):
        ii.run(["France", "Italy"], ["lay"], remote=True, progress=False)


@pytest.mark.remote
def test_iti_remote_equals_local_one_request_per_call(ndif):
    before = _requests()
    out = _client(f"""
        from recipes import iti
        from tracer.interventions import Intervention
        from tracer.files import InterventionSet
        texts = iti.load_statements().text[:24]
        spec = InterventionSet([Intervention("add", "head_out.1", None, [0, 3],
                                             {{"vector": torch.ones(2, 16)}})])
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            acts = iti.head_activations(model, texts, batch_size=8, remote=remote)
            lp = iti.statement_logprobs(model, texts, spec, batch_size=8, remote=remote)
            cost = iti.neutral_cost(model, spec, remote=remote)
            gen = iti.generate(model, ["The cat sat"], spec, max_new_tokens=5, remote=remote)
            res[name] = [acts.tolist(), lp.tolist(), cost, gen]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 4) == 4  # activations, scoring, neutral cost, generation
    local, remote_ = out["local"], out["remote"]
    for a, b in zip(local[:2], remote_[:2]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-4)
    for key in local[2]:
        assert local[2][key] == pytest.approx(remote_[2][key], abs=1e-5)
    assert local[3] == remote_[3]


@pytest.mark.remote
def test_lens_and_steering_remote_equal_local_with_counted_requests(ndif):
    before = _requests()
    out = _client(f"""
        from recipes import lens, steering
        texts = lens.training_texts()[:6]
        res = {{}}
        for name in ("local", "remote"):
            model = tracer.load({str(ndif)!r}, remote=name == "remote")
            x, final = lens.activations(model, texts, 1, with_logits=True)  # 1 request
            w_u, gain = lens.unembedding(model)                     # 1 request
            vector = steering.caa_vector(model, texts[:3], texts[3:], 1)      # 1 request
            sv = lens.SteeringVector(1, vector)
            recs = steering.run(model, "steering", "San Francisco", 0.5, 1, 4, texts[:2],
                                built=sv)                                     # 2 (norm, generate)
            scores = steering.evaluate(model, recs, "San Francisco")          # 1 request
            res[name] = [x.tolist(), final[:, :8].tolist(), w_u[:4].tolist(),
                         gain.tolist(), vector.tolist(), [r["output"] for r in recs], scores]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 6) == 6
    local, remote_ = out["local"], out["remote"]
    for a, b in zip(local[:5], remote_[:5]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-4)
    assert local[5] == remote_[5]
    for key in ("success", "coherence", "perplexity"):
        assert local[6][key] == pytest.approx(remote_[6][key], abs=1e-4)


@pytest.mark.remote
def test_pyvene_front_end_sources_and_original_in_one_request(ndif):
    before = _requests()
    out = _client(f"""
        res = {{}}
        for name in ("local", "remote"):
            model = tracer.load({str(ndif)!r}, remote=name == "remote")
            tok = model.tokenizer
            base = tok("The capital of Spain is", return_tensors="pt")
            source = tok("Once upon a time there was a happy dog", return_tensors="pt")
            pvm = tracer.IntervenableModel({{"layer": 0, "component": "block_output",
                                            "intervention": tracer.VanillaIntervention}},
                                           model=model, remote=name == "remote")
            original, out = pvm(base, [source], {{"sources->base": ([[1]], [[2]])}},
                                output_original_output=True)
            # a DAS rotation (trained locally) evaluated remotely: the module ships by value
            torch.manual_seed(0)
            rot = tracer.LowRankRotatedSpaceIntervention(embed_dim=64, low_rank_dimension=4)
            das = tracer.IntervenableModel({{"layer": 1, "component": "block_output",
                                            "intervention": rot}}, model=model,
                                           remote=name == "remote")
            with torch.no_grad():
                _, rotated = das(base, [source], {{"sources->base": ([[1]], [[2]])}})
            res[name] = [original.logits.tolist(), out.logits.tolist(), rotated.logits.tolist()]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 2) == 2  # base, source and original rows: one pass, one request
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)


@pytest.mark.remote
def test_a_model_the_server_does_not_serve(ndif):
    folder = LAB / "models" / "not-deployed"
    if not (folder / "config.json").exists():
        tracer.testing.save_tiny("gpt2", folder)
    out = _client(f"""
        from recipes import interchange
        model = tracer.load({str(folder)!r}, remote=True)
        try:
            interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                              [" Rome"], remote=True, progress=False)
        except Exception as error:
            print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
    """)
    assert out["type"] == "RemoteError" and "http://127.0.0.1:8001" in out["message"]
    assert "does not serve this model; it serves: " in out["message"]
    assert "tiny-llama" in out["message"].split("it serves: ")[1]


@pytest.mark.remote
def test_version_mismatch_is_refused(ndif):
    out = _client(f"""
        import nnsight.ndif
        real = nnsight.ndif.get_local_env
        def older():
            env = real()
            env["packages"] = {{**env["packages"], "nnsight": "0.7.0"}}
            return env
        nnsight.ndif.get_local_env = older
        model = tracer.load({str(ndif)!r}, remote=True)
        try:
            tracer.execute.check_versions(force=True)
        except Exception as error:
            print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
    """)
    assert out["type"] == "RemoteError"
    assert "client and server versions differ (nnsight 0.7.0 here vs 0.8.1 on the server)" in out["message"]


@pytest.mark.remote
def test_server_gone_mid_sweep_keeps_finished_requests_and_resumes(ndif, tmp_path):
    """Three requests; after the first the server stops answering (the client's host now
    refuses connections, as a stopped server's does).  The error says what was kept; the
    rerun sends only the two missing requests and equals a local run."""
    setup = f"""
        from tracer import execute
        from recipes import interchange
        path, keep = {str(ndif)!r}, {str(tmp_path / "resume")!r}
        cfg = interchange.InterchangeInterventionConfig(["The capital of France is",
                                                         "The capital of Italy is"], ["Paris", "Rome"])
        model = tracer.load(path, remote=True)
        groups, _ = interchange.InterchangeIntervention(model, cfg).plan(["France", "Italy"], ["qry"],
                                                                          heads="each")
        run = dict(remote=True, max_batch=4, max_request_rows=8, resume_dir=keep, progress=False)
    """
    before = _requests()
    out = _client(setup + """
        real, calls = execute._session, []

        def gone_after_first(model, part):
            calls.append(1)
            if len(calls) == 2:
                nnsight.CONFIG.API.HOST = "http://127.0.0.1:9"  # nothing listens there
            return real(model, part)

        execute._session = gone_after_first
        try:
            execute.run(model, groups, **run)
        except Exception as error:
            print(json.dumps([type(error).__name__, str(error)]))
    """)
    seen = _new_requests(before, 1)
    kind, message = out
    assert kind == "RemoteError"
    assert "request 2 of 3 failed; the 1 finished request(s) are saved" in message
    assert "unreachable" in message
    assert seen == 1
    before = _requests()
    out = _client(setup + """
        full = execute.run(model, groups, **run)
        local = execute.run(tracer.load(path), groups, max_batch=8, progress=False)
        print(json.dumps(max(float((a - b).abs().max()) for fa, fb in zip(full, local)
                             for a, b in zip(fa, fb))))
    """)
    assert _new_requests(before, 2) == 2  # the server saw only the two missing requests
    assert out < 1e-5
    assert not (tmp_path / "resume").exists()  # complete: partial results and folder removed


@pytest.mark.remote
def test_intervenable_model_remote_equals_local_in_one_request(ndif):
    before = _requests()
    out = _client(f"""
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(ndif)!r}, remote=remote)
            tok = model.tokenizer
            torch.manual_seed(0)  # the same rotation for both (shipped as a plain copy)
            rot = tracer.LowRankRotatedSpaceIntervention(embed_dim=model.config.hidden_size,
                                                         low_rank_dimension=4)
            pvm = tracer.IntervenableModel([
                {{"layer": 0, "component": "block_output", "intervention": tracer.VanillaIntervention}},
                {{"layer": 0, "component": "mlp_output", "intervention": rot}},
                {{"layer": 1, "component": "head_attention_value_output", "unit": "h.pos",
                  "intervention": tracer.ZeroIntervention}},
                {{"layer": 1, "component": "mlp_output", "intervention": tracer.CollectIntervention}}],
                model=model, remote=remote)
            base = tok("The capital of Spain is", return_tensors="pt")
            src = tok("The capital of Italy is", return_tensors="pt")
            n = min(base["input_ids"].shape[1], src["input_ids"].shape[1])
            base = {{k: v[:, :n] for k, v in base.items()}}
            src = {{k: v[:, :n] for k, v in src.items()}}
            h = [[[1, 2]], [[n - 1]]]
            with torch.no_grad():
                (orig, collected), out = pvm(base, [src], {{"sources->base": (
                    [[[n - 1]], [[n - 2]], h, [[n - 1]]], [[[n - 1]], [[n - 2]], h, [[n - 1]]])}},
                    output_original_output=True)
            res[name] = [orig.logits.tolist(), out.logits.tolist(), out.last_hidden_state.tolist(),
                         collected[0].tolist()]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 1) == 1
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)
    assert not torch.allclose(torch.tensor(out["local"][0]), torch.tensor(out["local"][1]))


@pytest.mark.remote
def test_a_request_past_its_time_limit_is_a_clear_error(ndif):
    """INTERLACE_NDIF_TIMEOUT far below what a request takes (late in this file: the given-up
    request may still finish on the server)."""
    out = _client(f"""
        import os
        os.environ["INTERLACE_NDIF_TIMEOUT"] = "0.01"
        from recipes import interchange
        model = tracer.load({str(ndif)!r}, remote=True)
        try:
            interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                              [" Rome"], progress=False)
        except Exception as error:
            print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
    """)
    assert out["type"] == "RemoteError"
    assert "gave no answer within 0.01 s (timeout=, INTERLACE_NDIF_TIMEOUT)" in out["message"]


@pytest.mark.remote
def test_a_mixture_of_experts_family_remote_equals_local(ndif):
    """A tiny Qwen3-MoE (q/k norms, a router, a dense layer) deployed in tiny-llama's place
    (last in this file: tiny-llama is not deployed again): a head sweep and the router
    logits, remotely in one request each, equal the local run."""
    folder = LAB / "models" / "tiny-qwen3-moe"
    if not (folder / "config.json").exists():
        tracer.testing.save_tiny("qwen3_moe", folder)
    _sh("bash", str(SCRIPTS / "deploy.sh"), str(folder), timeout=300)
    before = _requests()
    out = _client(f"""
        from recipes import interchange
        from tracer.plan import Activations, Group
        res = {{}}
        for name, remote in (("local", False), ("remote", True)):
            model = tracer.load({str(folder)!r}, remote=remote)
            ids = model.tokenizer("The capital of Spain is")["input_ids"]
            sweep = interchange.sweep(model, "The capital of Spain is", "The capital of Italy is",
                                      [" Rome"], site="head_out", heads="each", progress=False,
                                      remote=remote)
            router = tracer.execute.run(model, [Group([ids], [], [Activations("router.0", 0)])],
                                        progress=False, remote=remote)[0][0]
            res[name] = [sweep.values.tolist(), router.tolist()]
        print(json.dumps(res))
    """)
    assert _new_requests(before, 2) == 2  # one for the sweep, one for the router read
    for a, b in zip(out["local"], out["remote"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)
    assert torch.tensor(out["local"][1]).shape[-1] == 4  # experts
