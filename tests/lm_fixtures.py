"""Tiny language-model pieces built locally for the LM tests: a BPE tokenizer trained on
``pydoc_data.topics`` (it ships with Python), random Llama- and GPT-2-style teachers saved as
Hugging Face folders, and small text files. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB = 320


def pydoc_lines(n: int | None = None) -> list[str]:
    """Non-blank lines of the Python documentation's topics, in a fixed order."""
    from pydoc_data.topics import topics

    lines = [
        line.strip()
        for key in sorted(topics)
        for line in topics[key].splitlines()
        if len(line.strip()) > 20
    ]
    return lines if n is None else lines[:n]


@functools.cache
def raw_tokenizer(vocab: int = VOCAB):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``<|endoftext|>`` (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(pydoc_lines(2000), trainer)
    return tok


def hf_tokenizer(vocab: int = VOCAB):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer(vocab), eos_token="<|endoftext|>"
    )


def tiny_llama(vocab: int = VOCAB, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False, eos_token_id=0, bos_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab: int = VOCAB, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128,
        eos_token_id=0, bos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def save_hf_teacher(folder: Path, kind: str = "llama", vocab: int = VOCAB) -> Path:
    """A Hugging Face folder (safetensors weights, config, tokenizer) with a tiny random model."""
    model = {"llama": tiny_llama, "gpt2": tiny_gpt2}[kind](vocab)
    model.save_pretrained(folder, safe_serialization=True)
    hf_tokenizer(vocab).save_pretrained(folder)
    return folder


def write_corpus(path: Path, lines: int = 200, start: int = 0) -> Path:
    path.write_text("\n".join(pydoc_lines(start + lines)[start:]) + "\n", encoding="utf-8")
    return path
