"""FitNets: Hints for Thin Deep Nets (Romero et al., 2015).

Paper: https://arxiv.org/abs/1412.6550
A regressor (1x1 convolution for feature maps, linear for vectors) maps the student's hint layer
to the teacher's width; a map paired with a vector is globally average-pooled first. The regressor
belongs to the method and is trained with the student. As in RepDistiller's single-stage FitNet
(CE + beta * hint), not the paper's two-stage schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.methods import register_method
from edgekd.distill.methods._checks import require_same_shape
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import LayerPair, align_spatial, pair_error, pooled

_CONV = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}


def fitnet(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Hint loss: mean squared error between (already adapted) student and teacher features.

    The regressor that maps the student's features to the teacher's shape belongs to the method,
    not here (RepDistiller's ``HintLoss`` is likewise a bare ``nn.MSELoss``), so the shapes must
    already match.

    >>> fitnet(torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
    tensor(1.)
    """
    require_same_shape("fitnet", student_feat, teacher_feat)
    return F.mse_loss(student_feat, teacher_feat.detach())


@register_method
class FitNet(FeatureMethod):
    name = "fitnet"
    description = "Hint loss: MSE between a regressed student feature map and the teacher's"
    paper = "Romero et al. 2015, https://arxiv.org/abs/1412.6550"
    loss_function = staticmethod(fitnet)
    paper_weight = 100.0  # RepDistiller's beta for FitNet
    default_weight = 1.0  # see FeatureMethod

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.adapters = nn.ModuleList()

    def check_pair(self, index: int, pair: LayerPair, s_shape: tuple, t_shape: tuple) -> None:
        ranks = {len(s_shape), len(t_shape)}
        if not ranks <= {2, 3, 4, 5} or (len(ranks) == 2 and 2 not in ranks):
            raise pair_error(
                self.name, pair, s_shape, t_shape,
                "a hint needs (B, C, ...) maps of the same rank, or a (B, D) vector on one side",
            )  # fmt: skip
        c_s, c_t = s_shape[1], t_shape[1]
        # A vector on one side: the other side's map is globally average-pooled to (B, C).
        flat = len(s_shape) == 2 or len(t_shape) == 2
        adapter = nn.Linear(c_s, c_t) if flat else _CONV[len(s_shape)](c_s, c_t, kernel_size=1)
        if index == len(self.adapters):
            self.adapters.append(adapter)
        else:  # setup() called again (a new student): rebuild
            self.adapters[index] = adapter

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if s.dim() != t.dim():
            s, t = pooled(s), pooled(t)
        # A 1x1 convolution commutes with average pooling, so adapting before aligning the
        # spatial sizes is the same as after.
        s, t = align_spatial(self.adapters[index](s), t)
        return fitnet(s, t)
