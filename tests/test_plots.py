"""Plots name what they show: titles with the prompts, colorbars with the quantity, the
answer and the data's range, signed quantities as a change on a scale centred at 0, the true
layer labels, nothing cut off, chosen heads and chance marked."""

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
    assert seen["scale"] == "auto" and seen["cbar"] == "prob of ' Rome'"  # its own range
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


def _figures(monkeypatch):
    """Every figure the plotting module writes, with the extent of all it draws (titles,
    labels, ticks, colour bar) measured then: ``[(figure, tight box in inches), ...]``."""
    figs = []
    real = plotting._write

    def keep(fig, path):
        out = real(fig, path)  # laid out and drawn by savefig
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        figs.append((fig, fig.get_tightbbox(renderer)))
        return out
    monkeypatch.setattr(plotting, "_write", keep)
    return figs


def _inside(drawn):
    """Everything drawn lies inside the figure (nothing clipped)."""
    fig, tight = drawn
    box = fig.bbox_inches
    pad = 0.02  # inches
    assert tight.x0 >= box.x0 - pad and tight.x1 <= box.x1 + pad and tight.y0 >= box.y0 - pad \
        and tight.y1 <= box.y1 + pad, (tight, box)


def test_a_signed_sweep_is_the_change_from_the_base_run_centred_at_zero(monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    meta = {"base": "a", "source": "b", "answers": [" Rome", " Madrid"], "title": "path patching"}
    res = results.SweepResult(np.array([[1.5, 2.0], [2.5, 2.0]]), ("layer", "head"),
                              {"layer": [20, 21], "head": [0, 1]}, "logit_diff",
                              baselines={"base": 2.0, "source": -1.0}, meta=meta)
    res.plot(tmp_path / "p.png")
    assert seen["scale"] == "symmetric"
    np.testing.assert_allclose(seen["values"], [[-0.5, 0.0], [0.5, 0.0]])
    assert seen["cbar"].startswith("change in logit_diff") and "base run 2" in seen["note"]


def test_pictures_carry_the_true_labels_the_data_range_and_fit(monkeypatch, tmp_path):
    figs = _figures(monkeypatch)
    long = "a long title naming many things " * 8
    results.SweepResult(np.linspace(0.0005, 0.02, 12).reshape(4, 3), ("layer", "position"),
                        {"layer": [20, 21, 22, 23], "position": ["The", " capital", " is"]}, "prob",
                        meta={"title": long}).plot(tmp_path / "s.png")
    fig = figs[-1][0]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["20", "21", "22", "23"]
    colours = ax.images[0].to_rgba(ax.images[0].get_array())
    assert len({tuple(np.round(c, 3)) for c in colours.reshape(-1, 4)}) == 12  # every value its colour
    assert "range 0.0005 to 0.02" in fig.axes[1].get_ylabel()
    _inside(figs[-1])
    # a short, wide figure: the colour-bar label and the title still fit
    plotting.heatmap(np.random.rand(1, 30), [5], range(30), tmp_path / "w.png", title=long,
                     cbar="a colour-bar label that is long enough to be cut off")
    _inside(figs[-1])
    texts = [t.get_text() for t in figs[-1][0].axes[0].texts]
    assert len(texts) == 5  # the strongest cells annotated


def test_interchange_heatmaps_label_the_layers_run_and_the_key_value_groups(monkeypatch, tmp_path):
    figs = _figures(monkeypatch)
    cfg = {"sents": ["a b", "c d"], "conts": ["x", "y"], "targets": ["b", "d"], "n_heads": 4, "n_kv_heads": 2}
    original = np.full((2, 2, 1), 0.5)
    out = {"original": original, "interv_layer_20": np.random.rand(2, 2, 4), "interv_layer_23": np.random.rand(2, 2, 4)}
    res = results.InterchangeResult(cfg, {"key": out}, {"key": [0, 1, 2, 3]})
    res.plot(tmp_path)
    ax = figs[-1][0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["20", "23"]
    assert "heads 0-1, 2-3 each share one key/value head" in " ".join(ax.get_xlabel().split())
    _inside(figs[-1])


def test_attribution_marks_the_cells_its_verification_found_flipped(monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    meta = {"method": "atp", "title": "attribution", "verified": {
        "cells": [[3, 1], [4, 0]], "estimate": [0.5, -0.2], "exact": [-0.4, -0.1]}}
    results.SweepResult(np.zeros((2, 2)) + [[0.1, 0.5], [-0.2, 0.0]], ("layer", "position"),
                        {"layer": [3, 4], "position": [0, 1]}, "AtP logprob", meta=meta).plot(tmp_path / "a.png")
    assert seen["marks"] == [(0, 1)] and "sign differs" in seen["mark_label"]


def test_steering_plot_titles_the_model_and_labels_decades(monkeypatch, tmp_path):
    figs = _figures(monkeypatch)
    rows = [{"method": "clean", "alpha": None, "perplexity": 3.0, "success": 0.0, "coherence": 0.3},
            {"method": "logit", "alpha": 0.5, "perplexity": 7.0, "success": 0.2, "coherence": 0.2},
            {"method": "logit", "alpha": 1.0, "perplexity": 40.0, "success": 0.4, "coherence": 0.1}]
    plotting.steering_plot(rows, tmp_path / "s.png", "SmolLM2: steering toward ' happy' at layer 8")
    fig, _ = figs[-1]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels(minor=True) if t.get_text()]
    assert not ticks  # no minor-tick labels to run together
    _inside(figs[-1])
