"""Language-model quality as pure functions of logits: perplexity, next-token top-1 agreement with
the teacher, and KL divergence from the teacher.

Each takes torch tensors or numpy arrays (``[..., V]`` logits or log-probabilities: both give the
same answer, since log-softmax of log-probabilities is the identity) and an optional boolean
``mask`` (``[...]``, True = count this position); each returns a Python float. Positions are
already aligned by the caller: ``logits[..., t, :]`` is the prediction for ``targets[..., t]``
(shift by one before calling when the logits come from the same ids). Sums run in float64, and
nothing here imports torch, so ONNX-only processes (the benchmark) can use it.

Perplexity is exp of the mean token negative log-likelihood (Jelinek et al. 1977); uniform logits
over V tokens give exactly V. KL is forward, KL(teacher || student), in nats per token, the
quantity Hinton et al.'s token-level distillation minimises.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekd.errors import BadInputError


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, converted without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def log_softmax(logits: Any) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64."""
    z = _array(logits).astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _mask(mask: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = _array(mask).astype(bool)
    if m.shape != shape:
        raise BadInputError(f"{what}: mask shape {m.shape} does not match positions {shape}")
    return m


def nll_sum(logits: Any, targets: Any, mask: Any = None) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of ``targets`` and the number of positions counted:
    the pieces to pool perplexity over many batches (``exp(sum / count)``)."""
    logp = log_softmax(logits)
    t = _array(targets).astype(np.int64)
    if logp.shape[:-1] != t.shape:
        raise BadInputError(
            f"perplexity: logits {logp.shape} do not match targets {t.shape} (want [..., V] and "
            "[...])"
        )
    if t.size and (t.min() < 0 or t.max() >= logp.shape[-1]):
        raise BadInputError(f"perplexity: target ids must lie in [0, {logp.shape[-1]}), got "
                            f"{t.min()}..{t.max()}")
    m = _mask(mask, t.shape, "perplexity")
    picked = np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
    return float(-picked[m].sum()), int(m.sum())


def perplexity(logits: Any, targets: Any, mask: Any = None) -> float:
    """exp(mean NLL) of ``targets`` under ``logits``.

    >>> round(perplexity(np.zeros((1, 3, 7)), np.array([[0, 4, 6]])), 9)  # uniform over 7
    7.0
    """
    total, count = nll_sum(logits, targets, mask)
    if count == 0:
        raise BadInputError("perplexity: no positions to score (empty input or all masked)")
    return math.exp(total / count)


def _pair(student_logits: Any, teacher_logits: Any, mask: Any, what: str):
    s, t = _array(student_logits), _array(teacher_logits)
    if s.shape != t.shape:
        raise BadInputError(f"{what}: student logits {s.shape} and teacher logits {t.shape} differ")
    m = _mask(mask, s.shape[:-1], what)
    if not m.any():
        raise BadInputError(f"{what}: no positions to score (empty input or all masked)")
    return s, t, m


def top1_agreement(student_logits: Any, teacher_logits: Any, mask: Any = None) -> float:
    """Share of positions where the student's most likely next token is the teacher's.

    >>> top1_agreement(np.array([[[0., 1.], [2., 0.]]]), np.array([[[0., 5.], [0., 1.]]]))
    0.5
    """
    s, t, m = _pair(student_logits, teacher_logits, mask, "top-1 agreement")
    same = s.argmax(axis=-1) == t.argmax(axis=-1)
    return float(same[m].mean())


def kl_to_teacher(student_logits: Any, teacher_logits: Any, mask: Any = None,
                  temperature: float = 1.0) -> float:
    """Mean over positions of KL(teacher || student) in nats, both softened by ``temperature``."""
    if not temperature > 0:
        raise BadInputError(f"KL to teacher: temperature must be positive, got {temperature}")
    s, t, m = _pair(student_logits, teacher_logits, mask, "KL to teacher")
    log_s = log_softmax(s.astype(np.float64) / temperature)
    log_t = log_softmax(t.astype(np.float64) / temperature)
    # 0 * log 0 = 0: a token the teacher rules out (p = 0) adds nothing.
    p_t = np.exp(log_t)
    with np.errstate(invalid="ignore"):
        per_position = np.where(p_t > 0, p_t * (log_t - log_s), 0.0).sum(axis=-1)
    return float(per_position[m].mean())
