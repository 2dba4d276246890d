"""Pieces the strategies share: preparing a method, the frozen teacher's signal (with its on-disk
logit cache), fresh copies of an architecture, and the hard-label fine-tune stage."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from edgekd.cache import cache_dir, cache_key
from edgekd.data import Split
from edgekd.distill.methods import Method
from edgekd.distill.strategies._job import DistillJob, StrategyResult
from edgekd.distill.views import consistent_teaching
from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path
from edgekd.students import build_student
from edgekd.train.loop import (
    TeacherSignal,
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


def weights_hash(model: nn.Module) -> str:
    """Hash of a model's architecture record, parameter/buffer names, dtypes, shapes and values."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(json.dumps(getattr(model, "edgekd_arch", None), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cached_teacher_logits(
    teacher: nn.Module, split: Split, use_cache: bool = True, dist=None
) -> tuple[np.ndarray, str]:
    """The frozen teacher's logits over ``split``: computed once, then read from the cache.

    Keyed by the teacher's weights hash and the data fingerprint, so a retrained teacher or other
    data never reuses stale outputs. Returns the logits and "cache hit" / "cache miss" / "no cache".
    On several workers (``dist``) each computes its part of the split; rank 0 writes the entry.
    """

    def compute() -> np.ndarray:
        return (
            predict_logits(teacher, split)
            if dist is None
            else dist.gather_rows(lambda part: predict_logits(teacher, part), split)
        )

    if not use_cache:
        return compute(), "no cache"
    key = cache_key(kind="teacher-logits", teacher=weights_hash(teacher), data=split.fingerprint())
    path = cache_dir() / f"teacher-logits-{key}.npy"
    logits = None
    if path.is_file():
        try:
            logits = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            logits = None  # a damaged entry is recomputed below
        if logits is not None and not (logits.ndim == 2 and len(logits) == split.n):
            logits = None
    if logits is not None if dist is None else dist.all(logits is not None):
        return logits, "cache hit"
    logits = compute()
    if dist is None or dist.is_main:
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, logits, allow_pickle=False)
    return logits, "cache miss"


def frozen_teacher_signal(
    teacher: nn.Module, method: Method, split: Split, use_cache: bool = True, dist=None
) -> tuple[TeacherSignal, str]:
    """Cached logits when the method needs only logits; a live, no-grad teacher when it taps
    teacher layers (caching every feature map would cost more disk than recomputing them)."""
    if method.teacher_taps:
        taps = ", ".join(method.teacher_taps)
        return live_teacher(teacher, method.teacher_taps), f"live teacher, no grad (taps {taps})"
    logits, status = cached_teacher_logits(teacher, split, use_cache, dist)
    return cached_teacher(logits), f"cached logits ({status})"


def val_accuracy(model: nn.Module, split: Split) -> float | None:
    return None if split.y is None else accuracy(predict_logits(model, split), split.y)


def distill_from(
    teacher: nn.Module,
    student: nn.Module,
    job: DistillJob,
    description: str,
    use_cache: bool | None = None,
) -> tuple[TrainHistory, dict]:
    """One offline stage: ``student`` (trained in place) learns from the frozen ``teacher``;
    with ``job.options.augment`` other than none, on the same augmented views (function matching,
    ``edgekd.distill.views``)."""
    method = prepare_method(job, student, teacher)
    if job.options.augment != "none":
        plan = consistent_teaching(
            teacher, job.data.input_kind, job.options.augment, job.data.val,
            teacher_taps=method.teacher_taps,
        )  # fmt: skip
        history = train_student(
            student, job.data.train, job.data.val, job.train, method, plan.signal, description,
            val_score=plan.val_score, augment=plan.augment, **job.stage(description),
        )  # fmt: skip
        return history, {
            **plan.info,
            "method": method.describe(),
            "val_accuracy": val_accuracy(student, job.data.val),
        }
    cache = job.options.use_cache if use_cache is None else use_cache
    signal, how = frozen_teacher_signal(teacher, method, job.data.train, cache, job.dist)
    history = train_student(
        student, job.data.train, job.data.val, job.train, method, signal, description,
        dist=job.dist, **job.stage(description),
    )  # fmt: skip
    return history, {
        "teacher_signal": how,
        "method": method.describe(),
        "val_accuracy": val_accuracy(student, job.data.val),
    }


def fresh_like(model: nn.Module, seed: int) -> nn.Module:
    """A newly initialised model with ``model``'s architecture."""
    torch.manual_seed(seed)
    arch = getattr(model, "edgekd_arch", None)
    if arch is not None:
        return build_student(
            arch["family"], tuple(arch["sample_shape"]), arch["num_classes"],
            arch["width"], arch["depth"],
        )  # fmt: skip
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
