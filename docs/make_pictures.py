"""The README's pictures: one per recipe, made on the embedded SmolLM2 (``make pictures``).

Each recipe runs with small settings and writes its usual files into ``results/pictures/``;
the picture a reader sees first is copied to ``docs/pictures/`` (which the README shows).
About five minutes on 2 CPU cores.

    python docs/make_pictures.py [--out results/pictures] [--only interchange sweep ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import tracer
from recipes import attribution, circuits, das, dataset, interchange, iti, steering

DOCS = Path(__file__).resolve().parent / "pictures"
WINOGRAD = ("Paul tried to call George but he wasn't successful . Who wasn't successful ?",
            "Paul tried to call George but he wasn't available . Who wasn't available ?")
BASE, SOURCE = "The capital of Spain is", "The capital of Italy is"


def interchange_picture(model, out: Path) -> Path:
    res = interchange.interchange(model, list(WINOGRAD), ["Paul", "George"], ["successful", "available"],
                                  ["qry"], heads="each", progress=False)
    return res.save(out / "interchange")["heatmap_qry"]


def sweep_picture(model, out: Path) -> Path:
    res = interchange.sweep(model, BASE, SOURCE, [" Rome", " Madrid"], site="resid_pre",
                            metric="logit_diff", progress=False)
    return res.save(out / "sweep", name="sweep")["png"]


def causal_trace_picture(model, out: Path) -> Path:
    res = interchange.causal_trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                                   " Paris", samples=3, progress=False)
    return res.save(out / "causal_trace", name="causal_trace")["png"]


def path_patching_picture(model, out: Path) -> Path:
    bases, sources, answers = (x[:2] for x in interchange.ioi())
    res = interchange.path_patch(model, bases, sources, answers, receivers=["final"],
                                 layers=list(range(18, 30)), progress=False)
    return res.save(out / "path_patching", name="path_patching")["png"]


def attribution_picture(model, out: Path) -> Path:
    res = attribution.attribute(model, BASE, SOURCE, [" Rome"], site="resid_pre", verify=8, progress=False)
    return res.save(out / "attribution", name="attribution")["png"]


def circuit_pictures(model, out: Path) -> dict:
    pairs = dataset.ioi(limit=4)
    scores = circuits.discover(model, pairs, method="eap-ig", progress=False)
    graph = scores.top(60).plot(out / "circuit" / "circuit.png")
    sizes = [0, 10, 30, 100, 300, 1000, 3000, 10000, int(scores.valid.sum())]
    curve = circuits.faithfulness_curve(model, scores, pairs, sizes=sizes, progress=False)
    return {"circuit": graph, "faithfulness": curve.save(out / "circuit")["png"]}


def steering_picture(model, out: Path) -> Path:
    table = steering.sweep(model, ["logit", "steering"], [0.25, 0.5, 1.0], phrase=" happy", layer=8,
                           length=12, texts=steering.prompts()[:4], out=out / "steering", progress=False)
    assert table.rows
    return out / "steering" / "success_vs_perplexity.png"


def iti_picture(model, out: Path) -> Path:
    return iti.run(model, progress=False).save(out / "iti")["png"]


def das_picture(model, out: Path) -> Path:
    return das.search(layers=(0, 1), epochs=3).save(out / "das")["png"]


PICTURES = {"interchange": interchange_picture, "sweep": sweep_picture, "causal_trace": causal_trace_picture,
            "path_patching": path_patching_picture, "attribution": attribution_picture,
            "circuit": circuit_pictures, "steering": steering_picture,
            "iti": iti_picture, "das": das_picture}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/pictures", help="where the recipes write their files")
    p.add_argument("--only", nargs="*", default=None, choices=list(PICTURES), help="some pictures only")
    args = p.parse_args()
    model = tracer.load("smollm2")
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, make in PICTURES.items():
        if args.only and name not in args.only:
            continue
        made = make(model, Path(args.out))
        for key, png in (made.items() if isinstance(made, dict) else [(name, made)]):
            shutil.copyfile(png, DOCS / f"{key}.png")
            print(f"{key}: {DOCS / f'{key}.png'}", flush=True)


if __name__ == "__main__":
    main()
