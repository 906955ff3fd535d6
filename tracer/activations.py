"""Named activations of one forward pass: TransformerLens's ``run_with_cache`` as one trace.

``tracer.cache(model, prompts, sites)`` reads every named site (our names, their aliases or
TransformerLens hook names such as ``blocks.5.hook_resid_post``) in one forward pass, or in
one NDIF request on a model loaded with ``remote=True``, and returns them by the names given.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Optional, Sequence, Union

import torch

from . import execute
from .families import from_transformer_lens
from .site_names import PATTERN_SITES
from .sites import config, module, site, valid_sites


def _wants_pattern(names: list) -> bool:
    kinds = {(from_transformer_lens(n) or n).partition(".")[0] for n in names}
    return bool(kinds & (set(PATTERN_SITES) | {"attention_weight"}))


@contextlib.contextmanager
def _eager(model: Any, names: list) -> Any:
    """Eager attention for the call when a pattern site is read on a local model running
    another implementation (the pattern exists only there; the numbers are the same), said
    once; a remote model's implementation is the server's."""
    impl = getattr(config(model), "_attn_implementation", None)
    if not _wants_pattern(names) or impl in (None, "eager") or execute.is_remote(model):
        yield
        return
    warnings.warn(f"tracer.cache: attention scores and patterns exist only inside eager attention, so this "
                  f"call runs eager attention instead of {impl!r} (same numbers, slower)", stacklevel=4)
    module(model).set_attn_implementation("eager")
    try:
        yield
    finally:
        module(model).set_attn_implementation(impl)


def cache(model: Any, prompts: Union[str, Sequence[str], dict], sites: Optional[Sequence[str]] = None,
          remote: Optional[bool] = None) -> dict[str, torch.Tensor]:
    """Every site of ``sites`` (default: all of ``valid_sites``) for ``prompts`` (a prompt, a
    list of prompts padded as the tokenizer pads, or token ids), read in one forward pass:
    ``{name: tensor}`` keyed by the names given, each the site's whole tensor as
    ``Site.read`` gives it (``(batch, seq, hidden)``, ``(batch, seq, heads, head_dim)`` for head
    sites, ``(batch, query, heads, key)`` for ``attn_pattern``), on the CPU."""
    import nnsight

    names = list(valid_sites(model) if sites is None else sites)
    if not names:
        raise ValueError("give at least one site to cache")
    remote = execute.is_remote(model) if remote is None else remote
    with _eager(model, names):
        resolved = {name: site(model, name) for name in names}  # a bad name fails before any work
        order = sorted({s.name: s for s in resolved.values()}.values(), key=lambda s: s.order)

        def run() -> list:
            with torch.no_grad(), model.trace(prompts, remote=remote, use_cache=False):
                values = nnsight.save([s.read() for s in order])
            return values

        got = execute.call(run) if remote else run()
    by_name = {s.name: v.detach().cpu() for s, v in zip(order, got)}
    return {name: by_name[s.name] for name, s in resolved.items()}
