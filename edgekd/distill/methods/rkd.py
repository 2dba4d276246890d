"""Relational Knowledge Distillation (Park, Kim, Lu & Cho, 2019).

Paper: https://arxiv.org/abs/1904.05068
The loss follows RepDistiller's ``distiller_zoo/RKD.py``. The method matches distance- and
angle-wise relations between the samples' penultimate embeddings: the tapped feature map, globally
average-pooled as our heads do before the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import register_method
from edgekd.distill.methods._checks import require_same_batch
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import pooled
from edgekd.errors import BadInputError


def _differences(emb: torch.Tensor) -> torch.Tensor:
    # diff[i, j] = emb[j] - emb[i], shape (B, B, D)
    return emb.unsqueeze(0) - emb.unsqueeze(1)


def _normalised_distances(diff: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    # Euclidean distances from explicit differences: the reference's |a|^2 + |b|^2 - 2ab form
    # cancels catastrophically in float32 when embeddings sit far from the origin relative to
    # their spread (offset 1e4, spread 1: loss 0.70 instead of 0.026). The clamp (as in the
    # reference) keeps sqrt's gradient finite for coincident points.
    b = diff.shape[0]
    dist = diff.pow(2).sum(-1).clamp(min=eps).sqrt()
    dist = dist.masked_fill(torch.eye(b, dtype=torch.bool, device=diff.device), 0.0)
    # The reference divides by the mean of the entries > 0; after the clamp those are exactly
    # the B * (B - 1) off-diagonal ones, so this is the same number and never an empty mean.
    return dist / (dist.sum() / (b * (b - 1)))


def _angles(diff: torch.Tensor) -> torch.Tensor:
    # cos of the angle at vertex i between j and k, for every (i, j, k), including degenerate
    # triples (j or k == i give a zero vector and a zero cosine), as in the reference.
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def rkd(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """Distance-wise plus angle-wise relational loss, each a smooth-L1 between student and teacher.

    Inputs are flattened to (B, -1); feature sizes may differ. Pairwise distances are divided by
    their mean over distinct pairs. Needs a batch of at least 2 (use ``drop_last`` in the loader).
    Memory is O(B^2 * D) for the distance/angle terms.

    >>> float(rkd(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.0], [1.0], [3.0]]),
    ...           distance_weight=72.0, angle_weight=0.0))
    1.0
    """
    require_same_batch("rkd", student_emb, teacher_emb)
    b = student_emb.shape[0]
    if b < 2:
        raise BadInputError(f"rkd: needs a batch of at least 2 samples, got {b}")
    student = student_emb.reshape(b, -1)
    teacher = teacher_emb.detach().reshape(b, -1)
    s_diff, t_diff = _differences(student), _differences(teacher)
    loss_d = F.smooth_l1_loss(_normalised_distances(s_diff), _normalised_distances(t_diff))
    loss_a = F.smooth_l1_loss(_angles(s_diff), _angles(t_diff))
    return distance_weight * loss_d + angle_weight * loss_a


@register_method
class RKD(FeatureMethod):
    name = "rkd"
    description = "Relational KD: match distances and angles between samples' embeddings"
    paper = "Park et al. 2019, https://arxiv.org/abs/1904.05068"
    loss_function = staticmethod(rkd)
    # The paper's lambda_D = 25 and lambda_A = 50 are inside the loss, with weight 1.
    paper_weight = 1.0
    default_weight = 0.03  # see FeatureMethod

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0, **kw) -> None:
        super().__init__(**kw)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if s.shape[0] < 2:  # a last batch of one sample has no relations to match
            return s.sum() * 0.0
        return rkd(pooled(s), pooled(t), self.distance_weight, self.angle_weight)
