"""Consistent teaching ("function matching"): the frozen teacher answers on the student's view.

Knowledge distillation: A good teacher is patient and consistent (Beyer et al., CVPR 2022),
https://arxiv.org/abs/2106.05237. Each batch is augmented once (``edgekd.data.augment``) and the
teacher is run live, without gradients, on exactly that view; the student matches its outputs
there. With mixup most views lie between training samples, where only the teacher can say what
the answer is, so the transfer set is far larger than the training set.

Why live and not cached: the mixup partner and the shift are drawn per batch, so a cache of a
fixed number of augmented copies per sample would fix the pairs and shrink the transfer set;
the default teachers are small enough that one no-grad forward per step costs less than the
student's own forward and backward (see ``benchmarks/patient.py`` for the measured cost).

The best epoch is chosen on agreement with the teacher over the validation split (the quantity
function matching optimises, and one that needs no labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from edgekd.data import Split
from edgekd.data.augment import LEVELS, Augmenter, make_augmenter
from edgekd.errors import BadInputError
from edgekd.train.loop import TeacherSignal, live_teacher, predict_logits

# --augment when not given, per input kind, from benchmarks/patient.py. Sequences: strong (shift,
# noise and mixup, whose mixed views only the teacher can label); on MNIST-1D at 300 epochs it
# lifted MLP students 17-26 points over scratch, 0-4 over the same jitter with labels alone; at
# 100 epochs light was as good (mixup needs the long schedule). Images: off. On 8x8 digits a
# one-pixel random crop (light) at 300 epochs gave no gain (98.9% +- 0.3 against 99.6-99.7% for
# scratch and plain KD, 3 seeds; every row within a few of 360 test images); Beyer et al.'s crops
# are for larger images, which we have not measured here: opt in with --augment light. Vectors,
# token ids and multi-input data: not measured, so off.
DEFAULT_AUGMENT = {"sequence": "strong"}
# Why a kind has no default, for the report (kinds not listed: not measured).
NO_DEFAULT_WHY = {
    "image": "no gain measured on 8x8 digits; for larger images try --augment light, the random "
    "crop of Beyer et al."
}


def resolve_augment(level: str | None, input_kind: str) -> str:
    """``--augment`` as given, or the default for this input kind (``none`` where there is none)."""
    if level is None:
        return DEFAULT_AUGMENT.get(input_kind, "none")
    if level not in LEVELS:
        raise BadInputError(f"--augment must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


@dataclass
class ConsistentTeaching:
    """What the trainer needs for function matching: the augmenter, the live teacher signal,
    and the best-epoch criterion (validation agreement with the teacher)."""

    augment: Augmenter
    signal: TeacherSignal
    val_score: Any  # Callable[[nn.Module], float]
    info: dict[str, Any]


def consistent_teaching(
    teacher: nn.Module,
    input_kind: str,
    level: str,
    val: Split,
    val_outputs: np.ndarray | None = None,
    teacher_taps: tuple[str, ...] = (),
) -> ConsistentTeaching:
    """Function matching at ``level`` (not ``none``) for a frozen ``teacher``.

    >>> plan = consistent_teaching(teacher, "sequence", "strong", data.val)  # doctest: +SKIP
    >>> train_student(student, data.train, data.val, config, method, plan.signal,
    ...               augment=plan.augment, val_score=plan.val_score)  # doctest: +SKIP
    """
    augment = make_augmenter(input_kind, level)
    if augment is None:
        raise ValueError("consistent teaching needs an augmentation level other than 'none'")
    if val_outputs is None:
        val_outputs = predict_logits(teacher, val)
    return ConsistentTeaching(
        augment,
        live_teacher(teacher, teacher_taps),
        agreement_score(val, val_outputs),
        {
            "teacher_signal": "live teacher, no grad, on each augmented batch (function matching)",
            "augment": augment.name,
            "best_epoch_by": "validation agreement with the teacher",
        },
    )


def agreement_score(val: Split, val_outputs: np.ndarray):
    """``score(student)``: the share of validation samples where student and teacher agree."""
    teacher_top1 = np.asarray(val_outputs).argmax(-1)

    def score(student: nn.Module) -> float:
        return float((predict_logits(student, val).argmax(-1) == teacher_top1).mean())

    return score


# Live teaching runs the teacher once per step: by default only for teachers up to this size
# (the embedded defaults are far below it); larger ones keep cached outputs unless --augment is
# given, since their cost per epoch would dominate the run.
LIVE_TEACHER_MAX_PARAMS = 5_000_000
# Strategies whose teacher signal is not a frozen module run by edgekd.distill.strategies._common.
NO_AUGMENT_STRATEGIES = ("online", "blackbox")


def choose_augment(
    level: str | None,
    input_kind: str,
    task: str,
    strategy: str,
    teacher_params: int,
    needs_labels: bool = False,
) -> tuple[str, str]:
    """The augmentation level for a run and why, from ``--augment`` (None: the default).

    ``needs_labels``: the method needs a hard label for every sample, which mixed views lack.
    """
    if level is not None:
        level = resolve_augment(level, input_kind)
        if level != "none" and strategy in NO_AUGMENT_STRATEGIES:
            raise BadInputError(
                f"--augment {level} needs a frozen PyTorch teacher; --strategy {strategy} does "
                "not run one (use --augment none)"
            )
        if level != "none" and _drops_labels(input_kind, level) and needs_labels:
            raise BadInputError(
                f"--augment {level} mixes samples (no hard labels) and this method needs "
                "labels: use --augment light"
            )
        if level != "none":
            make_augmenter(input_kind, level)  # no policy for this kind: one clear error now
        return level, "--augment given"
    if strategy in NO_AUGMENT_STRATEGIES:
        return "none", f"default: none for --strategy {strategy}"
    if task != "classification":
        return "none", f"default: none for --task {task}"
    if input_kind not in DEFAULT_AUGMENT:
        why = NO_DEFAULT_WHY.get(input_kind, "not measured; opt in with --augment")
        return "none", f"default: none for {input_kind} inputs ({why})"
    if teacher_params > LIVE_TEACHER_MAX_PARAMS:
        return "none", (
            f"default: none for a teacher over {LIVE_TEACHER_MAX_PARAMS:,} parameters (it would "
            "run on every batch; opt in with --augment strong)"
        )
    level = DEFAULT_AUGMENT[input_kind]
    if needs_labels and _drops_labels(input_kind, level):
        return "light", f"default for {input_kind} inputs, without mixup (the method needs labels)"
    return level, f"default for {input_kind} inputs"


def _drops_labels(input_kind: str, level: str) -> bool:
    augmenter = make_augmenter(input_kind, level)
    return augmenter is not None and "mixup" in augmenter.name
