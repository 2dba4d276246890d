"""The training job of a run: :func:`make_job` turns a run's configuration and its prepared
teacher into the :class:`DistillJob` a strategy trains (the frozen-teacher default is the
``offline`` strategy), with the patient schedule when views are augmented; :func:`repeat_seeds`
repeats a run over more seeds and summarises the spread (``--seeds N``).

Knowledge distillation: A good teacher is patient and consistent (Beyer et al., CVPR 2022),
https://arxiv.org/abs/2106.05237.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from edgekd.data import Split
from edgekd.distill import MethodOptions
from edgekd.distill.methods import get_method
from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy, with_train
from edgekd.distill.views import choose_augment
from edgekd.progress import status
from edgekd.teacher.prepare import Teaching
from edgekd.train.loop import TrainConfig, accuracy, predict_logits

# Patient schedules (Beyer et al.): with augmented views the student keeps learning for a long
# time. On MNIST-1D (benchmarks/patient.py) a 15k-parameter MLP taught with mixup views reached
# about 80% test accuracy after 100 epochs and 88.7% after 300 (3 seeds); without augmentation
# longer runs gain nothing (the best epoch is kept either way). These are the most epochs a
# default schedule runs.
PATIENT_EPOCHS = 300
PLAIN_EPOCHS = 100
# Without --epochs the schedule is a budget of optimizer steps, so that a large set does not run
# those epochs for hours: the budget is those epochs over MNIST-1D, the larger shipped set, at the
# default batch (3,601 training samples / 64 = 57 steps an epoch): 300 x 57 = 17,100 steps with
# augmented views, 100 x 57 = 5,700 without. Every set up to 57 batches an epoch (digits: 20)
# keeps the epochs above. A larger set needs fewer passes and fewer steps: each step sees samples
# not seen before, so the budget shrinks by the square root of how many times larger than
# MNIST-1D the set is (60,000 samples, 938 steps an epoch: 4,189 and 1,396 steps, 5 and 2
# epochs; with 19 and 7, 60,000 jittered 28x28 digits taught by a 400k CNN teacher spent 34 of
# a run's minutes in the student's training at load 10, its validation accuracy 99.37%, 99.62%
# and 99.75% after epochs 1-3 of 9). At least MIN_EPOCHS: every sample is seen twice and the
# kept best epoch is a choice.
REFERENCE_STEPS_PER_EPOCH = 57
REFERENCE_TRAIN_N = 3_601  # MNIST-1D's training samples: sets up to this size get every step
PATIENT_STEP_BUDGET = PATIENT_EPOCHS * REFERENCE_STEPS_PER_EPOCH
PLAIN_STEP_BUDGET = PLAIN_EPOCHS * REFERENCE_STEPS_PER_EPOCH
MIN_EPOCHS = 2


def default_epochs(augment: str, train_n: int | None = None, batch_size: int = 64) -> int:
    """Training epochs when ``--epochs`` is not given, for the resolved augmentation level and
    ``train_n`` training samples in batches of ``batch_size``: the step budget for that many
    samples in whole epochs, between ``MIN_EPOCHS`` and the level's epochs (``train_n`` None:
    those epochs).

    >>> default_epochs("strong", 3_601), default_epochs("none", 1_258)
    (300, 100)
    >>> default_epochs("strong", 60_000), default_epochs("none", 60_000)
    (5, 2)
    """
    most = PLAIN_EPOCHS if augment == "none" else PATIENT_EPOCHS
    if train_n is None:
        return most
    steps_per_epoch = math.ceil(train_n / batch_size)
    budget = step_budget(augment, train_n)
    return min(most, max(MIN_EPOCHS, math.ceil(budget / steps_per_epoch)))


def step_budget(augment: str, train_n: int | None = None) -> int:
    """The optimizer steps a default schedule aims at for this augmentation level and
    ``train_n`` training samples (None: a set no larger than MNIST-1D's).

    >>> step_budget("none"), step_budget("none", 3_601), step_budget("none", 14_404)
    (5700, 5700, 2850)
    """
    steps = PLAIN_STEP_BUDGET if augment == "none" else PATIENT_STEP_BUDGET
    if train_n is None or train_n <= REFERENCE_TRAIN_N:
        return steps
    return round(steps * math.sqrt(REFERENCE_TRAIN_N / train_n))


def epochs_choice(config: Any, augment: str, train_n: int | None = None) -> dict[str, Any]:
    """How a run's epochs were chosen, for the report's training section."""
    if config.epochs is not None:
        return {"epochs_from": "--epochs", "step_budget": None}
    return {"epochs_from": "step budget", "step_budget": step_budget(augment, train_n)}


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
        epochs=(
            default_epochs(augment, teaching.data.train.n, config.batch_size)
            if config.epochs is None
            else config.epochs
        ),
        lr=config.lr,
        batch_size=config.batch_size,
        alpha=alpha,
        seed=config.seed,
        patience=config.patience,
        time_budget=config.time_budget,
        checkpoint_every=config.checkpoint_every,
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
        teaching.model, student, teaching.data, train, method_name, method_options, options, dist,
        task=config.task, outputs=teaching.outputs,
    )  # fmt: skip
    return job, f"{augment} ({why})"


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
