"""A small randomly initialised llama model (SmolLM2's architecture), for logic tests of training parts."""

from __future__ import annotations


def tiny_llama(attn: str = "sdpa"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=301, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, attn_implementation=attn,
    )
    return LlamaForCausalLM(config)
