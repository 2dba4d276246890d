"""The output layer and the loss over the vocabulary, a chunk of tokens at a time.

In a small LM with a large vocabulary most of a training step is spent on ``tokens x
vocabulary`` floats, not in the layers: a step of 16 blocks of 512 tokens at SmolLM's 49,152
entries has 1.6 GB of logits, and the cross-entropy, the cached teacher's top-k view and their
backward passes each write one or more tensors that size. Every one is a fresh allocation the
kernel hands over page by page, and none fits in a cache.

:func:`head_loss` computes the logits, the loss and the loss's gradient with respect to the
hidden states and the output weights for a few thousand logits' worth of tokens at a time, as
Liger Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy (Wijmans et al. 2024,
https://arxiv.org/abs/2411.09009) do on a GPU: the full logits never exist, and each chunk's
temporaries are small enough to be reused from the allocator's free lists. The loss and the
gradients are the same (up to the order of float summation), for any loss that is a sum of
per-token terms: ``loss_of(logits, part)`` returns the chunk's share of the total, e.g. a
token mean's sum over the chunk divided by the count over all tokens.

``benchmarks/lm_head.py`` measures the step with and without chunks, side by side.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Logits per chunk: 2**22 float32 values are 16 MiB, under glibc's largest mmap threshold (32
# MiB), so a freed chunk's buffers are reused rather than unmapped and faulted in again, and
# enough tokens (85 at 49,152 entries) that adding a chunk's [V, dim] weight gradient costs
# little next to its logits' passes; on a GPU the caching allocator reuses anything, and larger
# chunks keep its kernels busy.
CPU_CHUNK_LOGITS = 2**22
GPU_CHUNK_LOGITS = 2**26

# A chunk's loss: its logits [n, V] and the slice of the flattened positions it covers
LossOfChunk = Callable[[torch.Tensor, slice], torch.Tensor]


def chunk_tokens(vocab_size: int, device: torch.device) -> int:
    """Tokens per chunk at ``vocab_size`` on ``device``.

    >>> chunk_tokens(49152, torch.device("cpu"))
    85
    """
    per = GPU_CHUNK_LOGITS if device.type == "cuda" else CPU_CHUNK_LOGITS
    return max(1, per // vocab_size)


def has_head(model: nn.Module) -> bool:
    """Whether ``model`` exposes its hidden states and output layer (``edgekd.lm.student``):
    then the loss can be computed a chunk at a time; any other ``input_ids -> logits`` module is
    scored on its full logits."""
    head = getattr(model, "lm_head", None)
    return callable(getattr(model, "hidden_states", None)) and (
        isinstance(head, nn.Linear) and head.bias is None
    )


class WholeLogits(nn.Module):
    """``model`` seen as any ``input_ids -> logits`` module (without :func:`has_head`), so that
    its loss runs on whole logits: what the chunks are compared with (tests,
    ``benchmarks/lm_head.py``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, **kwargs):
        return self.model(input_ids, **kwargs)


def head_loss(model: nn.Module, input_ids: torch.Tensor, loss_of: LossOfChunk,
              chunk: int | None = None) -> torch.Tensor:  # fmt: skip
    """The sum over chunks of positions of ``loss_of(logits, part)``, ``logits`` [n, V] the
    model's logits at the flattened positions ``part`` of ``input_ids`` [B, T]; differentiable
    with respect to the model's weights. ``chunk``: tokens per chunk (default
    :func:`chunk_tokens`). A model without :func:`has_head` is run whole. ``loss_of`` may read
    any tensors but is differentiated with respect to the logits only: a loss with trainable
    weights of its own would need them passed through, which no language-model method has."""
    if not has_head(model):
        logits = model(input_ids)
        return loss_of(logits.flatten(0, 1), slice(0, logits.shape[0] * logits.shape[1]))
    hidden = model.hidden_states(input_ids).flatten(0, 1)
    weight = model.lm_head.weight
    chunk = chunk or chunk_tokens(weight.shape[0], hidden.device)
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        return sum(loss_of(hidden[s : s + chunk] @ weight.T, slice(s, s + chunk))
                   for s in range(0, hidden.shape[0], chunk))  # fmt: skip
    return _ChunkedHead.apply(hidden, weight, loss_of, chunk)


class _ChunkedHead(torch.autograd.Function):
    """Forward computes each chunk's loss and, at once, its gradients (the chunk's logits are
    freed before the next); backward scales the stored gradients by the incoming one."""

    @staticmethod
    def forward(ctx, hidden, weight, loss_of, chunk):  # noqa: ANN001 (torch's signature)
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros_like(weight)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            # the gradient with respect to the logits by autograd, the MatMul's two by hand: the
            # weight's accumulates in place rather than as a [V, dim] tensor per chunk
            logits = (h @ weight.T).detach().requires_grad_()
            with torch.enable_grad():
                loss = loss_of(logits, slice(s, s + chunk))
            if loss.requires_grad:
                (g,) = torch.autograd.grad(loss, logits)
                grad_hidden[s : s + chunk] = g @ weight
                grad_weight.addmm_(g.T.to(grad_weight.dtype), h.to(grad_weight.dtype))
            total += loss.detach().float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad, grad_weight * grad, None, None
