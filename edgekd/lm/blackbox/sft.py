"""Training pairs as token arrays, and a PyTorch causal LM seen through the evaluation callables.

Each example becomes one row of ``context`` tokens: the prompt's tokens, then the target's
(tokenized on its own, after a space, as TRL's prompt-completion format does) and the end-of-text
token; the loss counts only the target and end-of-text positions (the prompt's labels are -100,
PyTorch's ignore index). A prompt too long for the row loses its beginning, never the target; a
target that cannot fit at all is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.lm.blackbox.forms import Example

IGNORE = -100
SEPARATOR = " "  # between a prompt and its target, in training and in scoring alike

Encode = Callable[[str], list[int]]


@dataclass(frozen=True)
class EncodedExamples:
    input_ids: np.ndarray  # int64 [N, context], padded with pad_id
    labels: np.ndarray  # int64 [N, context], IGNORE outside the targets
    dropped_too_long: int

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_pair(
    prompt: str, target: str, encode: Encode, eos_id: int, context: int
) -> tuple[list[int], list[int]] | None:
    """(ids, labels) for one pair, or None when the target alone does not fit."""
    tail = encode(SEPARATOR + target) + [eos_id]
    if len(tail) >= context:
        return None
    head = encode(prompt)[-(context - len(tail)) :]
    return head + tail, [IGNORE] * len(head) + tail


def encode_examples(
    examples: Sequence[Example], encode: Encode, eos_id: int, pad_id: int, context: int
) -> EncodedExamples:
    ids = np.full((len(examples), context), pad_id, dtype=np.int64)
    labels = np.full((len(examples), context), IGNORE, dtype=np.int64)
    kept = dropped = 0
    for example in examples:
        pair = encode_pair(example.prompt, example.target, encode, eos_id, context)
        if pair is None:
            dropped += 1
            continue
        row_ids, row_labels = pair
        ids[kept, : len(row_ids)] = row_ids
        labels[kept, : len(row_labels)] = row_labels
        kept += 1
    return EncodedExamples(ids[:kept], labels[:kept], dropped)


def _logits(model: Any, ids):
    out = model(ids)
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, tuple) else out


def torch_callables(
    model: Any, encode: Encode, decode: Callable[[list[int]], str], eos_id: int, context: int,
    device: str = "cpu",
):
    """``generate`` (greedy) and ``score`` callables over a PyTorch causal LM (an edgekd student
    or any ``transformers`` model) for ``evaluate.evaluate_held_out``."""
    import torch

    def generate(prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        texts = []
        for prompt in prompts:
            ids = encode(prompt)[-(context - max_new_tokens) :]
            new: list[int] = []
            with torch.inference_mode():
                for _ in range(max_new_tokens):
                    row = torch.tensor([ids + new], device=device)
                    token = int(_logits(model, row)[0, -1].argmax())
                    if token == eos_id:
                        break
                    new.append(token)
            texts.append(decode(new).strip())
        return texts

    def score(prompt: str, target: str) -> tuple[float, int]:
        pair = encode_pair(prompt, target, encode, eos_id, context)
        if pair is None:
            return 0.0, 0
        ids, labels = (torch.tensor([x], device=device) for x in pair)
        with torch.inference_mode():
            logits = _logits(model, ids)[0, :-1].float()
            target_ids = labels[0, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits, target_ids, ignore_index=IGNORE, reduction="sum"
            )
        return float(loss), int((target_ids != IGNORE).sum())

    return generate, score
