"""What every recipe's command line shares: bad input is one line and exit code 2."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Callable, Optional, Sequence


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a recipe's ``main(argv)``: a user error prints ``error: ...`` on stderr and
    returns 2 (``--debug`` re-raises it with its traceback); Ctrl-C returns 130."""
    from tracer.execute import RemoteError
    from tracer.models import ModelLoadError

    user_errors = (ValueError, IndexError, TypeError, KeyError, OSError, ModelLoadError, RemoteError)

    @functools.wraps(main)
    def run(argv: Optional[Sequence[str]] = None, **kwargs: Any) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        argv = [a for a in argv if a != "--debug"]
        try:
            return main(argv, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except user_errors as error:
            if debug:
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
            return 2

    return run


# interp_interv's model names: the checkpoints its README names
SEED_MODELS = {"llama2": "meta-llama/Llama-2-7b-hf", "gemma2": "google/gemma-2-2b",
               "gpt2": "openai-community/gpt2"}


def normalize(argv: Sequence[str]) -> list[str]:
    """Seed 002's spellings as ours: ``-layer_idx`` -> ``--layer-idx``, ``--test_clean`` ->
    ``--test-clean``, ``-model llama2`` -> ``--model meta-llama/Llama-2-7b-hf``.  Values
    (anything after an option, or not starting with a dash) are left alone, and so are
    negative numbers and one-letter flags such as ``-h``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("-") and len(arg) > 2 and not _number(arg):
            name, eq, value = arg.lstrip("-").partition("=")
            arg = "--" + name.replace("_", "-") + (eq + value if eq else "")
        if out and out[-1] == "--model" and arg in SEED_MODELS:
            arg = SEED_MODELS[arg]
        out.append(arg)
    return out


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default said once: appended only where the help text
    does not already say it, and never for options without one (None, flags off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS
        if "default" in text or empty or not action.option_strings:
            return text
        return super()._get_help_string(action)


# -- the options every step shares ---------------------------------------------------------

DTYPES = ("float32", "bfloat16", "float16")
MODEL_HELP = ("smollm2 (embedded SmolLM2-135M-Instruct), gemma3-270m (embedded), a model folder, "
              "a .gguf file, or a hub id (read from the local cache; seed 002's llama2/gemma2/gpt2 "
              "name its checkpoints)")


def shared(p: Any, *, out: Optional[str], out_help: str, layers: Optional[str] = None,
           model: Optional[str] = "smollm2", model_help: str = MODEL_HELP,
           seed_help: str = "seed of every random choice (torch, numpy, random)",
           out_required: bool = True) -> None:
    """Add the shared options to parser ``p``: ``--model --device --dtype --remote --seed``,
    ``--layers`` (when ``layers`` says what they select) and ``--out`` (required when
    ``out`` is None and ``out_required``).  ``setup(args)`` then seeds, checks ``--out`` and
    loads the model."""
    g = p.add_argument_group("shared options")
    g.add_argument("--model", default=model, help=model_help)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: where transformers puts it)")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="weights' dtype (default: the checkpoint's; float32 for the embedded models)")
    g.add_argument("--remote", action="store_true",
                   help="run on an NDIF server (host: INTERLACE_NDIF_HOST or nnsight's config)")
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    if layers is not None:
        g.add_argument("--layers", nargs="+", default=None, metavar="L",
                       help=f"{layers}: indices and ranges, e.g. '0-5 12' or '0-5,12' (default: all)")
    g.add_argument("--out", default=out, required=out is None and out_required, metavar="DIR",
                   help=out_help)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# option -> (flag, lowest, highest) for the counts any step may take
COUNTS = {"max_batch": ("--max-batch", 1, None), "limit": ("--limit", 1, None),
          "epochs": ("--epochs", 1, None), "samples": ("--samples", 1, 1000),  # patching.MAX_SAMPLES
          "generation_length": ("--generation-length", 1, None)}


def check_args(args: Any) -> None:
    """The options every step may share, checked before any work: counts in range,
    ``--device`` a device this machine has, ``--intervention-phrase`` not empty."""
    import torch

    from tracer import checks

    for attr, (flag, low, high) in COUNTS.items():
        if getattr(args, attr, None) is not None:
            checks.integer(flag, getattr(args, attr), low, high)
    device = getattr(args, "device", None)
    if device is not None:
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ValueError(f"--device {device!r} is not a device; devices look like cpu, cuda, "
                             f"cuda:1 or mps") from None
        have = {"cpu": True, "cuda": torch.cuda.is_available(),
                "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not have.get(kind, False):
            raise ValueError(f"--device {device}: this machine has no {kind} device; use "
                             f"{' or '.join(k for k, ok in have.items() if ok)}")
    if getattr(args, "intervention_phrase", None) is not None:
        checks.text("--intervention-phrase", args.intervention_phrase)


def parse_heads(values: Optional[Sequence[str]]) -> Any:
    """``--heads``: None (all heads together), ``each``, or head indices."""
    if not values:
        return None
    if list(values) == ["each"]:
        return "each"
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--heads takes 'each' or head indices such as 0 3 5; got "
                         f"{' '.join(values)!r}") from None


def setup(args: Any, load: bool = True) -> Any:
    """Seed, check the shared options and that ``--out`` is a writable folder (before any
    work), and load ``--model`` with ``--device``/``--dtype``/``--remote``; returns the model
    (None when ``load`` is False: ``load_model`` later, when the model's name is known only
    after reading input)."""
    from tracer import execute
    from tracer.files import writable_dir

    check_args(args)
    seed_everything(args.seed)
    if args.out is not None:
        writable_dir(args.out, "--out")
    if args.remote:
        execute.configure()
    return load_model(args) if load else None


def load_model(args: Any) -> Any:
    """``--model`` loaded with ``--device``/``--dtype``/``--remote`` (after ``setup``)."""
    import torch

    import tracer

    dtype = getattr(torch, args.dtype) if args.dtype else None
    return tracer.load(args.model, remote=args.remote, device=None if args.remote else args.device,
                       dtype=dtype)


def parse_layers(text: Any, n_layers: int) -> Optional[list[int]]:
    """``None`` / ``"all"`` / empty -> None (every layer); ``"0-5, 9"`` or ``["0-5", "9"]``
    -> [0..5, 9]; an error names the bad part and the valid range."""
    if text is None:
        return None
    parts = [t for item in ([text] if isinstance(text, (str, int)) else text)
             for t in str(item).replace(" ", ",").split(",") if t]
    if not parts or parts == ["all"]:
        return None
    out: list[int] = []
    for part in parts:
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"layers: {part!r} is not a layer or a range like 3-7")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b < n_layers:
            raise ValueError(f"layers: {part!r} is outside 0-{n_layers - 1}")
        out.extend(range(a, b + 1))
    return sorted(set(out))
