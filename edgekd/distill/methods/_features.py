"""The base of feature and relation methods: they compare tapped activations pair by pair.

Layer choice and shape bridging live in :mod:`edgekd.distill.pairing`; a subclass checks each
pair's shapes (building adapters if it has any) and defines the loss for one pair.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from edgekd.distill.methods import DistillBatch, Method
from edgekd.distill.pairing import LayerPair, parse_pairs, probe_shapes
from edgekd.errors import BadInputError


class FeatureMethod(Method):
    """Base of the feature and relation methods.

    RepDistiller trains them with CE (weight 1) + beta * feature loss; alpha = 0.5 with
    weight = beta is the same ratio. Its betas (``paper_weight``) were tuned for CIFAR ResNets,
    whose tapped maps have 64 to 1,024 positions; on edgekd's small students (2 to 16 positions,
    a few thousand parameters) they swamp the CE term and cost accuracy. Measured with cnn width
    0.5 students on digits and MNIST-1D (2 seeds, 20 epochs, mean test accuracy; from scratch
    96.5% / 89.0%): AT 1000 -> 47.9% / 37.8%, 1 -> 97.2% / 88.0%; SP 3000 -> 74.4% / 71.6%,
    30 -> 97.9% / 87.0%; FitNet 100 -> 93.5% / 78.4%, 1 -> 96.8% / 88.9%; PKT 30000 -> 96.5% /
    83.6%, 3000 -> 96.8% / 90.6%; RKD 1 -> 93.9% / 72.6%, 0.03 -> 98.3% / 90.5%. The defaults
    (``default_weight``) are the scaled-down values; ``--weight`` sets another.
    """

    default_alpha = 0.5
    needs_layers = True

    def __init__(self, pairs: Iterable[str | LayerPair] | None = None, **kw: object) -> None:
        super().__init__(**kw)
        self.pairs = parse_pairs(pairs)
        self.student_taps = tuple(dict.fromkeys(p.student for p in self.pairs))
        self.teacher_taps = tuple(dict.fromkeys(p.teacher for p in self.pairs))

    def setup(
        self, student: nn.Module, teacher: nn.Module | None, example: dict[str, np.ndarray]
    ) -> None:
        if teacher is None:
            raise BadInputError(
                f"method {self.name!r} needs the teacher's activations "
                f"({', '.join(self.teacher_taps)}), but this teacher only gives outputs; "
                "use a logit method (kd, mse, dkd)"
            )
        s_shapes = probe_shapes(student, self.student_taps, example, "student")
        t_shapes = probe_shapes(teacher, self.teacher_taps, example, "teacher")
        for i, pair in enumerate(self.pairs):
            self.check_pair(i, pair, s_shapes[pair.student], t_shapes[pair.teacher])

    def check_pair(self, index: int, pair: LayerPair, s_shape: tuple, t_shape: tuple) -> None:
        """Raise ``pair_error`` if the shapes cannot be bridged; build adapters here."""

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        total = sum(
            self.pair_loss(i, batch.student_feats[p.student], batch.teacher_feats[p.teacher])
            for i, p in enumerate(self.pairs)
        )
        return self.weight * total

    def describe(self) -> dict:
        return {**super().describe(), "pairs": [str(p) for p in self.pairs]}
