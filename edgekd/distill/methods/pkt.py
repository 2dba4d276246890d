"""Learning Deep Representations with Probabilistic Knowledge Transfer (Passalis & Tefas, 2018).

Paper: https://arxiv.org/abs/1803.10837
The loss follows RepDistiller's ``distiller_zoo/PKT.py`` (itself from the authors' code). The
method matches the cosine-kernel conditional distributions of the samples' penultimate embeddings
(the tapped feature map, globally average-pooled), so the widths may differ.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import register_method
from edgekd.distill.methods._checks import require_same_batch
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import pooled


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


@register_method
class PKT(FeatureMethod):
    name = "pkt"
    description = "Probabilistic KT: match cosine-similarity distributions between samples"
    paper = "Passalis & Tefas 2018, https://arxiv.org/abs/1803.10837"
    loss_function = staticmethod(pkt)
    paper_weight = 30000.0  # RepDistiller's beta for PKT
    default_weight = 3000.0  # see FeatureMethod

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return pkt(pooled(s), pooled(t))
