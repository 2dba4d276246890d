"""Continuations from a causal LM for training: the student's own samples (GKD's on-policy
sequences) and the teacher's greedy continuations (sequence-level KD), generated once.

The teacher's continuations use its KV cache where it has one (a ``transformers`` model, an
``LMStudent``-like module, either behind ``--prune-vocab``'s id mapping): one prefill of the
prompts, then one position per step. A module from ``input_ids`` to logits alone (a factory
teacher) re-reads the whole prefix for each new token instead, O(T^2) per sequence; the run says
which. Greedy decoding is deterministic, so both give the same tokens (a test checks it).
The student's on-policy samples use the recompute loop (the student is small and they are few).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.lm.decode import call_with_cache, takes_cache
from edgekd.lm.teacher import HFLogits
from edgekd.lm.vocab import PrunedTeacher
from edgekd.progress import progress_bar, status
from edgekd.train.device import OnDevice, module_device

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


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


def kv_step(model: nn.Module) -> Step | None:
    """``step(ids, cache) -> (logits, cache)`` running ``model`` with its KV cache (``cache``
    None for a prefill), or None when the model takes no cache (a plain ids -> logits module)."""
    if isinstance(model, PrunedTeacher):  # --prune-vocab: pruned ids in, kept tokens' logits out
        inner, kept = kv_step(model.teacher), model.kept
        if inner is None:
            return None

        def pruned(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
            logits, cache = inner(kept[ids], cache)
            return logits.index_select(-1, kept), cache

        return pruned
    inner_model = model.model if isinstance(model, HFLogits) else model
    if not takes_cache(inner_model):
        return None
    return lambda ids, cache: call_with_cache(inner_model, ids, cache)


@torch.inference_mode()
def greedy_with_cache(step: Step, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """``prompt`` [B, P] followed by ``new_tokens`` greedy tokens: one prefill of the whole
    batch, then one position per step through the cache (the same tokens as
    :func:`continue_tokens`, which re-reads the prefix)."""
    logits, cache = step(prompt, None)
    ids = [prompt]
    for i in range(new_tokens):
        nxt = logits[:, -1, :].float().argmax(-1, keepdim=True)
        ids.append(nxt)
        if i + 1 < new_tokens:
            logits, cache = step(nxt, cache)
    return torch.cat(ids, dim=1)


def teacher_sequences(
    teacher: nn.Module,
    blocks: np.ndarray,
    batch_size: int = 16,
    device: str = "cpu",
    use_cache: bool = True,
) -> np.ndarray:
    """For every block [N, context + 1], its first half followed by the teacher's greedy
    continuation to the same length (Kim & Rush's sequence-level targets), generated on
    ``device`` (the teacher goes back where it was), with the teacher's KV cache where it has
    one and ``use_cache``.

    >>> teacher_sequences(teacher.module, train.blocks).shape  # doctest: +SKIP
    (1200, 129)
    """
    n, length = blocks.shape
    keep = prompt_length(length - 1)
    out = np.empty_like(blocks)
    steps = math.ceil(n / batch_size)
    was_training = teacher.training
    teacher.eval()
    step = kv_step(teacher) if use_cache else None
    status("teacher continuations: " + ("with its KV cache" if step is not None else
                                        "recomputing each prefix (the teacher takes no cache)"))
    with (
        OnDevice(torch.device(device), teacher),
        progress_bar("teacher continuations", steps) as bar,
    ):
        for start in range(0, n, batch_size):
            prompt = torch.from_numpy(np.asarray(blocks[start : start + batch_size, :keep]))
            prompt = prompt.to(module_device(teacher))
            if step is None:
                seq = continue_tokens(teacher, prompt, length - keep)
            else:
                seq = greedy_with_cache(step, prompt, length - keep)
            out[start : start + len(prompt)] = seq.cpu().numpy()
            bar.advance()
    teacher.train(was_training)
    return out


def generated_mask(batch: int, context: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[batch, context]: True at the positions whose next token was generated (not the
    prompt's), where the sequence-level and on-policy losses count."""
    keep = prompt_length(context)
    positions = torch.arange(context, device=device)
    return (positions >= keep - 1).unsqueeze(0).expand(batch, context)
