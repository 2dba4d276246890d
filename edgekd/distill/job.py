"""The default training path: a frozen teacher, teaching consistently and patiently.

Knowledge distillation: A good teacher is patient and consistent (Beyer et al., CVPR 2022),
https://arxiv.org/abs/2106.05237. :func:`train_offline` trains the sized student on the teacher's
answers for augmented views (``edgekd.distill.views``) or, with ``--augment none``, on its
cached outputs; with per-epoch checkpoints, ``--resume``, Ctrl-C handling, early stopping
(``--patience``) and the best epoch kept. :func:`repeat_seeds` repeats a run over more seeds and
summarises the spread (``--seeds N``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgekd.data import Split
from edgekd.distill import MethodOptions
from edgekd.distill.methods import get_method
from edgekd.distill.strategies import (
    DistillJob,
    StrategyOptions,
    StrategyResult,
    run_strategy,
    with_train,
)
from edgekd.distill.strategies._common import finetune, prepare_method
from edgekd.distill.views import choose_augment, consistent_teaching
from edgekd.progress import status
from edgekd.teacher.prepare import Teaching, val_score_for
from edgekd.train.loop import (
    TrainConfig,
    accuracy,
    cached_teacher,
    predict_logits,
    train_student,
)

# Patient schedules (Beyer et al.): with augmented views the student keeps learning for a long
# time. On MNIST-1D (benchmarks/patient.py) a 15k-parameter MLP taught with mixup views reached
# about 80% test accuracy after 100 epochs and 88.7% after 300 (3 seeds); without augmentation
# longer runs gain nothing (the best epoch is kept either way).
PATIENT_EPOCHS = 300
PLAIN_EPOCHS = 100


def default_epochs(augment: str) -> int:
    """Training epochs when ``--epochs`` is not given, for the resolved augmentation level."""
    return PLAIN_EPOCHS if augment == "none" else PATIENT_EPOCHS


def make_job(
    config: Any,
    teaching: Teaching,
    student: nn.Module,
    strategy: str,
    method_name: str,
    dist: Any = None,
) -> tuple[DistillJob, str]:
    """The training job ``distill`` runs for ``config`` (a ``DistillConfig``) and why its
    augmentation level was chosen; ``edgekd tune`` builds its trials the same way, so that a
    winner's settings reproduce its trial exactly."""
    method = get_method(method_name)
    alpha = method.default_alpha if config.alpha is None else config.alpha
    augment, why = choose_augment(
        config.augment,
        teaching.data.input_kind,
        config.task,
        strategy,
        teaching.params,
        method.needs_labels,
    )
    train = TrainConfig(
        epochs=default_epochs(augment) if config.epochs is None else config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        alpha=alpha,
        seed=config.seed,
        patience=config.patience,
        device=config.device,
        precision=config.precision,
    )
    method_options = MethodOptions(
        temperature=config.temperature,
        temperature_end=config.temperature_end,
        weight=config.weight,
        pairs=config.pairs,
    )
    options = StrategyOptions(
        generations=config.generations,
        peer=config.peer,
        teacher_onnx=config.teacher_onnx,
        teacher_cmd=config.teacher_cmd,
        teacher_output=config.blackbox_output,
        finetune_epochs=config.finetune_epochs,
        augment=augment,
    )
    job = DistillJob(
        teaching.model, student, teaching.data, train, method_name, method_options, options, dist
    )
    return job, f"{augment} ({why})"


