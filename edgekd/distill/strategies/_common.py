"""Pieces the strategies share: preparing a method, the frozen-teacher stage (every strategy that
learns from a frozen module: offline, self, assistant), fresh copies of an architecture, and the
hard-label fine-tune stage.

The frozen-teacher stage decides the teacher's signal: its outputs computed once (prepared with
the teacher, or from the one output cache, ``edgekd.teacher.outputs``) for logit methods without
augmentation; the teacher run live, without gradients, for methods that tap its layers and for
augmented views (consistent teaching, ``edgekd.distill.views``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data import Split
from edgekd.data.augment import Augmenter
from edgekd.data.normalize import attach_normalization
from edgekd.distill.methods import Method
from edgekd.distill.strategies._job import DistillJob, StrategyResult
from edgekd.distill.views import agreement_score, consistent_teaching
from edgekd.errors import BadInputError
from edgekd.students import build_student
from edgekd.teacher.outputs import TeacherOutputs, module_outputs
from edgekd.train.loop import (
    TeacherSignal,
    TrainConfig,
    TrainHistory,
    accuracy,
    cached_teacher,
    live_teacher,
    predict_logits,
    train_student,
)

EXAMPLE_BATCH = 8


def example_batch(split: Split, n: int = EXAMPLE_BATCH) -> dict[str, np.ndarray]:
    return {k: v[:n] for k, v in split.inputs.items()}


def prepare_method(job: DistillJob, student: nn.Module, teacher: nn.Module | None) -> Method:
    """A fresh method instance set up for this student/teacher pair (adapters built here)."""
    method = job.new_method()
    if method.needs_labels and job.data.train.y is None:
        raise BadInputError(f"method {method.name!r} needs class labels for the training data")
    method.setup(student, teacher, example_batch(job.data.train))
    return method


def frozen_teacher_signal(
    teacher: nn.Module,
    method: Method,
    split: Split,
    use_cache: bool = True,
    dist=None,
    outputs: np.ndarray | None = None,
) -> tuple[TeacherSignal, str]:
    """The teacher's outputs over ``split`` when the method needs only logits: ``outputs`` when
    they were computed with the teacher, else from the output cache; a live, no-grad teacher when
    it taps teacher layers (caching every feature map would cost more disk than recomputing them).
    """
    if method.teacher_taps:
        taps = ", ".join(method.teacher_taps)
        return live_teacher(teacher, method.teacher_taps), f"live teacher, no grad (taps {taps})"
    if outputs is not None:
        return cached_teacher(outputs), "teacher outputs computed once (cached)"
    logits, status = module_outputs(teacher, split, use_cache, dist)
    return cached_teacher(logits), f"cached logits ({status})"


def val_accuracy(model: nn.Module, split: Split) -> float | None:
    return None if split.y is None else accuracy(predict_logits(model, split), split.y)


@dataclass(frozen=True)
class _FrozenTeaching:
    """What the trainer needs from a frozen teacher for one stage, and what the report says."""

    signal: TeacherSignal
    augment: Augmenter | None  # consistent teaching: the view teacher and student both see
    val_score: Callable[[nn.Module], float] | None  # the best epoch's criterion (None: accuracy)
    info: dict[str, Any]


def _frozen_teaching(
    teacher: nn.Module,
    method: Method,
    job: DistillJob,
    use_cache: bool = True,
    outputs: TeacherOutputs | None = None,
) -> _FrozenTeaching:
    """The teacher's signal for a stage of ``job``: see the module docstring. ``outputs``: the
    teacher's outputs computed with it (None: computed here, cached unless ``use_cache=False``)."""
    val, augmented = job.data.val, job.options.augment != "none"
    val_outputs = None if outputs is None else outputs.val
    if val_outputs is None and (augmented or job.task != "classification" or val.y is None):
        val_outputs = predict_logits(teacher, val)  # the best epoch is chosen against them
    if augmented:
        plan = consistent_teaching(
            teacher, job.data.input_kind, job.options.augment, val, val_outputs,
            method.teacher_taps,
        )  # fmt: skip
        signal, augment, info = plan.signal, plan.augment, plan.info
    else:
        train = None if outputs is None else outputs.train
        signal, how = frozen_teacher_signal(
            teacher, method, job.data.train, use_cache, job.dist, train
        )
        augment, info = None, {"teacher_signal": how}
    val_score, by = best_epoch_score(job.task, val, val_outputs, augmented)
    if by is not None:
        info = {**info, "best_epoch_by": by}
    return _FrozenTeaching(signal, augment, val_score, info)


