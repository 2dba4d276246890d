"""Paying More Attention to Attention: Improving the Performance of Convolutional Neural Networks
via Attention Transfer (Zagoruyko & Komodakis, 2017).

Paper: https://arxiv.org/abs/1612.03928
The loss follows RepDistiller's ``distiller_zoo/AT.py``. The method matches the spatial attention
maps (channel mean of f^2) of each layer pair; channel counts may differ, spatial sizes are pooled
to the smaller one. 1-D feature maps (B, C, L) are treated as 1 x L images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import register_method
from edgekd.distill.methods._checks import require_same_batch
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import LayerPair, pair_error
from edgekd.errors import BadInputError


def _attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    # Channel mean of f^p (a sum would do: the normalisation cancels the 1/C), flattened and
    # L2-normalised per sample. Like the reference there is no abs(): with odd p, negative
    # activations count negatively.
    return F.normalize(feat.pow(p).mean(1).reshape(feat.shape[0], -1))


def at(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Squared difference of normalised spatial attention maps, averaged over batch and positions.

    Takes (B, C, H, W) maps; channel counts may differ. When spatial sizes differ, the larger map
    is adaptive-average-pooled down to the smaller one. (The reference compares heights only and
    pools to a square (H, H); we pool each side to the smaller of the two, which is the same for
    square maps.)

    >>> at(torch.ones(2, 8, 4, 4), torch.ones(2, 16, 8, 8))
    tensor(0.)
    """
    require_same_batch("at", student_feat, teacher_feat)
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise BadInputError(
            f"at: expects (B, C, H, W) feature maps, got shapes {tuple(student_feat.shape)} "
            f"and {tuple(teacher_feat.shape)}"
        )
    teacher_feat = teacher_feat.detach()
    size = (
        min(student_feat.shape[2], teacher_feat.shape[2]),
        min(student_feat.shape[3], teacher_feat.shape[3]),
    )
    if tuple(student_feat.shape[2:]) != size:
        student_feat = F.adaptive_avg_pool2d(student_feat, size)
    if tuple(teacher_feat.shape[2:]) != size:
        teacher_feat = F.adaptive_avg_pool2d(teacher_feat, size)
    diff = _attention_map(student_feat, p) - _attention_map(teacher_feat, p)
    return diff.pow(2).mean()


def _as_image(feat: torch.Tensor) -> torch.Tensor:
    return feat.unsqueeze(2) if feat.dim() == 3 else feat


@register_method
class AT(FeatureMethod):
    name = "at"
    description = "Attention transfer: match normalised spatial attention maps of feature maps"
    paper = "Zagoruyko & Komodakis 2017, https://arxiv.org/abs/1612.03928"
    loss_function = staticmethod(at)
    paper_weight = 1000.0  # the paper's beta = 1e3 (RepDistiller's beta for AT)
    default_weight = 1.0  # see FeatureMethod: 1e3 swamps the CE on our few-position maps

    def __init__(self, p: float = 2.0, **kw: object) -> None:
        super().__init__(**kw)
        self.p = p

    def check_pair(self, index: int, pair: LayerPair, s_shape: tuple, t_shape: tuple) -> None:
        if len(s_shape) not in (3, 4) or len(t_shape) != len(s_shape):
            raise pair_error(
                self.name, pair, s_shape, t_shape,
                "attention transfer needs spatial feature maps of the same rank on both sides, "
                "(B, C, H, W) or (B, C, L)",
            )  # fmt: skip

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return at(_as_image(s), _as_image(t), self.p)
