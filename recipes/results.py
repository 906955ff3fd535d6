"""Results as plain data with named axes: saved as NPZ + JSON + a PNG, plotted apart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tracer.files import atomic


@dataclass
class SweepResult:
    """A labelled 2-D result: ``values[i, j]`` for ``axes[0]`` label i and ``axes[1]`` label j."""

    values: np.ndarray
    axes: tuple
    labels: dict
    metric: str
    baselines: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able data."""
        return {"axes": list(self.axes), "labels": {k: [str(x) for x in v] for k, v in self.labels.items()},
                "metric": self.metric, "values": self.values.tolist(),
                "baselines": {k: float(v) for k, v in self.baselines.items()}, "meta": self.meta}

    def save(self, out: Union[str, Path], name: str = "sweep") -> dict[str, Path]:
        """Write ``name.npz``, ``name.json`` and ``name.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"npz": out / f"{name}.npz", "json": out / f"{name}.json", "png": out / f"{name}.png"}
        with atomic(paths["npz"]) as tmp, open(tmp, "wb") as f:
            np.savez(f, values=self.values,
                     **{f"labels_{k}": np.asarray([str(x) for x in v]) for k, v in self.labels.items()})
        with atomic(paths["json"]) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        self.plot(paths["png"])
        return paths

    def plot(self, path: Union[str, Path], title: Optional[str] = None, scale: Optional[str] = None) -> Path:
        """The result as a heatmap PNG: the title names the prompts, the colorbar the
        quantity and answer; ``scale`` as ``plotting.heatmap`` (default: 0..1 for
        probabilities, symmetric around 0 for signed estimates, else the data's range)."""
        from .plotting import heatmap

        a0, a1 = self.axes
        meta = self.meta
        lines = [title or meta.get("title", "")]
        if "base" in meta and "source" in meta:
            lines.append(f"base {meta['base']!r}, source {meta['source']!r}")
        elif "prompt" in meta:
            lines.append(f"prompt {meta['prompt']!r}, subject {meta.get('subject', '')!r}")
        answers = meta.get("answers")
        cbar = self.metric
        if answers and "logit_diff" in self.metric and len(answers) > 1:
            cbar += f" (logit {answers[0]!r} - logit {answers[1]!r})"
        elif answers and not self.metric.startswith("P("):
            cbar += f" of {answers[0]!r}"
        if scale is None:
            signed = float(np.nanmin(self.values)) < 0 if np.isfinite(self.values).any() else False
            scale = "unit" if self.metric.startswith("P(") or self.metric == "prob" else \
                ("symmetric" if signed else "auto")
        return heatmap(self.values, self.labels[a0], self.labels[a1], path, title="\n".join(lines),
                       xlabel=a1, ylabel=a0, cbar=cbar, scale=scale)


def save_run(out: Union[str, Path], config: dict, outputs: dict[str, dict[str, np.ndarray]],
             effects: dict[str, np.ndarray], columns: dict[str, list]) -> dict[str, Path]:
    """An interchange run (``recipes.interchange``): ``results.npz``, ``results.json`` and one
    ``heatmap_<rep>.png`` of each rep type's ``effects`` (layer x head)."""
    from .plotting import heatmap

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays, numbers = {}, {}
    for rep, output in outputs.items():
        arrays.update({f"{rep}/{k}": v for k, v in output.items()})
        arrays[f"{rep}/effect"] = effects[rep]
        numbers[rep] = {"columns": [("all" if c is None else c) for c in columns[rep]],
                        "effect": effects[rep].tolist(),
                        "probs": {k: v.tolist() for k, v in output.items()}}
        heatmap(effects[rep], list(range(effects[rep].shape[0])),
                ["all" if c is None else c for c in columns[rep]], out / f"heatmap_{rep}.png",
                title=f"{config.get('model', '')}: swapping {config['targets'][0]!r} <-> "
                      f"{config['targets'][1]!r} ({rep})\n{config['sents'][0]!r}\n{config['sents'][1]!r}",
                xlabel="head", ylabel="layer", cbar="effect (TV distance of the continuations)",
                scale="unit")
    paths = {"npz": out / "results.npz", "json": out / "results.json"}
    with atomic(paths["npz"]) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    with atomic(paths["json"]) as tmp:
        tmp.write_text(json.dumps({"config": config, "results": numbers}, indent=2))
    return paths
