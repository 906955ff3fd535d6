"""The Interlace web app: seed 000's Space (interchange interventions), and more.

``interlace app`` (or ``make app``) serves it with Streamlit (``pip install -e '.[app]'``):

- **Interchange**: the Space's form (two prompts, continuations, target words, rep types,
  heads, layers) and its three examples; every head of every layer in few batched passes.
- **Sweep**: patch one site from a source prompt into a base prompt, layer x position or
  layer x head; or over an uploaded CSV of prompt pairs (base, source, answers and role
  columns), layer x role, the mean over pairs with its normalized heatmap.
- **Causal tracing**: ROME's noise-the-subject, restore-one-state sweep.
- **Circuit**: EAP / EAP-IG edge scores over the shipped IOI set or an uploaded CSV, the
  strongest edges drawn as a layered graph, and their faithfulness curve.
- **Open results**: any folder a recipe wrote (NPZ, JSON, CSV, PNG).

Runs show a progress bar; results are interactive heatmaps (hover: layer, head or position
token, value), the strongest effects as a table, and downloads (NPZ, JSON, CSV).

Safe to serve: it listens on 127.0.0.1 unless the operator says ``--address``; a visitor
picks a model among the operator's (``--model``, the embedded names, the folders under
``--models``), opens results only under the ``--results`` folders (symlinks that leave them
are refused), and cannot change the NDIF host (``--host`` / ``INTERLACE_NDIF_HOST``), so the
server's API key goes nowhere a visitor chose.  A failed run is one line, not a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

import tracer
from recipes import circuits, dataset, interchange
from recipes.charts import csv_bytes, heatmap_chart, line_chart, long_table, npz_bytes, npz_views
from recipes.cli import HelpFormatter, parse_layers
from recipes.results import SweepResult

MAX_PAIRS = 1000  # pairs one app run takes from an uploaded data set
EXAMPLES = {"Winograd (seed)": 0, "is_small (seed)": 1, "emotions (seed)": 2}


def interchange_records(run: Any) -> dict[str, list[dict]]:
    """Per rep type, the effect heatmap's cells (layer x head) of an ``InterchangeResult``."""
    out = {}
    for rep, effects in run.effects.items():
        cols = ["all" if c is None else c for c in run.columns[rep]]
        out[rep] = long_table(effects, run.layers(rep), cols, "layer", "head", "effect")
    return out


def uploaded_pairs(content: bytes, roles: str, limit: int) -> list:
    """The prompt pairs of an uploaded CSV (``base``, ``source``, ``answers`` as ``a|b`` or a
    JSON list, and role columns): ``roles`` names them, comma-separated, ``END`` being the
    last token; the first ``limit`` rows (at most ``MAX_PAIRS``)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the uploaded data set is not UTF-8 text (save it as a CSV in UTF-8)") from None
    rows = dataset.csv_records(text)
    if not rows:
        raise ValueError("the uploaded CSV has no rows under its header")
    header = list(rows[0])
    missing = [c for c in ("base", "source", "answers") if c not in header]
    if missing:
        raise ValueError(f"the uploaded CSV lacks column(s) {', '.join(missing)}; its columns are "
                         f"{', '.join(header)} (needed: base, source, answers, and any role columns)")
    names = [r.strip() for r in roles.split(",") if r.strip()]
    if not names:
        raise ValueError("name at least one role: a column of the CSV, or END for the last token")
    unknown = [r for r in names if r != "END" and r not in header]
    if unknown:
        raise ValueError(f"role(s) {', '.join(unknown)} are not columns of the uploaded CSV; its columns "
                         f"are {', '.join(header)} (or END for the last token)")
    tracer.checks.integer("pairs", limit, low=1, high=MAX_PAIRS)
    items = dataset.pairs(rows, role_cols={r: r for r in names if r != "END"},
                          roles={"END": -1} if "END" in names else None, limit=limit)
    # the grid's role axis in the order the roles were named
    return [dataset.Pair(p.base, p.source, p.answers, {r: p.roles[r] for r in names}) for p in items]


# -- the page ------------------------------------------------------------------------

EMBEDDED = ("smollm2", "gemma3-270m")
RUN_ERRORS = (ValueError, IndexError, KeyError, OSError, tracer.execute.RemoteError, tracer.ModelLoadError,
              tracer.ModelCheckError)


def model_choices() -> dict[str, str]:
    """What a visitor may load, label -> name or folder: the operator's model
    (``INTERLACE_APP_MODEL``), the embedded ones, and the model folders directly under
    ``INTERLACE_APP_MODELS`` (default: the converted-model cache)."""
    default = os.environ.get("INTERLACE_APP_MODEL", "smollm2")
    out = {default: default}
    out.update({name: name for name in EMBEDDED if name not in out})
    root = Path(os.environ.get("INTERLACE_APP_MODELS") or tracer.models.cache_dir() / "models")
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.is_symlink() and (folder / "config.json").is_file():
                out.setdefault(folder.name, str(folder))
    return out


def results_roots() -> list[Path]:
    """The folders the viewer may open (``INTERLACE_APP_RESULTS``, ``os.pathsep``-joined;
    default ``./results``), resolved."""
    given = os.environ.get("INTERLACE_APP_RESULTS") or "results"
    return [Path(p).resolve() for p in given.split(os.pathsep) if p]


def inside(path: Path, roots: list[Path]) -> Optional[Path]:
    """``path`` resolved (symlinks followed) when it lies under one of ``roots``, else None;
    a relative path is taken under the first root."""
    full = (path if path.is_absolute() else roots[0] / path).resolve()
    return full if any(full == r or full.is_relative_to(r) for r in roots) else None


def one_line(error: BaseException) -> str:
    """An error as the one line a visitor sees."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _model(st: Any, name: str, remote: bool, host: str) -> Any:
    @st.cache_resource(show_spinner="loading the model ...")
    def load(name: str, remote: bool, host: str) -> Any:
        if remote:
            tracer.execute.configure(host or None)
        return tracer.load(name, remote=remote)
    return load(name, remote, host)


