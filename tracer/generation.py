"""Generation with interventions: unsteered and steered continuations from one ``generate``.

Per-step semantics (the part pyvene users find confusing, so it is one rule here):

* step 0 processes the whole prompt and yields the first new token;
* step k >= 1 processes one token, the k-th generated token, and yields token k + 1.

``where="all"`` edits the prompt at step 0 (at each intervention's own ``positions``; None
means every prompt position) and the single new position at every later step;
``where="prompt"`` edits step 0 only; ``where="generated"`` edits steps >= 1 only.
``steps=(start, stop)`` further limits editing to steps ``start <= k < stop``.  Prompts of
different lengths are left-padded, so prompt positions count from the end of the prompt
when negative and from the first pad otherwise.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from .resume import ticking
from .tokens import check_length


WHERE = ("all", "prompt", "generated")


@dataclass
class Generation:
    """Texts (new tokens only) and full token rows of one steered generation call."""

    prompts: list
    plain: Optional[list]
    steered: list
    plain_tokens: Optional[torch.Tensor]
    steered_tokens: torch.Tensor
    prompt_length: int


def split_by_step(interventions: Sequence[Any], where: str = "all") -> tuple[list, list]:
    """(interventions for step 0, interventions for steps >= 1) under ``where``."""
    if where not in WHERE:
        raise ValueError(f"where={where!r}: valid values are {', '.join(WHERE)}")
    ivs = list(interventions)
    at_prompt = ivs if where in ("all", "prompt") else []
    at_new = [iv.with_positions(None) for iv in ivs] if where in ("all", "generated") else []
    return at_prompt, at_new


def generate(model: Any, prompts: Union[str, Sequence[str], dict], interventions: Sequence[Any],
             max_new_tokens: int = 30, *, where: str = "all", steps: Optional[tuple] = None,
             compare: bool = True, remote: Optional[bool] = None, progress: bool = True,
             **kwargs: Any) -> Generation:
    """Greedy (by default) continuations of ``prompts`` with ``interventions`` applied at
    every generation step, and, with ``compare``, the unsteered ones from the same call.

    One ``model.generate`` call: the unsteered and the steered prompts are two invokes of
    one batch (one request with ``remote=True``).  ``kwargs`` go to ``generate``
    (``do_sample``, ``temperature``, ``min_new_tokens``...).  Locally ``progress`` shows a
    bar of the tokens generated once a call lasts over a second.
    """
    from . import checks, execute
    from .sites import site as resolve_site

    if hasattr(prompts, "keys"):  # token ids, as pyvene users pass them
        prompts = {k: v for k, v in dict(prompts).items() if k in ("input_ids", "attention_mask")}
    else:
        prompts = checks.texts("prompts", prompts if isinstance(prompts, str) else list(prompts))
    if not len(prompts):
        raise ValueError("generate needs at least one prompt")
    checks.integer("max_new_tokens", max_new_tokens, low=1)
    check_length(model.config, _prompt_width(model.tokenizer, prompts) + max_new_tokens,
                 f"the prompt with its {max_new_tokens} new tokens")
    remote = execute.is_remote(model) if remote is None else remote
    ivs = sorted(interventions, key=lambda iv: resolve_site(model, iv.site).order)
    at_prompt, at_new = split_by_step(ivs, where)
    start, stop = steps if steps is not None else (0, None)
    tok = model.tokenizer
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("pad_token_id", tok.pad_token_id if tok.pad_token_id is not None
                      else tok.eos_token_id)
    n = max_new_tokens

    def go() -> Any:
        from . import interventions as iv_mod

        with torch.no_grad(), model.generate(max_new_tokens=n, remote=remote, **kwargs) as tr:
            if compare:
                with tr.invoke(prompts):
                    pass
            with tr.invoke(prompts):
                sites = {}  # each site resolved once, at its first step
                for step in tr.iter[0:n]:
                    iv_mod.apply_at_step(model, step, at_prompt, at_new, start, stop, sites)
            with tr.invoke():  # its own invoke: code after a bounded iter loop does not run
                out = tr.result.save()
        return out

    # A generation that ends at EOS before n steps makes the bounded loop ask for a step the
    # run did not make, and nnsight notes that the loop was cut short.  That is the expected
    # end here (the output is saved in its own invoke): the note is dropped for this call
    # only, every other warning stays.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was never reached: the loop asked for a step")
        if remote:
            out = execute.call(go)
        else:
            with _token_bar(model, n, progress):
                out = go()
    out = out.detach().cpu() if isinstance(out, torch.Tensor) else torch.as_tensor(out)
    width = _prompt_width(tok, prompts)
    texts = [tok.decode(row[width:], skip_special_tokens=True) for row in out]
    k = prompts["input_ids"].shape[0] if isinstance(prompts, dict) else len(prompts)
    plain = texts[:k] if compare else None
    return Generation(prompts, plain, texts[-k:], out[:k] if compare else None, out[-k:], width)


@contextlib.contextmanager
def _token_bar(model: Any, n: int, progress: bool) -> Any:
    """A tqdm bar over the ``n`` new tokens, moved after each forward of the model (one per
    generated token); drawn only after a second, so short calls print nothing."""
    from tqdm.auto import tqdm

    from .sites import module

    if not progress:
        yield
        return
    bar = tqdm(total=n, desc="generate", unit="token", delay=1.0)
    try:
        with ticking([module(model)], lambda: bar.update(1) if bar.n < n else None):
            yield
    finally:
        bar.close()


def _prompt_width(tok: Any, prompts: Sequence[str]) -> int:
    """The padded prompt length of a batch (generated tokens start there)."""
    if isinstance(prompts, dict):
        return int(prompts["input_ids"].shape[1])
    return max(len(tok(p)["input_ids"]) for p in prompts)
