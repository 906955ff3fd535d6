"""pyvene's model helpers (``pv.create_gpt2()`` and friends): ``(config, tokenizer, model)``.

They load with transformers from a local folder, the Hugging Face cache, or the hub when a
network is there, with the same defaults as pyvene 0.1.8; with none of these they raise one
clear error.  Interlace's own way is ``tracer.load`` (the embedded model needs no download).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch


class CreateError(OSError):
    """A ``create_*`` helper could not find the model locally and could not download it."""


def _create(kind: str, name: str, cache_dir: Optional[str], local_files_only: Optional[bool],
            eager: bool = False, dtype: Any = None, tokenizer_name: Optional[str] = None) -> tuple:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    model_class = getattr(transformers, kind)
    kwargs: dict = {"cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
        if eager:  # pyvene's GPT-2 helpers ask for eager attention
            config._attn_implementation = "eager"
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or name, **kwargs)
        extra = {"dtype": dtype} if dtype is not None else {}
        model = model_class.from_pretrained(name, config=config, **kwargs, **extra)
    except OSError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CreateError(f"could not load {name!r} for {kind}: it is not a local folder, not in the "
                          f"Hugging Face cache, and the hub was not reachable ({first}). Pass a "
                          f"local folder as name=, or load a model with tracer.load (the embedded "
                          f"SmolLM2 needs no download)") from None
    return config, tokenizer, model


def create_gpt2(name: str = "gpt2", cache_dir: Optional[str] = None,
                local_files_only: Optional[bool] = None) -> tuple:
    """pyvene's ``create_gpt2``: GPT-2 without its LM head (eager attention)."""
    return _create("GPT2Model", name, cache_dir, local_files_only, eager=True)


def create_gpt2_lm(name: str = "gpt2", config: Any = None, cache_dir: Optional[str] = None,
                   local_files_only: Optional[bool] = None) -> tuple:
    """pyvene's ``create_gpt2_lm``: GPT-2 with its LM head (a given ``config`` builds it
    with random weights, as pyvene does)."""
    if config is None:
        return _create("GPT2LMHeadModel", name, cache_dir, local_files_only, eager=True)
    return _from_config("GPT2LMHeadModel", config, name, cache_dir, local_files_only)


def _from_config(kind: str, config: Any, name: str, cache_dir: Optional[str],
                 local_files_only: Optional[bool]) -> tuple:
    """pyvene's ``config=`` form: the model built from ``config`` with random weights, the
    tokenizer still read from ``name``."""
    import transformers

    return config, tokenizer_from(name, cache_dir, local_files_only), getattr(transformers, kind)(config)


def tokenizer_from(name: str, cache_dir: Optional[str] = None,
                   local_files_only: Optional[bool] = None) -> Any:
    """A tokenizer from a local folder, the cache or the hub, or one ``CreateError``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=cache_dir,
                                             **({} if local_files_only is None else
                                                {"local_files_only": local_files_only}))
    except OSError as error:
        raise CreateError(f"could not load the tokenizer {name!r}: {str(error).splitlines()[0]}") from None


def create_gpt_neo(name: str = "roneneldan/TinyStories-33M", cache_dir: Optional[str] = None,
                   local_files_only: Optional[bool] = None) -> tuple:
    """pyvene's ``create_gpt_neo`` (its default model; the tokenizer from the same folder)."""
    return _create("GPTNeoForCausalLM", name, cache_dir, local_files_only)


def create_gpt_neox(name: str = "EleutherAI/pythia-70m", cache_dir: Optional[str] = None,
                    local_files_only: Optional[bool] = None) -> tuple:
    """pyvene's ``create_gpt_neox``."""
    return _create("GPTNeoXForCausalLM", name, cache_dir, local_files_only)


def _causal_lm(name: str, kind: str, default: str) -> Callable[..., tuple]:
    """pyvene's ``create_<family>`` for a causal LM it loads in bfloat16 by default; a given
    ``config`` builds the model with random weights (pyvene's llama and olmo helpers take one;
    its olmo helper fails with it, calling ``AutoModelForCausalLM(config)``)."""
    def create(name: str = default, cache_dir: Optional[str] = None, dtype: Any = torch.bfloat16,
               config: Any = None, local_files_only: Optional[bool] = None) -> tuple:
        if config is not None:
            return _from_config(kind, config, name, cache_dir, local_files_only)
        return _create(kind, name, cache_dir, local_files_only, dtype=dtype)
    create.__name__ = create.__qualname__ = name
    create.__doc__ = (f"pyvene's ``{name}`` ({kind}, {default!r} by default, bfloat16 as pyvene; "
                      f"``config=`` builds it with random weights).")
    return create


create_llama = _causal_lm("create_llama", "LlamaForCausalLM", "sharpbai/alpaca-7b-merged")
create_gemma = _causal_lm("create_gemma", "GemmaForCausalLM", "google/gemma-2b-it")
create_gemma2 = _causal_lm("create_gemma2", "Gemma2ForCausalLM", "google/gemma2-2b")
create_qwen2 = _causal_lm("create_qwen2", "Qwen2ForCausalLM", "Qwen/Qwen2-7B-beta")
create_mistral = _causal_lm("create_mistral", "MistralForCausalLM", "mistralai/Mistral-7B-v0.1")
create_olmo = _causal_lm("create_olmo", "OlmoForCausalLM", "allenai/OLMo-7B-0424-hf")