def _bar(st: Any) -> Any:
    bar = st.progress(0.0, text="starting ...")

    def update(done: float, total: int, desc: str) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{desc}: {done:.0f} of {total}")
    return update


def _show_sweep(st: Any, result: SweepResult, key: str) -> None:
    a0, a1 = result.axes
    many = result.n_prompts > 1
    title = result.meta.get("title", "") + (f" (mean over {result.n_prompts} prompts)" if many else "")
    records = long_table(result.values, list(result.labels[a0]), list(result.labels[a1]), a0, a1,
                         result.metric)
    base = result.baselines.get("base")
    prob = result.metric.startswith("P(") or result.metric == "prob"
    if base is not None and not prob:  # a signed metric: the patch's change, centred at none
        shown = long_table(result.values - base, list(result.labels[a0]), list(result.labels[a1]), a0, a1,
                           "change from base")
        st.altair_chart(heatmap_chart(shown, a0, a1, "change from base",
                                      f"{title}: change in {result.metric} from the base run ({base:.4f})",
                                      diverging=True), width="stretch")
    else:
        signed = bool(np.nanmin(result.values) < 0) if np.isfinite(result.values).any() else False
        st.altair_chart(heatmap_chart(records, a0, a1, result.metric, title, diverging=signed),
                        width="stretch")
    normalized = result.normalized
    if many and normalized is not None:
        recs = long_table(normalized, list(result.labels[a0]), list(result.labels[a1]), a0, a1, "normalized")
        st.altair_chart(heatmap_chart(recs, a0, a1, "normalized",
                                      f"normalized: 0 = {result.corrupted} run, 1 = {result.clean} run"),
                        width="stretch")
    st.caption("baselines: " + ", ".join(f"{k} {v:.4f}" for k, v in result.baselines.items())
               + (f" (means over {result.n_prompts} prompts)" if many else ""))
    top = sorted(records, key=lambda r: -abs(r[result.metric]))[:10]
    st.dataframe([{k: v for k, v in r.items() if not k.startswith("_")} for r in top])
    cols = st.columns(3)
    cols[0].download_button("NPZ", npz_bytes(result.arrays()), f"{key}.npz", key=f"{key}-npz")
    cols[1].download_button("JSON", json.dumps(result.to_dict(), indent=2), f"{key}.json", key=f"{key}-json")
    cols[2].download_button("CSV", csv_bytes(records), f"{key}.csv", key=f"{key}-csv")


