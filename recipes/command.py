"""The ``interlace`` command: one console script, a subcommand per recipe step.

``interlace COMMAND --help`` shows each step's options with their defaults.  Every step is
also ``python -m recipes.MODULE`` (same options).  The spellings of interp_interv (seed 002)
are accepted: single-dash long options (``-method logit -layer_idx 18``), underscores
(``--test_clean``), its model names (``llama2``, ``gemma2``, ``gpt2``) and a bare
``interlace -method ...`` (its ``multitoken_generation.py``) meaning ``interlace steer``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from .cli import guarded, normalize

# name -> (module, argv prefix, one line of help)
COMMANDS = {
    "interchange": ("recipes.interchange", [], "swap a target word's representations between two "
                                               "prompts, per layer and head (seed 000's Space)"),
    "sweep": ("recipes.sweeps", ["sweep"], "patch one site from source into base, layer x position or head"),
    "causal-trace": ("recipes.sweeps", ["causal-trace"], "ROME's causal tracing: noise the subject, restore states"),
    "path-patch": ("recipes.sweeps", ["path-patch"], "path patching (IOI): a sender head's paths to receivers"),
    "attribute": ("recipes.sweeps", ["attribute"], "attribution patching (AtP, AtP*): every patch from gradients"),
    "circuit": ("recipes.circuit_command", [], "circuit discovery: EAP / EAP-IG edge scores, the top "
                                              "edges, their faithfulness by exact edge patching"),
    "steer": ("recipes.steering", [], "steer generation with a method's feature (interp_interv)"),
    "steering-eval": ("recipes.steering", ["eval"], "every method x alpha: success, coherence, perplexity"),
    "steering-vector": ("recipes.steering", ["vector"], "fit a steering vector (CAA) and save it as a folder"),
    "probe": ("recipes.steering", ["probe"], "fit a probe for the phrase and save it as a folder"),
    "eval": ("recipes.steering", ["score"], "score outputs saved by `steer --out` without regenerating"),
    "iti": ("recipes.iti", [], "inference-time intervention: `iti fit`, `iti generate`"),
    "das": ("recipes.das", [], "distributed alignment search on a trained MLP (pyvene's tutorial)"),
    "app": ("recipes.app", [], "the web app (Streamlit): interchange, sweeps, causal tracing, results"),
}

def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: interlace COMMAND [options]   (interlace COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "Seed 002's spellings work too: interlace -method logit -intervention_phrase "
                  "\"San Francisco\" -alpha 6 -layer_idx 18 (= interlace steer ...)."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``interlace COMMAND ...`` to the recipe that runs it."""
    argv = normalize(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command.startswith("-"):  # interp_interv's multitoken_generation.py: no command
        command, rest = "steer", argv
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; commands are {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module, prefix, _ = COMMANDS[command]
    recipe = importlib.import_module(module)
    return recipe.main(prefix + rest, prog=f"interlace {command}")


def entry() -> None:
    """The console script."""
    sys.exit(guarded(main)())
