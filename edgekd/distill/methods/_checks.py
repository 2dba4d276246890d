"""Input checks shared by the loss functions: one clear error instead of silent broadcasting."""

from __future__ import annotations

import torch

from edgekd.errors import BadInputError


def require_same_shape(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    # torch's elementwise losses broadcast mismatched shapes (with at most a warning), which
    # turns a wiring mistake into a quietly wrong loss; refuse instead.
    if student.shape != teacher.shape:
        raise BadInputError(
            f"{loss}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}"
        )


def require_same_batch(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.dim() == 0 or teacher.dim() == 0 or student.shape[0] != teacher.shape[0]:
        raise BadInputError(
            f"{loss}: student and teacher need the same batch size (dim 0), got shapes "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