def interchange_tab(st: Any, get_model: Any) -> None:
    st.markdown("Swap a target word's representations between two prompts, at every layer "
                "(and head), and see how the continuations' preference moves.")
    example = st.selectbox("Example", list(EXAMPLES) + ["custom"], key="ic-example")
    s1, s2, conts, targets = interchange.SEED_EXAMPLES[EXAMPLES[example]] if example in EXAMPLES \
        else ("", "", [], ["", ""])
    with st.form("interchange"):
        sent1 = st.text_area("Prompt 1", s1, key=f"ic-s1-{example}")
        sent2 = st.text_area("Prompt 2", s2, key=f"ic-s2-{example}")
        cont_text = st.text_input("Continuations (comma-separated)", ", ".join(conts), key=f"ic-c-{example}")
        c1, c2 = st.columns(2)
        t1 = c1.text_input("Target word in prompt 1", targets[0], key=f"ic-t1-{example}")
        t2 = c2.text_input("Target word in prompt 2", targets[1], key=f"ic-t2-{example}")
        reps = st.multiselect("Rep types", list(interchange.REP_TYPES), ["lay", "qry", "key", "val"],
                              help="lay: the layer's output; qry/key/val/out: attention heads' parts",
                              key="ic-reps")
        heads = st.radio("Heads", ["each head", "all heads together"], horizontal=True, key="ic-heads")
        layer_text = st.text_input("Layers", "all", help="all, or e.g. 0-5, 12", key="ic-layers")
        go = st.form_submit_button("Run")
    if go:
        try:
            model = get_model()
            layers = parse_layers(layer_text, tracer.sites.dims_of(model.config).n_layers)
            conts_list = [c.strip() for c in cont_text.split(",") if c.strip()]
            st.session_state["ic-run"] = interchange.interchange(
                model, [sent1, sent2], conts_list, [t1, t2], reps,
                "each" if heads == "each head" else None, layers, progress=_bar(st))
        except RUN_ERRORS as error:
            st.error(one_line(error))
    run = st.session_state.get("ic-run")
    if run:
        records = interchange_records(run)
        cfg = run.config
        for rep, recs in records.items():
            title = f"{rep}: swapping {cfg['targets'][0]!r} <-> {cfg['targets'][1]!r} (effect: TV distance)"
            st.altair_chart(heatmap_chart(recs, "layer", "head", "effect", title),
                            width="stretch")
        top = interchange.strongest(run)
        st.subheader("Strongest effects")
        st.dataframe([{"effect": e, "rep": r, "layer": layer, "head": str(h)} for e, r, layer, h in top])
        arrays = run.arrays()
        cols = st.columns(3)
        cols[0].download_button("NPZ", npz_bytes(arrays), "interchange.npz", key="ic-npz")
        cols[1].download_button("JSON", json.dumps({"config": cfg, "effects": records}, indent=2),
                                "interchange.json", key="ic-json")
        cols[2].download_button("CSV", csv_bytes([dict(r, rep=rep) for rep, recs in records.items() for r in recs]),
                                "interchange.csv", key="ic-csv")


def sweep_tab(st: Any, get_model: Any) -> None:
    with st.form("sweep"):
        base = st.text_input("Base prompt (patched into)", "The capital of Spain is", key="sw-base")
        source = st.text_input("Source prompt (patched from; same token count)", "The capital of Italy is",
                               key="sw-source")
        answers = st.text_input("Answers (comma-separated; the first is scored)", " Rome, Madrid", key="sw-ans")
        upload = st.file_uploader("Or a data set: a CSV of prompt pairs (columns base, source, answers "
                                  "as a|b, and role columns; source_<role> for the source's word)",
                                  type=["csv"], key="sw-data")
        roles = st.text_input("Roles of the data set (columns, comma-separated; END: the last token)",
                              "END", key="sw-roles")
        limit = st.number_input("Pairs used from the data set", 1, MAX_PAIRS, 100, key="sw-limit")
        site = st.selectbox("Site", ["resid_post", "resid_pre", "attn_out", "mlp_out", "head_out",
                                     "head_q", "head_k", "head_v"], key="sw-site")
        metric = st.selectbox("Metric", ["prob", "logprob", "logit_diff"], key="sw-metric")
        go = st.form_submit_button("Run sweep")
    if go:
        try:
            heads = "each" if site.startswith("head_") else None
            if upload is not None:
                items = uploaded_pairs(upload.getvalue(), roles, int(limit))
                result = interchange.sweep(get_model(), data=items, site=site, metric=metric, heads=heads,
                                           progress=_bar(st))
            else:
                ans = [a if a.startswith(" ") else " " + a.strip() for a in answers.split(",") if a.strip()]
                result = interchange.sweep(get_model(), base, source, ans, site=site, metric=metric,
                                           heads=heads, progress=_bar(st))
            st.session_state["sw-run"] = result
        except RUN_ERRORS as error:
            st.error(one_line(error))
    if st.session_state.get("sw-run") is not None:
        _show_sweep(st, st.session_state["sw-run"], "sweep")