def best_epoch_score(
    task: str, val: Split, val_outputs: np.ndarray | None, augmented: bool = False
) -> tuple[Callable[[nn.Module], float] | None, str | None]:
    """How the trainer picks the best epoch, and how the report says it (None: validation
    accuracy, the trainer's default): cosine similarity to the teacher's vectors for embeddings;
    agreement with the teacher on augmented views (what function matching optimises) and where
    the validation split has no labels."""
    if task == "embedding":
        return cosine_score(val, val_outputs), "validation cosine similarity to the teacher"
    if augmented or val.y is None:
        return agreement_score(val, val_outputs), "validation agreement with the teacher"
    return None, None


def cosine_score(val: Split, val_outputs: np.ndarray) -> Callable[[nn.Module], float]:
    """``score(student)``: the mean cosine similarity of its vectors to the teacher's."""
    unit_t = val_outputs / np.maximum(np.linalg.norm(val_outputs, axis=-1, keepdims=True), 1e-12)

    def cosine(student: nn.Module) -> float:
        s = predict_logits(student, val)
        s = s / np.maximum(np.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
        return float((s * unit_t).sum(-1).mean())

    return cosine


def distill_from(
    teacher: nn.Module,
    student: nn.Module,
    job: DistillJob,
    description: str,
    use_cache: bool | None = None,
    outputs: TeacherOutputs | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> tuple[TrainHistory, dict]:
    """One frozen-teacher stage: ``student`` (trained in place) learns from ``teacher``, whose
    signal :func:`_frozen_teaching` chooses. ``checkpoint``: ``train_student``'s checkpoint
    arguments (default: ``job.stage(description)``). ``job.on_epoch(student)`` runs after every
    epoch."""
    method = prepare_method(job, student, teacher)
    cache = job.options.use_cache if use_cache is None else use_cache
    plan = _frozen_teaching(teacher, method, job, cache, outputs)
    val_score = plan.val_score
    if job.on_epoch is not None:
        val_score = _reporting(val_score, job.data.val, job.on_epoch)
    history = train_student(
        student, train_split(job), job.data.val, job.train, method, plan.signal, description,
        val_score=val_score, augment=plan.augment, dist=job.dist,
        **(job.stage(description) if checkpoint is None else checkpoint),
    )  # fmt: skip
    classes = job.task == "classification"
    return history, {
        **plan.info,
        **stopped_early_note(history, job.train),
        "method": method.describe(),
        "val_accuracy": val_accuracy(student, job.data.val) if classes else None,
    }


def train_split(job: DistillJob) -> Split:
    """What the student trains on (embeddings: the inputs only, no labels)."""
    train = job.data.train
    return train if job.task == "classification" else Split(train.inputs)


def stopped_early_note(history: TrainHistory, config: TrainConfig) -> dict[str, str]:
    """The report's note when ``--patience`` ended the stage before its last epoch."""
    if len(history.loss) >= config.epochs:
        return {}
    return {
        "stopped_early": f"after epoch {len(history.loss)} of {config.epochs}: no better "
        f"validation score for {config.patience} epochs; kept epoch {history.best_epoch + 1}"
    }


def _reporting(score, val: Split, on_epoch: Callable[[nn.Module], None]):
    """The trainer's best-epoch score (validation accuracy when ``score`` is None), calling
    ``on_epoch(student)`` first."""
    if score is None:

        def score(student: nn.Module) -> float:
            return accuracy(predict_logits(student, val), val.y)

    def reported(student: nn.Module) -> float:
        on_epoch(student)
        return score(student)

    return reported


def fresh_like(model: nn.Module, seed: int) -> nn.Module:
    """A newly initialised model with ``model``'s architecture."""
    torch.manual_seed(seed)
    arch = getattr(model, "edgekd_arch", None)
    if arch is not None:
        model = build_student(
            arch["family"], tuple(arch["sample_shape"]), arch["num_classes"],
            arch["width"], arch["depth"], view=arch.get("view"),
        )  # fmt: skip
        return attach_normalization(model, arch.get("normalize"))  # --normalize, as the original
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone


def finetune(result: StrategyResult, job: DistillJob) -> StrategyResult:
    """Hard-label fine-tune (CE only, a tenth of the learning rate); kept only if validation
    accuracy does not drop."""
    before = val_accuracy(result.student, job.data.val)
    tuned = copy.deepcopy(result.student)
    config = replace(
        job.train, epochs=job.options.finetune_epochs, lr=job.train.lr * 0.1, alpha=1.0
    )
    history = train_student(
        tuned, job.data.train, job.data.val, config, description="fine-tune", dist=job.dist,
        **job.stage("fine-tune"),
    )  # fmt: skip
    after = val_accuracy(tuned, job.data.val)
    kept = before is None or after is None or after >= before
    info = {
        **result.info,
        "finetune": {
            "epochs": config.epochs,
            "lr": config.lr,
            "val_accuracy_before": before,
            "val_accuracy_after": after,
            "kept": kept,
        },
    }
    if kept:
        return StrategyResult(tuned, history, info)
    return StrategyResult(result.student, result.history, info)
