"""The web app (recipes/app.py) through Streamlit's own app-testing API on a tiny model:
the Space's Winograd example, a sweep, causal tracing and the result viewer."""

import json

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from recipes import app, dataset, interchange  # noqa: E402
from tracer import testing  # noqa: E402

APP = app.__file__


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return testing.save_tiny("llama", tmp_path_factory.mktemp("app") / "tiny")


def _app(monkeypatch, folder):
    monkeypatch.setenv("INTERLACE_APP_MODEL", str(folder))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    return at


def _charts(at):
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _cells(at, i):
    """The i-th chart's data (Streamlit ships it beside the spec, as Arrow)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return convert_arrow_bytes_to_pandas_df(at.get("vega_lite_chart")[i].proto.data.data)


def test_winograd_example_draws_a_heatmap_per_rep_type(monkeypatch, tiny_folder):
    at = _app(monkeypatch, tiny_folder)
    assert at.selectbox(key="ic-example").value == "Winograd (seed)"
    at.button[0].click().run()
    assert not at.exception and not at.error
    charts = _charts(at)
    assert len(charts) == 4  # lay, qry, key, val
    assert all("successful" in c["title"]["text"] if isinstance(c["title"], dict) else "successful" in c["title"]
               for c in charts)
    tooltip = [t["field"] for t in charts[1]["encoding"]["tooltip"]]
    assert tooltip == ["layer", "head", "effect"]
    cells = _cells(at, 1)
    # every head of both layers, with effects the recipe computes itself
    s1, s2, conts, targets = interchange.SEED_EXAMPLES[0]
    cfg = interchange.InterchangeInterventionConfig([s1, s2], conts)
    want = interchange.effects_table(interchange.InterchangeIntervention(str(tiny_folder), cfg).run(
        targets, ["qry"], multihead=False, heads="each", progress=False))
    got = cells.pivot(index="_row", columns="_col", values="effect").to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(at.dataframe) == 1 and len(at.get("download_button")) == 3


def test_sweep_and_causal_tracing_tabs(monkeypatch, tiny_folder):
    at = _app(monkeypatch, tiny_folder)
    at.text_input(key="sw-base").input("The capital of Spain is")
    at.text_input(key="sw-source").input("The capital of Italy is")
    at.button[1].click().run()
    assert not at.exception and not at.error
    at.button[2].click().run()
    assert not at.exception and not at.error
    charts = _charts(at)
    assert len(charts) == 2
    assert [t["field"] for t in charts[0]["encoding"]["tooltip"]][:2] == ["layer", "position"]
    # causal tracing's P(' Paris') is a field Vega can read, titled as the metric
    assert charts[1]["encoding"]["color"]["field"] == "P__ Paris__" and "P(' Paris')" in str(
        charts[1]["encoding"]["color"]["title"])
    assert len(_cells(at, 1)) > 1


CSV = ("base,source,answers,subject,source_subject\n"
       "The capital of France is,The capital of Italy is, Paris| Rome,France,Italy\n"
       "The tall tower in Tokyo Tower city is,The tall tower in Paris is, Tokyo| Paris,Tokyo Tower,Paris\n"
       "Where is Berlin,Where is Madrid, Germany| Spain,Berlin,Madrid\n")


def test_sweep_tab_runs_an_uploaded_csv_by_role(monkeypatch, tiny_folder):
    at = _app(monkeypatch, tiny_folder)
    at.file_uploader(key="sw-data").upload("pairs.csv", CSV.encode(), "text/csv")
    at.text_input(key="sw-roles").input("subject, END")
    at.selectbox(key="sw-site").select("resid_pre")
    at.selectbox(key="sw-metric").select("logit_diff")
    at.button[1].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    charts = _charts(at)
    assert len(charts) == 2 and "mean over 3 prompts" in str(charts[0]["title"])
    items = dataset.pairs(dataset.csv_records(CSV), role_cols={"subject": "subject"}, roles={"END": -1})
    want = interchange.sweep(str(tiny_folder), data=items, site="resid_pre", metric="logit_diff",
                             progress=False)
    cells = _cells(at, 0)
    # a signed metric is drawn as the change from the base run, on a scale centred at 0
    got = cells.pivot(index="_row", columns="_col", values="change from base").to_numpy()
    np.testing.assert_allclose(got, want.values - want.baselines["base"], atol=1e-5)
    scale = _charts(at)[0]["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"][0] == -scale["domain"][1]
    assert sorted(set(cells["role"])) == ["END", "subject"]
    norm = _cells(at, 1).pivot(index="_row", columns="_col", values="normalized").to_numpy()
    np.testing.assert_allclose(norm, want.normalized, atol=1e-4)


@pytest.mark.parametrize("csv_text, roles, message", [
    ("base,source\na,b\n", "END", "lacks column\\(s\\) answers"),
    (CSV, "subject, object", "role\\(s\\) object are not columns"),
    (CSV, " , ", "name at least one role"),
    ("base,source,answers\n", "END", "no rows"),
])
def test_a_bad_upload_is_one_message(csv_text, roles, message):
    with pytest.raises(ValueError, match=message):
        app.uploaded_pairs(csv_text.encode(), roles, 10)
    with pytest.raises(ValueError, match="not UTF-8"):
        app.uploaded_pairs(b"\xff\xfe\x00", "END", 10)
    with pytest.raises(ValueError, match="pairs must be"):
        app.uploaded_pairs(CSV.encode(), "END", app.MAX_PAIRS + 1)


def test_bad_input_is_shown_not_raised(monkeypatch, tiny_folder):
    at = _app(monkeypatch, tiny_folder)
    at.text_input(key="ic-layers").input("0-99")
    at.button[0].click().run()
    assert not at.exception and "outside 0-1" in at.error[0].value


def _viewer(monkeypatch, folder, results):
    """The app serving ``results``, its viewer opened on that folder."""
    monkeypatch.setenv("INTERLACE_APP_RESULTS", str(results))
    at = _app(monkeypatch, folder)
    at.text_input(key="rv-folder").input(str(results)).run()
    assert not at.exception
    return at


def test_viewer_opens_a_saved_result_folder(monkeypatch, tiny_folder, tmp_path):
    result = interchange.sweep(str(tiny_folder), "The capital of Spain is", "The capital of Italy is",
                               [" Rome"], progress=False)
    result.save(tmp_path, name="sweep")
    at = _viewer(monkeypatch, tiny_folder, tmp_path)
    titles = [c["title"] for c in _charts(at)]
    assert titles == ["sweep.npz: values", "sweep.npz: normalized"], titles
    cells = _cells(at, 0)  # the true labels: layers and the positions' tokens
    assert list(dict.fromkeys(cells["layer"])) == [str(x) for x in result.labels["layer"]]
    assert list(dict.fromkeys(cells["position"])) == [str(x) for x in result.labels["position"]]
    assert [e.label for e in at.expander] == ["sweep.json", "sweep.npz", "sweep.png", "sweep_normalized.png"]


def test_parse_layers():
    assert app.parse_layers("all", 4) is None and app.parse_layers("0-1, 3", 4) == [0, 1, 3]
    with pytest.raises(ValueError, match="outside 0-3"):
        app.parse_layers("2-5", 4)
    with pytest.raises(ValueError, match="not a layer"):
        app.parse_layers("x", 4)


def test_viewer_opens_nothing_outside_its_results_folders(monkeypatch, tiny_folder, tmp_path):
    """/etc, a folder beside the root holding credentials, a symlink out of the root (folder
    or file): each refused; the root itself opens."""
    root, secret = tmp_path / "results", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (secret / "credentials.json").write_text('{"key": "do not show"}')
    (root / "run").mkdir()
    (root / "run" / "ok.json").write_text('{"shown": 1}')
    (root / "out").symlink_to(secret)
    (root / "run" / "leak.json").symlink_to(secret / "credentials.json")
    monkeypatch.setenv("INTERLACE_APP_RESULTS", str(root))
    at = _app(monkeypatch, tiny_folder)
    for folder in ("/etc", str(secret), str(root / "out"), "../secret", "out"):
        at.text_input(key="rv-folder").input(folder).run()
        assert not at.exception and at.error and "is not under the results folder" in at.error[0].value
        assert not at.expander and "do not show" not in str(at)
    at.text_input(key="rv-folder").input("run").run()
    assert not at.exception and not at.error
    assert [e.label for e in at.expander] == ["ok.json"]  # the symlinked file is not listed


def test_a_visitor_picks_only_the_servers_models_and_cannot_set_the_ndif_host(monkeypatch, tiny_folder, tmp_path):
    models = tmp_path / "models"
    (models / "mine").mkdir(parents=True)
    (models / "mine" / "config.json").write_text("{}")
    (models / "notamodel").mkdir()
    (models / "escape").symlink_to(tiny_folder)
    monkeypatch.setenv("INTERLACE_APP_MODELS", str(models))
    monkeypatch.setenv("INTERLACE_NDIF_HOST", "http://127.0.0.1:9")
    at = _app(monkeypatch, tiny_folder)
    assert at.selectbox(key="model").options == [str(tiny_folder), "smollm2", "gemma3-270m", "mine"]
    assert not [t for t in at.text_input if "host" in t.label.lower() or "model" in t.label.lower()]
    at.checkbox[0].check().run()
    assert "http://127.0.0.1:9 (set by the server)" in " ".join(c.value for c in at.caption)


def test_a_remote_failure_is_one_line(monkeypatch, tiny_folder):
    import tracer

    def fail(*args, **kwargs):
        raise tracer.execute.RemoteError("the NDIF server at http://x is unreachable\nTraceback: ...")
    monkeypatch.setattr(app.interchange, "causal_trace", fail)
    at = _app(monkeypatch, tiny_folder)
    at.tabs[2].button[0].click().run()
    assert not at.exception
    assert at.error[0].value == "RemoteError: the NDIF server at http://x is unreachable"


def test_the_server_listens_on_loopback_unless_told(monkeypatch):
    import os

    seen = {}

    def fake(exe, cmd, env):
        seen["cmd"], seen["env"] = cmd, env
    monkeypatch.setattr(os, "execve", fake)
    app.main(["--results", "/tmp/r1", "--results", "/tmp/r2"])
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert seen["env"]["INTERLACE_APP_RESULTS"].split(os.pathsep) == ["/tmp/r1", "/tmp/r2"]
    app.main(["--address", "0.0.0.0"])
    assert seen["cmd"][seen["cmd"].index("--server.address") + 1] == "0.0.0.0"
    assert app.main(["--server.address", "0.0.0.0"]) == 2


def test_circuit_tab_draws_the_graph_and_the_faithfulness_curve(monkeypatch, tiny_folder):
    csv_text = ("base,source,answers\n"
                "The capital of France is,The capital of Italy is, Paris| Rome\n"
                "The capital of Spain is,The capital of Italy is, Madrid| Rome\n")
    at = _app(monkeypatch, tiny_folder)
    at.file_uploader(key="cc-data").upload("pairs.csv", csv_text.encode(), "text/csv")
    at.selectbox(key="cc-method").select("eap")
    at.number_input(key="cc-top").set_value(5)
    at.tabs[3].button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.tabs[3].get("image")) == 1
    curve = _cells(at, 0)
    assert curve["faithfulness"].iloc[0] == pytest.approx(0, abs=1e-4)
    assert curve["faithfulness"].iloc[-1] == pytest.approx(1, abs=1e-4)
    assert 5 in list(curve["edges"])
    assert len(at.dataframe) == 1 and len(at.get("download_button")) == 2


def test_a_model_typo_is_one_line_at_start_and_in_a_run(monkeypatch, tmp_path, capsys):
    import os

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("served a model that does not exist"))
    assert app.main(["--model", "gemma3"]) == 2
    assert "did you mean 'gemma3-270m'" in capsys.readouterr().err
    assert app.main(["--model", str(tmp_path / "missing")]) == 2
    at = _app(monkeypatch, tmp_path / "missing")  # a folder gone after the server started
    at.button[0].click().run()
    assert not at.exception and "no such model folder" in at.error[0].value


def test_the_viewer_draws_an_interchange_run_by_layer_and_tables_the_raw_arrays(monkeypatch, tiny_folder, tmp_path):
    s1, s2, conts, targets = interchange.SEED_EXAMPLES[0]
    res = interchange.interchange(str(tiny_folder), [s1, s2], conts, targets, ["lay", "qry"], heads="each",
                                  layers=[1], progress=False)
    res.save(tmp_path)
    at = _viewer(monkeypatch, tiny_folder, tmp_path)
    titles = [c["title"] for c in _charts(at)]
    assert titles == ["results.npz: lay/effect", "results.npz: qry/effect"], titles
    assert list(dict.fromkeys(_cells(at, 1)["layer"])) == ["1"]  # the layer run, not 0
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) >= 4  # the raw outputs, tabled
