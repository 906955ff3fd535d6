"""What every recipe returns: a ``Result`` with ``to_dict()`` (plain JSON data), ``save(dir)``
(the data as JSON, with NPZ / CSV / an intervention folder where the recipe has them, and
the pictures) and ``plot(dir)`` (the pictures only).  ``SweepResult`` (sweeps, causal
tracing, path and attribution patching), ``InterchangeResult`` (the seed's head-by-head
interchange), ``SteeringRun`` and ``SteeringTable`` (steering), ``ITIResult`` and
``DASResult``."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from tracer.files import atomic, writable_dir
from tracer.metrics import bootstrap_interval, effect_scores, normalized_effect, standard_error


class Result(abc.ABC):
    """The shape every recipe's result has."""

    name = "result"  # the stem of its files

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """Plain JSON-able data."""

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays saved as ``NAME.npz`` (none by default)."""
        return {}

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        """Write the pictures into folder ``out``; returns them by name (none by default)."""
        return {}

    def save(self, out: Union[str, Path]) -> dict[str, Path]:
        """Write ``NAME.json`` (``to_dict``), ``NAME.npz`` (``arrays``, when any) and the
        pictures into folder ``out`` (checked writable first); returns every path by name."""
        out = writable_dir(out)
        paths = {"json": out / f"{self.name}.json"}
        with atomic(paths["json"]) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        arrays = self.arrays()
        if arrays:
            paths["npz"] = out / f"{self.name}.npz"
            with atomic(paths["npz"]) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
        paths.update(self.plot(out))
        return paths


@dataclass
class SweepResult(Result):
    """A labelled 2-D result: ``values[i, j]`` for ``axes[0]`` label i and ``axes[1]`` label j.

    Over a data set ``values`` is the mean over prompts, ``per_prompt`` (prompts x grid)
    holds each prompt's grid and ``prompt_baselines`` each prompt's baselines;
    ``spread()`` gives the standard error and a seeded bootstrap 95% interval per cell.
    ``clean`` / ``corrupted`` name the baselines that ``normalized`` scales between:
    ``(values - corrupted) / (clean - corrupted)``, from the means over prompts."""

    values: np.ndarray
    axes: tuple
    labels: dict
    metric: str
    baselines: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    name: str = "sweep"
    per_prompt: Optional[np.ndarray] = None
    prompt_baselines: dict = field(default_factory=dict)
    clean: Optional[str] = None
    corrupted: Optional[str] = None
    seed: int = 0

    @property
    def n_prompts(self) -> int:
        """How many prompts (pairs) the values average."""
        return 1 if self.per_prompt is None else int(self.per_prompt.shape[0])

    def spread(self, samples: int = 1000, level: float = 0.95) -> Optional[dict]:
        """``{"stderr", "low", "high"}`` per cell over the prompts (a bootstrap interval of
        the mean, seeded by ``seed``); None for a single prompt."""
        if self.n_prompts < 2:
            return None
        low, high = bootstrap_interval(self.per_prompt, samples, level, self.seed)
        return {"stderr": standard_error(self.per_prompt), "low": low, "high": high}

    @property
    def normalized(self) -> Optional[np.ndarray]:
        """``(values - corrupted) / (clean - corrupted)`` (0 = corrupted, 1 = clean), or None
        without both baselines or when they are equal (the metric cannot tell them apart)."""
        if self.clean is None or self.corrupted is None:
            return None
        clean, corrupted = self.baselines[self.clean], self.baselines[self.corrupted]
        if not abs(clean - corrupted) > 1e-9:
            return None
        return normalized_effect(self.values, clean, corrupted)

    def to_dict(self) -> dict:
        """Plain JSON-able data."""
        out = {"axes": list(self.axes), "labels": {k: [str(x) for x in v] for k, v in self.labels.items()},
               "metric": self.metric, "values": self.values.tolist(),
               "baselines": {k: float(v) for k, v in self.baselines.items()}, "meta": self.meta,
               "n_prompts": self.n_prompts}
        if self.clean is not None:
            norm = self.normalized
            out["normalized"] = {"clean": self.clean, "corrupted": self.corrupted,
                                 "values": None if norm is None else norm.tolist()}
        spread = self.spread()
        if spread is not None:
            out["spread"] = {"stderr": spread["stderr"].tolist(), "ci95_low": spread["low"].tolist(),
                             "ci95_high": spread["high"].tolist(), "bootstrap_seed": self.seed}
            out["prompt_baselines"] = {k: np.asarray(v).tolist() for k, v in self.prompt_baselines.items()}
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"values": self.values,
               **{f"labels_{k}": np.asarray([str(x) for x in v]) for k, v in self.labels.items()}}
        if self.normalized is not None:
            out["normalized"] = self.normalized
        spread = self.spread()
        if spread is not None:
            out.update(per_prompt=self.per_prompt, stderr=spread["stderr"], ci95_low=spread["low"],
                       ci95_high=spread["high"],
                       **{f"baseline_{k}": np.asarray(v) for k, v in self.prompt_baselines.items()})
        return out

    def save(self, out: Union[str, Path], name: Optional[str] = None) -> dict[str, Path]:
        """Write ``NAME.npz``, ``NAME.json`` and ``NAME.png`` (and ``NAME_normalized.png``)
        into ``out``."""
        if name is not None:
            self.name = name
        return super().save(out)

    def plot(self, path: Union[str, Path], title: Optional[str] = None,
             scale: Optional[str] = None) -> dict[str, Path]:
        """The result as a heatmap PNG (``path``: a folder, for ``NAME.png``, or a ``.png``
        file): the title names the prompts (or how many, for a data set), the colorbar the
        quantity and answer; ``scale`` as ``plotting.heatmap`` (default: 0..1 for
        probabilities, symmetric around 0 for signed estimates, else the data's range).
        With normalized values (a folder given) also ``NAME_normalized.png``."""
        path = Path(path)
        folder = path.suffix != ".png"
        if folder:
            path = path / f"{self.name}.png"
        out = {"png": self._heatmap(path, self.values, self.metric, title, scale)}
        norm = self.normalized
        if folder and norm is not None:
            out["normalized_png"] = self._heatmap(
                path.with_name(f"{self.name}_normalized.png"), norm,
                f"normalized {self.metric}: 0 = {self.corrupted}, 1 = {self.clean}", title, "auto")
        return out

    def _heatmap(self, path: Path, values: np.ndarray, cbar: str, title: Optional[str],
                 scale: Optional[str]) -> Path:
        from .plotting import heatmap

        a0, a1 = self.axes
        meta = self.meta
        lines = [title or meta.get("title", "")]
        if self.n_prompts > 1:
            lines[0] += f" (mean over {self.n_prompts} prompts)"
        if self.n_prompts > 1 and isinstance(meta.get("base"), list) and isinstance(meta.get("source"), list):
            # the count is in the first line already
            lines.append(f"e.g. base {meta['base'][0]!r}, source {meta['source'][0]!r}")
        elif meta.get("prompts_summary"):
            lines.append(meta["prompts_summary"])
        elif isinstance(meta.get("base"), str) and isinstance(meta.get("source"), str):
            lines.append(f"base {meta['base']!r}, source {meta['source']!r}")
        elif isinstance(meta.get("prompt"), str):
            lines.append(f"prompt {meta['prompt']!r}, subject {meta.get('subject', '')!r}")
        answers = meta.get("answers")
        if answers and isinstance(answers[0], str) and cbar == self.metric:
            if "logit_diff" in self.metric and len(answers) > 1:
                cbar += f" (logit {answers[0]!r} - logit {answers[1]!r})"
            elif not self.metric.startswith("P("):
                cbar += f" of {answers[0]!r}"
        elif answers and isinstance(answers[0], (list, tuple)) and cbar == self.metric:
            cbar += (" (each pair's first answer - its second)" if "logit_diff" in self.metric
                     else " of each pair's first answer")
        note = ", ".join(f"{k} run {v:.4g}" for k, v in self.baselines.items())
        if scale is None:
            prob = self.metric.startswith("P(") or self.metric == "prob"
            base = self.baselines.get("base") if cbar.startswith(self.metric) else None
            if base is not None and not prob:
                # a signed metric: what the patch changed, on a scale centred at no change
                values, cbar, scale = values - base, f"change in {cbar} from the base run", "symmetric"
            elif np.isfinite(values).any() and float(np.nanmin(values)) < 0:
                scale = "symmetric"
            else:
                scale = "auto"
        marks, label = [], ""
        checked = meta.get("verified")
        if checked and meta.get("method") in ("atp", "qk"):  # signed estimates: flips misled
            rows = list(self.labels[a0])
            marks = [(rows.index(layer), col) for (layer, col), e, x in
                     zip(checked["cells"], checked["estimate"], checked["exact"])
                     if np.sign(e) != np.sign(x) and layer in rows]
            label = "the estimate's sign differs from the exact patch"
        return heatmap(values, self.labels[a0], self.labels[a1], path, title="\n".join(lines),
                       xlabel=a1, ylabel=a0, cbar=cbar, scale=scale, marks=marks, mark_label=label,
                       note=f"baselines: {note}" if note else "")


@dataclass
class InterchangeResult(Result):
    """The seed's interchange run: per rep type, the continuation probabilities originally
    and with the targets swapped (``outputs[rep]``: ``"original"`` (C, 2, 1),
    ``"interv_layer_L"`` (C, 2, columns)), its columns (heads, or "all") and effects
    (layer x column TV distances).  Over a data set ``per_pair`` holds every prompt pair's
    outputs (``outputs`` is the first pair's), ``effects`` is the mean over pairs and
    ``pair_effects`` each pair's table.  Files: ``results.json``, ``results.npz``,
    ``heatmap_<rep>.png``."""

    config: dict
    outputs: dict
    columns: dict
    name: str = "results"
    per_pair: Optional[list] = None

    @cached_property
    def pair_effects(self) -> dict[str, np.ndarray]:
        """Per rep type, (pairs, layers, columns) effect tables (one pair: a leading 1)."""
        pairs = self.per_pair if self.per_pair is not None else [self.outputs]
        return {rep: np.stack([effects_table(p[rep]) for p in pairs]) for rep in self.outputs}

    @cached_property
    def effects(self) -> dict[str, np.ndarray]:
        """Per rep type, the layer x column effect table (the mean over pairs)."""
        return {rep: e.mean(0) for rep, e in self.pair_effects.items()}

    def layers(self, rep: str) -> list[int]:
        """The layers of a rep type's rows, as run."""
        return swapped_layers(self.outputs[rep])

    def _groups(self, rep: str, cols: list) -> str:
        """Under grouped-query attention, which query heads share each key/value head (their
        key and value columns are equal by construction)."""
        n_kv, n_heads = self.config.get("n_kv_heads"), self.config.get("n_heads")
        if rep not in ("key", "val") or not n_kv or not n_heads or n_kv == n_heads or cols == ["all"]:
            return ""
        size = n_heads // n_kv
        return ("grouped-query attention: heads " + ", ".join(
            f"{g * size}-{g * size + size - 1}" for g in range(n_kv)) + " each share one key/value head, "
            "so their columns are equal")

    def to_dict(self) -> dict:
        effects = self.effects
        out = {"config": self.config, "results": {
            rep: {"columns": [("all" if c is None else c) for c in self.columns[rep]],
                  "layers": self.layers(rep),
                  "effect": effects[rep].tolist(), "probs": {k: v.tolist() for k, v in out.items()}}
            for rep, out in self.outputs.items()}}
        if self.per_pair is not None:
            for rep in self.outputs:
                entry = out["results"][rep]
                entry["pair_effects"] = self.pair_effects[rep].tolist()
                entry["effect_stderr"] = standard_error(self.pair_effects[rep]).tolist() \
                    if len(self.per_pair) > 1 else None
                entry["pair_probs"] = [{k: v.tolist() for k, v in p[rep].items()} for p in self.per_pair]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        effects = self.effects
        out = {}
        for rep, output in self.outputs.items():
            out.update({f"{rep}/{k}": v for k, v in output.items()})
            out[f"{rep}/effect"] = effects[rep]
            if self.per_pair is not None:
                out[f"{rep}/pair_effects"] = self.pair_effects[rep]
        return out

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        """One heatmap per rep type: layer x head, effect on a fixed 0..1 scale."""
        from .plotting import heatmap

        cfg, paths = self.config, {}
        for rep, effect in self.effects.items():
            cols = ["all" if c is None else c for c in self.columns[rep]]
            if self.per_pair is None:
                what = (f"swapping {cfg['targets'][0]!r} <-> {cfg['targets'][1]!r} ({rep})\n"
                        f"{cfg['sents'][0]!r}\n{cfg['sents'][1]!r}")
            else:
                what = (f"swapping the targets ({rep}), mean over {len(self.per_pair)} prompt pairs\n"
                        f"e.g. {cfg['sents'][0][0]!r} / {cfg['sents'][0][1]!r}")
            paths[f"heatmap_{rep}"] = heatmap(
                effect, self.layers(rep), cols, Path(out) / f"heatmap_{rep}.png",
                title=f"{cfg['model']}: {what}" if cfg.get("model") else what,
                xlabel="head" if cols != ["all"] else "", ylabel="layer",
                cbar="effect (TV distance of the continuations)", note=self._groups(rep, cols))
        return paths


@dataclass
class SteeringRun(Result):
    """One steering run: its options, the generated outputs and their scores (success,
    coherence, perplexity, matched words, degenerate outputs).  File: ``outputs.json`` (what
    ``interlace eval`` scores again); a single run has no picture (``SteeringTable`` plots
    runs against each other)."""

    args: dict
    scores: dict
    outputs: list
    name: str = "outputs"

    def to_dict(self) -> dict:
        return {"args": self.args, "scores": self.scores, "outputs": self.outputs}


@dataclass
class SteeringTable(Result):
    """Steering methods x strengths: one row per run (method, alpha, success, coherence,
    perplexity, n, an example).  Files: ``table.json``, ``table.csv``,
    ``success_vs_perplexity.png`` (success and coherence against perplexity, the clean run
    marked)."""

    rows: list
    title: str = ""
    name: str = "table"
    KEYS = ("method", "alpha", "success", "coherence", "perplexity", "n", "example")

    def to_dict(self) -> dict:
        return {"title": self.title, "rows": list(self.rows)}

    def save(self, out: Union[str, Path]) -> dict[str, Path]:
        import csv

        paths = super().save(out)
        paths["csv"] = Path(out) / "table.csv"
        with atomic(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.KEYS))
            w.writeheader()
            w.writerows([{k: r.get(k) for k in self.KEYS} for r in self.rows])
        return paths

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        from .plotting import steering_plot

        return {"png": steering_plot(self.rows, Path(out) / "success_vs_perplexity.png", self.title)}


@dataclass
class ITIResult(Result):
    """A fitted ITI intervention and its report: probe accuracy per head (validation and
    test), the chosen heads, K and alpha (with every candidate's validation score) and the
    test-split evaluation.  Files: the intervention folder itself (``config.json`` +
    ``tensors.safetensors``), ``eval.json``, ``eval.npz``, ``probe_accuracy.png``."""

    spec: Any
    report: dict
    evaluation: dict
    model: str = ""
    name: str = "eval"

    def to_dict(self) -> dict:
        r = self.report
        test = r["test_acc"]
        return {**self.evaluation, "top_k": r["top_k"], "alpha": r["alpha"],
                "chosen": [list(c) for c in r["chosen"]], "selection": r.get("selection", []),
                "best_val_acc": float(r["val_acc"].max()),
                "mean_test_acc_of_chosen": float(np.mean([test[l, h] for l, h in r["chosen"]]))}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"val_acc": self.report["val_acc"], "test_acc": self.report["test_acc"]}

    def save(self, out: Union[str, Path]) -> dict[str, Path]:
        folder = self.spec.save(writable_dir(out))
        return {"intervention": folder, **super().save(out)}

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        from .plotting import heatmap

        r, val = self.report, self.report["val_acc"]
        return {"png": heatmap(val, range(val.shape[0]), range(val.shape[1]), Path(out) / "probe_accuracy.png",
                               title=(f"{self.model}: " if self.model else "")
                               + "ITI probe accuracy per head (validation split)",
                               xlabel="head", ylabel="layer", cbar="balanced accuracy",
                               marks=r["chosen"], mark_label=f"the {r['top_k']} heads steered", line=0.5)}