def train_offline(
    job: DistillJob,
    teaching: Teaching,
    train: Split,
    task: str = "classification",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[nn.Module], None] | None = None,
) -> StrategyResult:
    """Distil ``job.student`` (in place) from the frozen ``job.teacher``.

    With ``job.options.augment`` other than none, teacher and student see the same augmented
    batch and the teacher runs live (function matching; the best epoch by validation agreement
    with the teacher); otherwise the teacher's outputs over ``train`` are reused from
    ``teaching``. ``on_epoch(student)`` runs after every epoch (tuning reports from it).

    >>> result = train_offline(job, teaching, data.train)  # doctest: +SKIP
    >>> result.info["teacher_signal"]  # doctest: +SKIP
    'live teacher, no grad, on each augmented batch (function matching)'
    """
    method = prepare_method(job, job.student, job.teacher)
    val = job.data.val
    if job.options.augment != "none":
        plan = consistent_teaching(
            job.teacher, job.data.input_kind, job.options.augment, val, teaching.val_outputs
        )
        signal, augment, val_score, info = plan.signal, plan.augment, plan.val_score, plan.info
        if task != "classification":  # vectors: cosine to the teacher's, not argmax agreement
            val_score = val_score_for(task, val, teaching.val_outputs)
            info = {**info, "best_epoch_by": "validation cosine similarity to the teacher"}
    else:
        signal, augment = cached_teacher(teaching.train_outputs), None
        val_score = val_score_for(task, val, teaching.val_outputs)
        info = {"teacher_signal": "teacher outputs computed once (cached)"}
    if on_epoch is not None:
        val_score = _reporting(val_score, val, on_epoch)
    history = train_student(
        job.student,
        train,
        val,
        job.train,
        method=method,
        teacher=signal,
        description="distill",
        checkpoint=checkpoint,
        # The caller decides whether a checkpoint is there to resume (on several workers, rank 0
        # looks and tells the others).
        resume=bool(checkpoint) and resume,
        val_score=val_score,
        augment=augment,
        dist=job.dist,
    )
    if len(history.loss) < job.train.epochs:
        info["stopped_early"] = (
            f"after epoch {len(history.loss)} of {job.train.epochs}: no better validation score "
            f"for {job.train.patience} epochs; kept epoch {history.best_epoch + 1}"
        )
    trained = StrategyResult(job.student, history, {"strategy": "offline", **info})
    return finetune(trained, job) if job.options.finetune_epochs else trained


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


def uses_default_path(job: DistillJob, strategy: str, teaching: Teaching) -> bool:
    """Whether ``distill`` trains this job through :func:`train_offline` (logit methods with a
    frozen module teacher) rather than through ``run_strategy``. Read from the method's class: the
    one instance per student is built by the path chosen here."""
    logits_only = not get_method(job.method).needs_layers
    return strategy == "offline" and logits_only and teaching.train_outputs is not None


def held_out_score(student: nn.Module, teacher: nn.Module | None, test: Split) -> tuple[float, str]:
    """Test accuracy, or agreement with the teacher when the test split has no labels."""
    if test.y is not None:
        return accuracy(predict_logits(student, test), test.y), "test accuracy"
    reference = predict_logits(teacher, test).argmax(-1)
    agree = float((predict_logits(student, test).argmax(-1) == reference).mean())
    return agree, "test agreement with the teacher"


def repeat_seeds(
    config: Any,
    job: DistillJob,
    teaching: Teaching,
    train: Split,
    strategy: str,
    build: Callable[[], nn.Module],
    first: nn.Module,
) -> dict[str, Any]:
    """``--seeds N``: the run again with seeds seed+1 .. seed+N-1 (the student's initial weights,
    shuffling and augmentation; the data split and the teacher stay those of ``seed``).

    ``build()`` returns a fresh student, initialised from the current torch seed. The run's
    artifacts are the first seed's; the summary lists every seed's test score, mean and std.
    """
    import torch

    first_score, metric = held_out_score(first, job.teacher, job.data.test)
    scores = [first_score]
    for k in range(1, config.seeds):
        seed = config.seed + k
        status(f"seed {seed} ({k + 1} of {config.seeds})")
        torch.manual_seed(seed)  # the student's initial weights depend on the seed alone
        other = with_train(job, seed=seed)
        other.student = build()
        if getattr(config, "init_from_teacher", False):
            from edgekd.students.teacher_init import init_from_teacher

            init_from_teacher(other.student, job.teacher)
        if uses_default_path(other, strategy, teaching):
            trained = train_offline(other, teaching, train, config.task)
        else:
            trained = run_strategy(strategy, other)
        scores.append(held_out_score(trained.student, job.teacher, job.data.test)[0])
    values = np.array(scores)
    return {
        "seeds": list(range(config.seed, config.seed + config.seeds)),
        "metric": metric,
        "values": scores,
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "artifacts": f"seed {config.seed} (the first)",
    }
