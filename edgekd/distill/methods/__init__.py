"""Distillation methods: a loss plus what it needs (taps, adapters, hyper-parameters).

A method is one module in this package that subclasses :class:`Method` and registers itself with
``@register_method``. The trainer calls ``method.loss(batch)`` and never branches on a name:
a method declares the activations it needs in ``student_taps``/``teacher_taps`` and gets them
in the batch.
The total loss is ``alpha * CE(student, labels) + (1 - alpha) * method.loss(batch)``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd.errors import BadInputError


@dataclass
class DistillBatch:
    """What one training step sees: outputs of both models, labels, and tapped activations."""

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor | None
    student_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0
    epochs: int = 1


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``description``, ``paper`` and implement ``loss``.

    Being an ``nn.Module`` lets a method own trainable adapters, which the trainer optimises with
    the student.
    """

    name = ""
    description = ""
    paper = ""
    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()
    # What the outputs are: class logits ("classification") or vectors ("embedding").
    tasks: tuple[str, ...] = ("classification",)

    def __init__(self, temperature: float = 4.0, **_: object) -> None:
        super().__init__()
        self.temperature = temperature

    def setup(self, student: nn.Module, teacher: nn.Module | None, example: dict) -> None:
        """Called once before training with both models and an example batch (build adapters)."""

    def loss(self, batch: DistillBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def all_methods() -> dict[str, type[Method]]:
    _load_all()
    return dict(METHODS)


def make_method(name: str, **hparams: object) -> Method:
    methods = all_methods()
    if name not in methods:
        raise BadInputError(f"unknown method {name!r} (known: {', '.join(sorted(methods))})")
    return methods[name](**hparams)