def causal_tab(st: Any, get_model: Any) -> None:
    with st.form("causal"):
        prompt = st.text_input("Prompt", "The Eiffel Tower is located in the city of", key="ct-prompt")
        subject = st.text_input("Subject (noised)", "Eiffel Tower", key="ct-subject")
        answer = st.text_input("Answer", " Paris", key="ct-answer")
        samples = st.number_input("Noise draws", 1, 50, 3, key="ct-samples")
        go = st.form_submit_button("Run causal tracing")
    if go:
        try:
            st.session_state["ct-run"] = interchange.causal_trace(
                get_model(), prompt, subject, answer, samples=int(samples), progress=_bar(st))
        except RUN_ERRORS as error:
            st.error(one_line(error))
    if st.session_state.get("ct-run") is not None:
        _show_sweep(st, st.session_state["ct-run"], "causal_trace")


def circuit_tab(st: Any, get_model: Any) -> None:
    st.markdown("Score every edge between components (embeddings, heads' query/key/value inputs, "
                "MLPs, logits) on prompt pairs, keep the strongest, and check how much of the "
                "behaviour they carry by patching every other edge from the corrupted prompt.")
    with st.form("circuit"):
        upload = st.file_uploader("A data set: a CSV of prompt pairs (columns base = clean, source = "
                                  "corrupted with the same token count, answers as a|b); none: the "
                                  "shipped IOI set", type=["csv"], key="cc-data")
        limit = st.number_input("Pairs used", 1, MAX_PAIRS, 8, key="cc-limit")
        method = st.selectbox("Method", list(circuits.METHODS), index=1, key="cc-method",
                              help="eap: gradients at the clean run; eap-ig: integrated gradients "
                                   "from the corrupted to the clean embeddings")
        steps = st.number_input("Integrated-gradient steps", 1, 50, 5, key="cc-steps")
        top = st.number_input("Edges kept (largest |score|)", 1, 100_000, 200, key="cc-top")
        go = st.form_submit_button("Find the circuit")
    if go:
        try:
            model = get_model()
            items = uploaded_pairs(upload.getvalue(), "END", int(limit)) if upload is not None \
                else dataset.ioi(limit=int(limit))
            scores = circuits.discover(model, items, method=method, steps=int(steps), progress=_bar(st))
            n = int(scores.valid.sum())
            chosen = scores.top(min(int(top), n))
            sizes = sorted(set(circuits.default_sizes(n)) | {len(chosen)})
            curve = circuits.faithfulness_curve(model, scores, items, sizes=sizes, progress=_bar(st))
            st.session_state["cc-run"] = (scores, chosen, curve)
        except RUN_ERRORS as error:
            st.error(one_line(error))
    if st.session_state.get("cc-run") is None:
        return
    scores, chosen, curve = st.session_state["cc-run"]
    with tempfile.TemporaryDirectory() as tmp:
        st.image(chosen.plot(Path(tmp) / "circuit.png").read_bytes())
    st.altair_chart(line_chart([{"edges": k, "faithfulness": v} for k, v in zip(curve.sizes, curve.values)],
                               "edges", "faithfulness", f"faithfulness of the top-k edges (1 = clean "
                               f"{curve.clean:.3f}, 0 = corrupted {curve.corrupted:.3f})"), width="stretch")
    rows = [{"sender": s_, "receiver": r, "score": v} for s_, r, v in chosen.edges[:20]]
    st.subheader(f"Strongest edges ({len(chosen)} kept of {int(scores.valid.sum())})")
    st.dataframe(rows)
    cols = st.columns(2)
    cols[0].download_button("Scores (NPZ)", npz_bytes(scores.arrays()), "scores.npz", key="cc-npz")
    cols[1].download_button("Circuit (JSON)", json.dumps(chosen.to_dict(), indent=1), "circuit.json",
                            key="cc-json")


