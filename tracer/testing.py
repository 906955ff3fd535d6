"""Tiny random models of every supported family, with a tokenizer that needs no network.

Used by the tests of mechanics: hidden size 64, 2 layers, fixed seed, grouped-query
attention where the family has it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

ARCHS = ("llama", "mistral", "qwen2", "gemma2", "gpt2", "gpt_neox", "qwen3", "qwen3_moe",
         "gemma3", "phi3", "olmo2", "mixtral", "gpt_oss", "gpt_neo")
MOE_ARCHS = ("qwen3_moe", "mixtral", "gpt_oss")

# A byte-level BPE is trained on this text at run time, so any English string tokenizes
# and common words get tokens of their own (deterministic: same text, same merges).
_CORPUS = """The capital of France is Paris. The capital of Italy is Rome. The capital of Spain
is Madrid. Paul tried to call George but he was not successful. Who was not successful?
Once upon a time there was a happy little dog who liked to play in the park with a red ball.
In one word Yes or No, is the property is_small true for the concept salamander? dinosaur.
Paul scored a goal on George, which made Paul happy, sad, angry or scared. The Eiffel Tower
is in Paris and the Colosseum is in Rome. San Francisco is a city in California. The cat sat
on the mat. Water is wet and fire is hot. The sun rises in the east and sets in the west.
"""


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    """A small byte-level BPE tokenizer (vocabulary 512) built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def tiny_config(arch: str) -> Any:
    """The transformers config of a tiny ``arch`` model."""
    import transformers as T

    common = dict(vocab_size=512, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch in ("llama", "mistral", "qwen2"):
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config}[arch]
        return cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                   **common)
    if arch == "gemma2":
        return T.Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                              max_position_embeddings=256, **common)
    gqa = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, **common)
    # sliding windows of 4 tokens, so the tests' 8-token prompts really slide
    sliding = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    if arch == "qwen3":
        return T.Qwen3Config(head_dim=16, **gqa)
    if arch == "qwen3_moe":  # layer 1 dense, so both kinds of layer are tested
        return T.Qwen3MoeConfig(head_dim=16, num_experts=4, num_experts_per_tok=2,
                                moe_intermediate_size=32, mlp_only_layers=[1], **gqa)
    if arch == "gemma3":
        return T.Gemma3TextConfig(head_dim=16, **sliding, **gqa)
    if arch == "phi3":
        return T.Phi3Config(**gqa)
    if arch == "olmo2":
        return T.Olmo2Config(**gqa)
    if arch == "mixtral":
        return T.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **gqa)
    if arch == "gpt_oss":
        rope = {**T.GptOssConfig().rope_parameters, "original_max_position_embeddings": 8}
        return T.GptOssConfig(head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                              rope_parameters=rope, **sliding, **gqa)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
    if arch == "gpt_neox":
        return T.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=256, **common)
    if arch == "gpt_neo":  # a local (window 4) and a global layer, so the window really slides
        return T.GPTNeoConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                              attention_types=[[["local", "global"], 1]], window_size=4,
                              max_position_embeddings=256, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def tiny(arch: str = "llama", seed: int = 0) -> Any:
    """A tiny random ``arch`` model wrapped as an nnsight ``TransformersModel`` (fp32, eval)."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch)
    torch.manual_seed(seed)
    module = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return TransformersModel(module, tokenizer=tokenizer())


def save_tiny(model: Any, folder: Any) -> Any:
    """Write a tiny model (an nnsight wrapper or an architecture name) and the offline
    tokenizer as a model folder that ``tracer.load(folder)`` reads; returns the folder."""
    from pathlib import Path

    from .sites import module

    folder = Path(folder)
    module(tiny(model) if isinstance(model, str) else model).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder
