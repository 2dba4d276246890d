"""Distillation strategies: who teaches whom, and when (offline, online, self, assistant, blackbox).

A strategy is one module in this package that registers a function with ``@register_strategy``.
It receives a :class:`DistillJob` (teacher, the untrained student, data, training settings, the
method's name and options) and returns a :class:`StrategyResult`: the trained student and a dict
for the report. Strategies build fresh method instances with ``job.new_method()`` (each student
gets its own adapters) and all train through the one loop, ``trainer.train_student``.
After any strategy, :func:`run_strategy` can add a hard-label fine-tune stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekd.distill.strategies._common import finetune
from edgekd.distill.strategies._job import (
    PEERS,
    DistillJob,
    StrategyOptions,
    StrategyResult,
    with_train,
)
from edgekd.errors import BadInputError
from edgekd.registry import Registry

__all__ = [
    "PEERS",
    "DistillJob",
    "Strategy",
    "StrategyOptions",
    "StrategyResult",
    "all_strategies",
    "get_strategy",
    "register_strategy",
    "resolve_strategy",
    "run_strategy",
    "with_train",
]


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    paper: str
    run: Callable[[DistillJob], StrategyResult]


STRATEGIES: Registry[Strategy] = Registry("strategy", __name__)


def register_strategy(name: str, description: str, paper: str = ""):
    """Register ``fn(job: DistillJob) -> StrategyResult`` under ``name``."""

    def wrap(fn: Callable[[DistillJob], StrategyResult]):
        STRATEGIES.register(name, Strategy(name, description, paper, fn))
        return fn

    return wrap


def all_strategies() -> dict[str, Strategy]:
    return STRATEGIES.all()


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name)


def run_strategy(name: str, job: DistillJob) -> StrategyResult:
    """Run strategy ``name`` on ``job``, then the optional hard-label fine-tune stage.

    >>> result = run_strategy("offline", job)  # doctest: +SKIP
    >>> result.info["teacher_signal"]  # doctest: +SKIP
    'cached logits (cache hit)'
    """
    strategy = get_strategy(name)
    result = strategy.run(job)
    result.info = {"strategy": name, "description": strategy.description, **result.info}
    if job.options.finetune_epochs:
        result = finetune(result, job)
    return result


def resolve_strategy(name: str | None, blackbox_teacher: bool) -> str:
    """``--strategy`` as given, or its default: ``blackbox`` when the teacher is a black box
    (``--teacher-onnx``/``--teacher-cmd``), ``offline`` otherwise."""
    if name is None:
        return "blackbox" if blackbox_teacher else "offline"
    get_strategy(name)
    if blackbox_teacher and name != "blackbox":
        raise BadInputError(
            f"--strategy {name} needs a PyTorch teacher; --teacher-onnx/--teacher-cmd give a "
            "black box (use --strategy blackbox)"
        )
    if name == "blackbox" and not blackbox_teacher:
        raise BadInputError("--strategy blackbox needs --teacher-onnx FILE or --teacher-cmd CMD")
    return name
