"""Learning Deep Representations with Probabilistic Knowledge Transfer (Passalis & Tefas, 2018).

Paper: https://arxiv.org/abs/1803.10837
Follows RepDistiller's ``distiller_zoo/PKT.py`` (itself from the authors' code).
"""

from __future__ import annotations

import torch

from edgekd.losses._checks import require_same_batch


def _conditional_probs(emb: torch.Tensor, eps: float) -> torch.Tensor:
    # torch.linalg.vector_norm has a zero (sub)gradient at 0, where sqrt(sum(x^2)) in the
    # reference gives NaN gradients for an all-zero row; the forward value is identical.
    unit = emb / (torch.linalg.vector_norm(emb, dim=1, keepdim=True) + eps)
    unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
    # Cosine kernel mapped from [-1, 1] to [0, 1], then each row made a distribution.
    sim = (unit @ unit.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """KL divergence between the teacher's and student's cosine-kernel sample distributions.

    Inputs are flattened to (B, -1); feature sizes may differ. As in the reference, the KL terms
    are averaged over all B * B entries (a ``mean``, not a per-row sum), and eps is added inside
    the log ratio.

    >>> pkt(torch.eye(3), torch.eye(3))
    tensor(0.)
    """
    require_same_batch("pkt", student_emb, teacher_emb)
    b = student_emb.shape[0]
    p_student = _conditional_probs(student_emb.reshape(b, -1), eps)
    p_teacher = _conditional_probs(teacher_emb.detach().reshape(b, -1), eps)
    return torch.mean(p_teacher * torch.log((p_teacher + eps) / (p_student + eps)))
