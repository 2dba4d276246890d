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
    logits = logits.float()
    total = torch.logsumexp(logits, dim=-1, keepdim=True)
    top = logits.gather(-1, index) - total
    rest = logits.scatter(-1, index, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1, keepdim=True) - total
    return torch.cat([top, tail], dim=-1).clamp_min(LOG_FLOOR)


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
