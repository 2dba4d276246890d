"""Sequence-Level Knowledge Distillation (Kim & Rush, EMNLP 2016).

The student is trained with plain cross-entropy on the teacher's own outputs: here, for a prompt
taken from each training block, the teacher's greedy continuation (the paper's beam search with
beam 1), generated once before training (``edgekd.lm.train``). Word-level KD matches the
teacher's distribution at each position of the real text; sequence-level KD matches the
sequences the teacher would actually produce, which Kim & Rush found better for small students.

Not published in ``edgekd.losses``: the loss is a cross-entropy against the teacher's tokens, so
it is not zero when the student equals the teacher, a property every published loss has.

Paper: https://arxiv.org/abs/1606.07947
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import DistillBatch, register_method
from edgekd.distill.methods._tokens import TokenMethod, token_mean
from edgekd.errors import BadInputError


def seqkd(
    student_logits: torch.Tensor, teacher_tokens: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-log q(teacher's token) per position, averaged over the positions where ``mask`` is true.
    ``student_logits`` [..., V] and ``teacher_tokens`` [...] (int64: the teacher's greedy next
    tokens).

    >>> seqkd(torch.zeros(1, 2, 4), torch.tensor([[0, 3]]))
    tensor(1.3863)
    """
    if student_logits.shape[:-1] != teacher_tokens.shape:
        raise BadInputError(
            f"seqkd: student logits {tuple(student_logits.shape)} do not fit teacher tokens "
            f"{tuple(teacher_tokens.shape)}"
        )
    logits = student_logits.float()
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), teacher_tokens.reshape(-1), reduction="none"
    ).reshape(teacher_tokens.shape)
    return token_mean(per_token, mask)


@register_method
class SeqKD(TokenMethod):
    name = "seqkd"
    description = "Language models: cross-entropy on the teacher's greedy continuations"
    paper = "Kim & Rush 2016, https://arxiv.org/abs/1606.07947"
    default_alpha = 0.0  # the student trains on the teacher's sequences alone
    teacher_sequences = True

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        # on the teacher-generated sequences the labels are the teacher's own greedy tokens
        if batch.labels is None:
            raise BadInputError("seqkd: needs the teacher's generated tokens as the labels")
        return self.weight * seqkd(batch.student_logits, batch.labels, batch.mask)