@dataclass
class DASResult(Result):
    """Distributed alignment search on the tutorial's MLP: held-out IIA per hidden layer
    for DAS on a+b and its controls.  Files: ``das.json``, ``das.png``."""

    iia: dict            # "layer L" -> {condition: IIA}
    mlp_accuracy: float
    config: dict
    name: str = "das"

    def to_dict(self) -> dict:
        return {"mlp_accuracy": self.mlp_accuracy, **self.config, "iia": self.iia}

    def plot(self, out: Union[str, Path]) -> dict[str, Path]:
        from .plotting import heatmap

        rows = list(self.iia)
        conditions = list(next(iter(self.iia.values())))
        values = np.array([[self.iia[r][c] for c in conditions] for r in rows])
        return {"png": heatmap(values, rows, conditions, Path(out) / "das.png",
                               title=f"DAS on the a+b+c MLP ({self.config.get('dim')} rotated dims): "
                                     f"held-out interchange accuracy", xlabel="", ylabel="",
                               cbar="IIA")}


def swapped_layers(output: dict[str, np.ndarray]) -> list[int]:
    """The layers of a seed run's output (its ``interv_layer_L`` arrays), in order."""
    return sorted(int(k.rsplit("_", 1)[1]) for k in output if k.startswith("interv_layer_"))


def effects_table(output: dict[str, np.ndarray]) -> np.ndarray:
    """Effect scores of a run's output as a (layers, head columns) array."""
    return np.stack([effect_scores(output["original"], output[f"interv_layer_{layer}"])
                     for layer in swapped_layers(output)])
