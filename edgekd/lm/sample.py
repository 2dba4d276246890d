"""Continuations from a causal LM for training: the student's own samples (GKD's on-policy
sequences) and the teacher's greedy continuations (sequence-level KD), generated once.

Any module from ``input_ids`` to logits works (a teacher may have no KV cache), so each new token
re-reads the whole prefix: O(T^2) per sequence, cheap at the short contexts edge students use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgekd.progress import progress_bar
from edgekd.train.device import module_device


@torch.no_grad()
def continue_tokens(
    model: nn.Module,
    prompt: torch.Tensor,
    new_tokens: int,
    greedy: bool = True,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``prompt`` [B, P] followed by ``new_tokens`` tokens: the argmax at each step, or (not
    greedy) a draw from softmax(logits / temperature) with ``generator``.

    >>> continue_tokens(teacher, torch.tensor([[5, 6]]), 3).shape  # doctest: +SKIP
    torch.Size([1, 5])
    """
    was_training = model.training
    model.eval()
    ids = prompt.to(module_device(model))
    for _ in range(new_tokens):
        logits = model(ids)[:, -1, :].float()
        if greedy:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            probs = torch.softmax(logits / temperature, dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, nxt], dim=1)
    model.train(was_training)
    return ids


def prompt_length(context: int) -> int:
    """The prompt is the first half of a block; the model continues for the rest."""
    return max(1, (context + 1) // 2)


def teacher_sequences(
    teacher: nn.Module, blocks: np.ndarray, batch_size: int = 16
) -> np.ndarray:
    """For every block [N, context + 1], its first half followed by the teacher's greedy
    continuation to the same length (Kim & Rush's sequence-level targets)."""
    n, length = blocks.shape
    keep = prompt_length(length - 1)
    out = np.empty_like(blocks)
    with progress_bar("teacher continuations", math.ceil(n / batch_size)) as bar:
        for start in range(0, n, batch_size):
            prompt = torch.from_numpy(np.asarray(blocks[start : start + batch_size, :keep]))
            seq = continue_tokens(teacher, prompt, length - keep)
            out[start : start + len(prompt)] = seq.cpu().numpy()
            bar.advance()
    return out


def generated_mask(batch: int, context: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[batch, context]: True at the positions whose next token was generated (not the
    prompt's), where the sequence-level and on-policy losses count."""
    keep = prompt_length(context)
    positions = torch.arange(context, device=device)
    return (positions >= keep - 1).unsqueeze(0).expand(batch, context)
