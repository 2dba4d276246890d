"""Embedding distillation: the student's vectors pulled onto the teacher's (MSE and cosine), with
the teacher's relations between samples kept (RKD's distance and angle terms).

Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation (Reimers &
Gurevych, 2020), https://arxiv.org/abs/2004.09813 - the MSE to the teacher's vectors.
Relational Knowledge Distillation (Park et al., 2019), https://arxiv.org/abs/1904.05068.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill import DEFAULT_TEMPERATURE
from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.distill.methods.rkd import rkd


@register_method
class EmbeddingKD(Method):
    name = "embed"
    description = "Embeddings: MSE + (1 - cosine) to the teacher's vectors, plus RKD relations"
    paper = "Reimers & Gurevych 2020, https://arxiv.org/abs/2004.09813"
    tasks = ("embedding",)

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        relation_weight: float = 1.0,
        **_: object,
    ) -> None:
        super().__init__(temperature)
        self.relation_weight = relation_weight

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        s, t = batch.student_logits, batch.teacher_logits.detach()
        loss = F.mse_loss(s, t) + (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
        if self.relation_weight and s.shape[0] >= 2:
            # RKD's own weights (25, 50) are tuned for logits-sized features next to CE; here the
            # relation term sits beside an MSE of order 1, so it is kept at the same scale.
            loss = loss + self.relation_weight * rkd(s, t, distance_weight=1.0, angle_weight=2.0)
        return loss
