"""Tiny language models for the device-side LM tests (export, quantization, benchmark): random
weights, built locally from a ``transformers`` config or as an ``LMStudent``; nothing downloads."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network, whatever is cached

VOCAB = 61


def tiny_llama(vocab: int = VOCAB, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab: int = VOCAB, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_student(vocab: int = VOCAB, seed: int = 0, n_kv_heads: int = 2):
    from edgekd.lm.student import LMStudent, LMStudentConfig

    torch.manual_seed(seed)
    return LMStudent(LMStudentConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4,
                                     n_kv_heads=n_kv_heads, ffn_hidden=64, context=128)).eval()