def viewer_tab(st: Any) -> None:
    roots = results_roots()
    folder = st.text_input("Result folder", "", key="rv-folder",
                           help=f"a folder a recipe wrote under {', '.join(map(str, roots))}: NPZ "
                                f"arrays are drawn, JSON shown, CSV tabled, PNG shown")
    path = inside(Path(folder), roots)
    if path is None:
        st.error(f"{folder} is not under the results folder{'s' if len(roots) > 1 else ''} this "
                 f"server shows ({', '.join(map(str, roots))})")
        return
    if not path.is_dir():
        st.info(f"{folder or roots[0]} is not a folder")
        return
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".json", ".csv", ".png")
                   and inside(p, roots) is not None)  # a symlink leaving the roots is not shown
    if not files:
        st.info(f"{folder or roots[0]} holds no NPZ, JSON, CSV or PNG file")
    for p in files:
        with st.expander(p.name, expanded=p.suffix == ".npz"):
            if p.suffix == ".png":
                st.image(str(p))
            elif p.suffix == ".csv":
                import csv

                with open(p, newline="") as f:
                    st.dataframe(list(csv.DictReader(f)))
            elif p.suffix == ".json":
                try:
                    st.json(json.loads(p.read_text()), expanded=False)
                except ValueError as error:
                    st.error(f"{p.name} is not JSON: {error}")
            else:
                with np.load(p, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
                side = p.with_suffix(".json")
                try:
                    info = json.loads(side.read_text()) if side.is_file() and inside(side, roots) else {}
                except ValueError:
                    info = {}
                charts, rest = npz_views(arrays, info if isinstance(info, dict) else {})
                for name, grid, (r_name, rows), (c_name, cols) in charts:
                    recs = long_table(grid, rows, cols, r_name, c_name, "value")
                    st.altair_chart(heatmap_chart(recs, r_name, c_name, "value", f"{p.name}: {name}"),
                                    width="stretch")
                if rest:
                    st.caption("the other arrays (not drawn)")
                    st.dataframe(rest)


def page() -> None:
    import streamlit as st

    st.set_page_config(page_title="Interlace", layout="wide")
    st.title("Interlace: causal interventions")
    choices = model_choices()
    label = st.sidebar.selectbox("Model", list(choices), key="model",
                                 help="the models this server offers (interlace app --model / --models)")
    name = choices[label]
    remote = st.sidebar.checkbox("Run on NDIF", False)
    host = os.environ.get("INTERLACE_NDIF_HOST", "")  # the operator's: visitors cannot change it
    if remote:
        st.sidebar.caption(f"NDIF host: {host or 'nnsight default'} (set by the server)")

    def get_model() -> Any:
        return _model(st, name, remote, host)

    tabs = st.tabs(["Interchange", "Sweep", "Causal tracing", "Circuit", "Open results"])
    with tabs[0]:
        interchange_tab(st, get_model)
    with tabs[1]:
        sweep_tab(st, get_model)
    with tabs[2]:
        causal_tab(st, get_model)
    with tabs[3]:
        circuit_tab(st, get_model)
    with tabs[4]:
        viewer_tab(st)


def main(argv: Optional[list] = None, prog: str = "interlace app") -> int:
    """Serve the app: ``streamlit run`` this file (extra options go to Streamlit)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=prog, description="serve the Interlace web app (Streamlit)",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", default="smollm2", help="the model the app starts with")
    p.add_argument("--port", type=int, default=8501, help="port to serve on")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 serves every network this machine is on")
    p.add_argument("--results", action="append", default=None, metavar="DIR",
                   help="a folder the result viewer may open (repeat for several; default ./results)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="model folders visitors may pick (default: the converted-model cache)")
    p.add_argument("--host", default=None, help="NDIF host for remote runs (INTERLACE_NDIF_HOST)")
    args, rest = p.parse_known_args(argv)
    if any(r.startswith("--server.address") for r in rest):
        print("error: give the address as --address", file=sys.stderr)
        return 2
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("error: the app needs Streamlit: pip install -e '.[app]'", file=sys.stderr)
        return 2
    try:  # a typo in --model is one line now, not a traceback in every visitor's page
        if args.model.lower() not in tracer.models.EMBEDDED | tracer.models.GEMMA3:
            tracer.models.resolve(args.model)  # a folder, a .gguf file or a cached hub id
    except tracer.ModelLoadError as error:
        print(f"error: --model: {error}", file=sys.stderr)
        return 2
    env = dict(os.environ, INTERLACE_APP_MODEL=args.model,
               INTERLACE_APP_RESULTS=os.pathsep.join(str(Path(r).resolve()) for r in args.results or ["results"]))
    if args.models:
        env["INTERLACE_APP_MODELS"] = str(Path(args.models).resolve())
    if args.host:
        env["INTERLACE_NDIF_HOST"] = args.host
    cmd = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve()),
           "--server.port", str(args.port), "--server.address", args.address,
           "--server.headless", "true", "--browser.gatherUsageStats", "false", *rest]
    # this process becomes the server: Ctrl-C and a terminate reach Streamlit itself
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    page()
