"""What a strategy receives and returns: :class:`DistillJob` (teacher, student, data, training
settings, method, :class:`StrategyOptions`) and :class:`StrategyResult`.

Kept apart from the package's ``__init__`` (the registry) so that the strategies' shared pieces
(``_common``) can use these types without importing the registry that runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.data import DataBundle
from edgekd.data.augment import LEVELS
from edgekd.distill import MethodOptions
from edgekd.distill.methods import Method, make_method
from edgekd.errors import BadInputError
from edgekd.rundir import CHECKPOINT_FILE
from edgekd.teacher.outputs import TeacherOutputs
from edgekd.train.loop import TrainConfig, TrainHistory

PEERS = ("teacher", "student")


@dataclass(frozen=True)
class StrategyOptions:
    """Knobs of the strategies; each strategy reads only its own."""

    generations: int = 2  # self: born-again generations
    peer: str = "teacher"  # online: train with a copy of the teacher, or a second student
    teacher_onnx: str | None = None  # blackbox: an ONNX file run with ONNX Runtime
    teacher_cmd: str | None = None  # blackbox: a command, see edgekd.teacher.blackbox
    teacher_output: str = "probs"  # blackbox: probs | topk:K | labels
    command_timeout_s: float = 120.0
    finetune_epochs: int = 0  # hard-label fine-tune after any strategy
    use_cache: bool = True  # offline: cache the teacher's logits on disk
    augment: str = "none"  # frozen teacher: none | light | strong (edgekd.distill.views)

    def __post_init__(self) -> None:
        if self.generations < 1:
            raise BadInputError(f"--generations must be >= 1, got {self.generations}")
        if self.peer not in PEERS:
            raise BadInputError(f"online peer must be one of {PEERS}, got {self.peer!r}")
        if self.finetune_epochs < 0:
            raise BadInputError(f"--finetune-epochs must be >= 0, got {self.finetune_epochs}")
        if self.command_timeout_s <= 0:
            raise BadInputError("the teacher command timeout must be > 0 seconds")
        if self.augment not in LEVELS:
            levels = ", ".join(LEVELS)
            raise BadInputError(f"--augment must be one of {levels}, got {self.augment!r}")


@dataclass
class DistillJob:
    """Everything a strategy needs. ``teacher`` is None only for a black-box teacher."""

    teacher: nn.Module | None
    student: nn.Module  # untrained, built for the target (its ``edgekd_arch`` is recorded)
    data: DataBundle
    train: TrainConfig
    method: str = "kd"
    method_options: MethodOptions = field(default_factory=MethodOptions)  # a dict of them works
    options: StrategyOptions = field(default_factory=StrategyOptions)
    dist: Any = None  # edgekd.train.distributed.DistContext on several workers; None: one process
    checkpoints: Path | None = None  # a folder: one training checkpoint per stage; None: none
    resume: bool = False  # continue each stage from its checkpoint where there is one
    task: str = "classification"  # embedding: the student learns the teacher's vectors, no labels
    outputs: TeacherOutputs | None = None  # offline: the teacher's outputs, computed with it
    on_epoch: Callable[[nn.Module], None] | None = None  # after each epoch with a frozen teacher

    def __post_init__(self) -> None:
        if isinstance(self.method_options, dict):  # callers that predate MethodOptions
            self.method_options = MethodOptions(**self.method_options)

    def new_method(self) -> Method:
        return make_method(self.method, **vars(self.method_options))

    def stage(self, name: str) -> dict[str, Any]:
        """``train_student``'s checkpoint arguments for the stage called ``name``: its own file
        in ``checkpoints`` (saved every epoch; Ctrl-C stops at a step boundary), resumed with
        ``resume`` when the file is there. A finished stage's file holds its best weights, so a
        resumed run passes through it without training and goes on to the next one."""
        if self.checkpoints is None:
            return {}
        name = re.sub(r"[^a-z0-9]+", "-", name.lower())
        return self._checkpoint(Path(self.checkpoints) / f"{name}.pt")

    def single_stage(self) -> dict[str, Any]:
        """:meth:`stage` for a strategy that trains in one stage (offline): the run folder's
        ``checkpoint.pt`` beside ``checkpoints`` (``edgekd.rundir``), where edgekd has always
        kept a logit method's offline checkpoint, so that older interrupted runs resume."""
        if self.checkpoints is None:
            return {}
        return self._checkpoint(Path(self.checkpoints).parent / CHECKPOINT_FILE)

    def _checkpoint(self, path: Path) -> dict[str, Any]:
        from edgekd.train.resume import remove_stale_temporaries

        main = self.dist is None or self.dist.is_main
        if main:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
        found = path.is_file() if self.dist is None else self.dist.from_main(path.is_file)
        return {"checkpoint": path, "resume": self.resume and found}


@dataclass
class StrategyResult:
    student: nn.Module
    history: TrainHistory  # of the stage that produced the returned student
    info: dict[str, Any] = field(default_factory=dict)


def with_train(job: DistillJob, **changes: Any) -> DistillJob:
    """A copy of ``job`` with some training settings changed (e.g. another seed per stage)."""
    return replace(job, train=replace(job.train, **changes))
