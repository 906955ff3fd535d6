"""Plots name what they show: titles with the prompts, colorbars with the quantity and the
answer, a meaningful fixed or symmetric scale, chosen heads and chance marked."""

import numpy as np
import pytest

from recipes import plotting, results


def _captured(monkeypatch):
    seen = {}

    def fake(values, rows, cols, path, **kwargs):
        seen.update(kwargs, values=values)
        return path
    monkeypatch.setattr(plotting, "heatmap", fake)
    return seen


def test_sweep_plot_names_prompts_and_answer_and_picks_a_scale(monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    meta = {"base": "The capital of Spain is", "source": "The capital of Italy is",
            "answers": [" Rome", " Madrid"], "title": "patch resid_post"}
    results.SweepResult(np.full((2, 3), 0.1), ("layer", "position"), {"layer": [0, 1], "position": [0, 1, 2]},
                        "prob", meta=meta).plot(tmp_path / "a.png")
    assert seen["scale"] == "unit" and seen["cbar"] == "prob of ' Rome'"
    assert "'The capital of Spain is'" in seen["title"] and "'The capital of Italy is'" in seen["title"]
    signed = results.SweepResult(np.array([[-0.2, 0.5]]), ("layer", "head"), {"layer": [0], "head": [0, 1]},
                                 "AtP logit_diff", meta=meta)
    signed.plot(tmp_path / "b.png")
    assert seen["scale"] == "symmetric" and seen["cbar"] == "AtP logit_diff (logit ' Rome' - logit ' Madrid')"


def test_heatmap_scales_marks_and_chance_line(tmp_path):
    path = plotting.heatmap(np.random.rand(4, 3), range(4), range(3), tmp_path / "h.png", title="t",
                            scale="unit", marks=[(1, 2)], mark_label="chosen", line=0.5)
    assert path.stat().st_size > 1000
    plotting.heatmap(np.array([[-1.0, 2.0]]), [0], [0, 1], tmp_path / "s.png", scale="symmetric")
    with pytest.raises(ValueError, match="unknown scale 'log'"):
        plotting.heatmap(np.zeros((2, 2)), [0, 1], [0, 1], tmp_path / "x.png", scale="log")
