"""What the language-model methods share: per-token log-probabilities at a temperature, the mean
over the tokens that count, and the top-k view of a cached teacher.

**The top-k view (how the tail is treated).** A large teacher's logits are cached as its top-k
log-probabilities per position plus the log of the remaining mass (``edgekd.lm.topk``). The
losses then compare two distributions over k + 1 outcomes, the teacher's k tokens and "any other
token": the student's side is its probabilities of the same k tokens and the sum of the rest
(:func:`bucket_log_probs`). This is exact for the coarsened distributions, and by the
data-processing inequality a divergence between them is at most the full-vocabulary one (equal
when k covers the vocabulary). A temperature T is applied to the k + 1 buckets, the tail
tempered as if it were one token: exact for the k tokens' ratios, an approximation for the tail
(at the usual T = 1 for language models nothing is approximated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import DistillBatch, Method

# exp(-80) is ~1.8e-35, still a normal float32: a bucket with (almost) no mass stays finite, so
# that 0 * log 0 never becomes NaN
LOG_FLOOR = -80.0


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) over the last dimension, in float32."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def token_mean(per_token: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over positions, counting only those where ``mask`` is true (all without one)."""
    if mask is None:
        return per_token.mean()
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def bucket_log_probs(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The log-probabilities of tokens ``index`` [..., k] and, last, of all other tokens
    together [..., k + 1], from full ``logits`` [..., V].

    >>> bucket_log_probs(torch.zeros(4), torch.tensor([0])).exp()
    tensor([0.2500, 0.7500])
    """
    return top_k_scores(logits, index)[0]


def top_k_scores(logits: torch.Tensor, index: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(:func:`bucket_log_probs`, the cross-entropy of ``labels`` [...] per position, 0 where a
    label is -100; None without labels) from one softmax over the vocabulary.

    The passes over ``logits`` are what a small LM's training step spends most on (``edgekd.lm.
    head``), so both scores share the log-sum-exp and the probabilities, and the backward pass is
    written out (:class:`_TopKScores`): one pass over the vocabulary where autograd's made a
    dozen. The tail's mass is summed over the other tokens, not taken as one minus the top's,
    which would lose it to rounding when the top-k hold nearly all of it.

    >>> buckets, ce = top_k_scores(torch.zeros(1, 4), torch.tensor([[0]]), torch.tensor([2]))
    >>> ce  # log 4
    tensor([1.3863])
    """
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    flat = flat if flat.dtype == torch.float64 else flat.float()  # float32 under any autocast
    y = None if labels is None else labels.reshape(-1)
    buckets, ce = _TopKScores.apply(flat, index.reshape(-1, index.shape[-1]), y)
    buckets = buckets.reshape(*shape, index.shape[-1] + 1).clamp_min(LOG_FLOOR)
    return buckets, None if labels is None else ce.reshape(shape)


class _TopKScores(torch.autograd.Function):
    """Forward: ``lse`` = log sum exp x, ``p`` = exp(x - lse); buckets ``x[idx] - lse`` and
    ``log(sum of p over the other tokens)``; cross-entropy ``lse - x[y]``. Backward, with ``g``
    the buckets' incoming gradient (``g_k`` the tail's) and ``c`` the cross-entropy's:
    ``dx_v = p_v (c - sum g) + [v not in idx] p_v g_k / tail + sum_j g_j [v = idx_j] - c [v = y]``.
    """

    @staticmethod
    def forward(ctx, x, index, labels):  # noqa: ANN001 (torch's signature)
        # exp(x - max) and its sum, p = e / sum never written out: four passes over the vocabulary
        top = x.amax(-1, keepdim=True)
        e = (x - top).exp_()
        total = e.sum(-1, keepdim=True)
        e_top = e.gather(-1, index)
        rest = e.scatter_(-1, index, 0.0).sum(-1, keepdim=True)  # over the tail's own tokens
        e.scatter_(-1, index, e_top)
        lse = top + total.log()
        buckets = torch.cat([x.gather(-1, index) - lse, rest.log() - total.log()], dim=-1)
        ce = None
        if labels is not None:
            valid = labels != -100
            safe = torch.where(valid, labels, 0)[:, None]
            ce = torch.where(valid, (lse - x.gather(-1, safe))[:, 0], 0.0)
            ctx.mark_non_differentiable(valid)
            ctx.safe, ctx.valid = safe, valid
        ctx.save_for_backward(e, total, rest / total, e_top / total, index)
        ctx.has_labels = labels is not None
        return buckets, ce

    @staticmethod
    def backward(ctx, g_buckets, g_ce):  # noqa: ANN001
        e, total, tail, p_top, index = ctx.saved_tensors
        k = index.shape[-1]
        if g_buckets is None:
            g_buckets = torch.zeros(e.shape[0], k + 1, dtype=e.dtype, device=e.device)
        c = torch.zeros_like(tail)
        if ctx.has_labels and g_ce is not None:
            c = torch.where(ctx.valid, g_ce, 0.0)[:, None]
        g_top, g_tail = g_buckets[:, :k], g_buckets[:, k:]
        per_tail = torch.where(tail > 0, g_tail / tail, 0.0)
        # p_v (c - sum g + g_k / tail) for every token, one pass; then the top-k's corrections
        grad = e * ((c - g_buckets.sum(-1, keepdim=True) + per_tail) / total)
        grad.scatter_add_(-1, index, g_top - p_top * per_tail)  # the top-k are not the tail's
        if ctx.has_labels:
            grad.scatter_add_(-1, ctx.safe, -c)
        return grad, None, None


def token_views(batch: DistillBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) scores over one support: full logits, or with a cached top-k teacher
    (``batch.teacher_index``) the k + 1 buckets of both."""
    if batch.teacher_index is None:
        return batch.student_logits, batch.teacher_logits
    student = bucket_log_probs(batch.student_logits, batch.teacher_index)
    return student, batch.teacher_logits.float().clamp_min(LOG_FLOOR)


class TokenMethod(Method):
    """A method for causal language models: per-token losses over ``[B, T, V]`` logits.

    ``on_policy``: the share of training steps on sequences the student samples itself (GKD),
    which needs the live teacher; ``teacher_sequences``: trains on the teacher's own greedy
    continuations (sequence-level KD), generated once before training.
    """

    tasks = ("causal-lm",)
    on_policy = 0.0
    teacher_sequences = False
