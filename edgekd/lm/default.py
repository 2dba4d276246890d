"""The embedded default for ``--task causal-lm``: text that ships with Python and a small teacher
trained on it once, cached like the classifier default teacher (``edgekd.teacher.default``).

The text is ``pydoc_data.topics`` (the language reference's topics that ``help()`` shows: about
465,000 characters in CPython 3.11-3.13), one document per non-blank line, split by position into
training, validation and test documents. The tokenizer is a byte-level BPE trained on the
training documents with ``tokenizers``; the teacher a Llama-style ``transformers`` model trained
from scratch with ``edgekd.lm.train``. Both are saved as an ordinary Hugging Face folder
(safetensors) in edgekd's cache and read back through ``edgekd.lm.teacher`` like any user's
teacher. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from edgekd.cache import cache_dir, cache_key
from edgekd.fileio import atomic_dir
from edgekd.lm.data import TokenBlocks, pack_blocks
from edgekd.lm.teacher import LMTeacher, WrappedTokenizer, load_hf_teacher, save_hf_quietly
from edgekd.lm.train import LMTrainConfig, train_lm
from edgekd.progress import status

EOS = "<|endoftext|>"
VOCAB = 2048
CONTEXT = 128
# The teacher: 4 layers of width 128 (1.3M parameters, 0.5M of them in the two embedding tables),
# trained for 300 steps of 16 blocks of 128 tokens (about 5 passes over the 115k training
# tokens). Measured (torch 2.13, CPU): 81 s of CPU time in all (6.5 min of wall time at load
# 10-12 on 2 shared cores, so about a minute on 2 idle ones), test perplexity 58.8. Width 192
# and 400 steps (2.6M) took 176 s of CPU time and reached 61: no better on this little text.
TEACHER_ARCH = dict(
    hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=CONTEXT,
)  # fmt: skip
TEACHER_RECIPE = LMTrainConfig(steps=300, lr=3e-3, batch_size=16, evals=3)
SOURCE = "pydoc_data.topics"


def default_documents() -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) documents: the non-blank lines of ``pydoc_data.topics`` in
    sorted-topic order, every 20th to test and the one after it to validation."""
    from pydoc_data.topics import topics

    docs = [
        line.strip()
        for key in sorted(topics)
        for line in topics[key].splitlines()
        if line.strip()
    ]
    train = [d for i, d in enumerate(docs) if i % 20 > 1]
    val = [d for i, d in enumerate(docs) if i % 20 == 1]
    test = [d for i, d in enumerate(docs) if i % 20 == 0]
    return train, val, test


def default_blocks(
    tokenizer: WrappedTokenizer, context: int = CONTEXT
) -> tuple[TokenBlocks, TokenBlocks, TokenBlocks]:
    """The default text as (train, validation, test) blocks of ``context`` tokens."""
    return tuple(
        pack_blocks((tokenizer.encode(d) for d in docs), context, tokenizer.eos_id, f"{SOURCE}:{n}")
        for n, docs in zip(("train", "val", "test"), default_documents(), strict=True)
    )


def default_lm_teacher(seed: int = 0) -> LMTeacher:
    """The default teacher, from the cache or trained now (about a minute on two idle cores).

    >>> teacher = default_lm_teacher()  # doctest: +SKIP
    >>> teacher.source  # doctest: +SKIP
    'default (cached)'
    """
    import transformers

    train, _, _ = default_documents()
    text = hashlib.sha256("\n".join(train).encode()).hexdigest()[:16]
    key = cache_key(
        text=text, vocab=VOCAB, arch=TEACHER_ARCH, recipe=TEACHER_RECIPE, seed=seed,
        torch=torch.__version__.split("+")[0], transformers=transformers.__version__, v=1,
    )  # fmt: skip
    folder = cache_dir() / f"lm-teacher-{key}"
    if (folder / "config.json").is_file():
        teacher = load_hf_teacher(folder)
        return _relabel(teacher, "default (cached)")
    status(
        f"training the default language-model teacher (Llama-style, {TEACHER_ARCH['hidden_size']}"
        f" wide, {TEACHER_ARCH['num_hidden_layers']} layers; {TEACHER_RECIPE.steps} steps) on "
        f"{SOURCE}"
    )
    start = time.perf_counter()
    model, hf_tok = _train_teacher(train, seed)
    seconds = time.perf_counter() - start
    with atomic_dir(folder, overwrite=True) as tmp:
        save_hf_quietly(model, tmp)
        hf_tok.save_pretrained(tmp)
    teacher = _relabel(load_hf_teacher(folder), "default (trained now)")
    status(f"default teacher trained in {seconds:.0f} s: {folder}")
    return teacher


def _train_teacher(train_docs: list[str], seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from edgekd.lm.teacher import HFLogits

    raw = train_tokenizer(train_docs, VOCAB)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS)
    tok = WrappedTokenizer(hf_tok, SOURCE)
    config = LlamaConfig(
        vocab_size=VOCAB, eos_token_id=tok.eos_id, bos_token_id=tok.eos_id,
        tie_word_embeddings=False, **TEACHER_ARCH,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    blocks, val, _ = default_blocks(tok)
    recipe = LMTrainConfig(**{**TEACHER_RECIPE.settings(), "seed": seed})
    train_lm(HFLogits(model), blocks.blocks, val.blocks, recipe, description="teacher")
    return model.eval(), hf_tok


def train_tokenizer(documents: list[str], vocab: int = VOCAB):
    """A byte-level BPE ``tokenizers.Tokenizer`` of ``vocab`` tokens with ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    return tok


def _relabel(teacher: LMTeacher, source: str) -> LMTeacher:
    from dataclasses import replace

    return replace(teacher, source=source)


def corpus_tokens(blocks: TokenBlocks) -> np.ndarray:
    """The distinct token ids the blocks use (sorted)."""
    return np.unique(blocks.blocks)
