"""Distillation methods: a loss plus what it needs (taps, adapters, hyper-parameters).

A method is one module in this package that subclasses :class:`Method` and registers itself with
``@register_method``. The trainer calls ``method.loss(batch)`` and never branches on a name:
a method declares the activations it needs in ``student_taps``/``teacher_taps`` and gets them
in the batch.
The total loss is ``alpha * CE(student, labels) + (1 - alpha) * method.loss(batch)``; each method
says which ``alpha`` its authors' setting corresponds to (``default_alpha``) and how strongly its
own term is weighted (``weight``, e.g. RepDistiller's beta for feature losses).

One paper is one file: the paper's loss as a plain function over tensors on top (named by the
method's ``loss_function`` and published as ``edgekd.losses.<its name>``), the method below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd.distill import DEFAULT_TEMPERATURE, MethodOptions
from edgekd.errors import BadInputError
from edgekd.registry import Registry


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
    # Language models (methods/_tokens.py): the teacher's top-k token ids when ``teacher_logits``
    # holds cached top-k log-probabilities plus the tail bucket, and which tokens count.
    teacher_index: torch.Tensor | None = None
    mask: torch.Tensor | None = None


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
    default_alpha = 0.1  # CE weight matching the authors' setting (overridden by --alpha)
    default_weight = 1.0  # multiplies the method's own loss (overridden by --weight)
    paper_weight = 1.0  # the weight in the paper / reference code, where ours differs
    needs_labels = False
    # Compares tapped layers (``--pair``), not only outputs; a class attribute, so that a run can
    # choose its training path before the one instance per student exists.
    needs_layers = False
    # The paper's loss as a plain function over tensors, published as ``edgekd.losses.<name>``;
    # None for a method that only combines others' (embed).
    loss_function: Callable[..., torch.Tensor] | None = None

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        temperature_end: float | None = None,
        weight: float | None = None,
        pairs: object = None,
        **_: object,
    ) -> None:
        super().__init__()
        if pairs:  # feature methods take ``pairs`` before this point
            raise BadInputError(
                f"method {self.name!r} compares outputs, not layers: --pair applies only to "
                "feature methods (see `edgekd methods`)"
            )
        options = MethodOptions(temperature, temperature_end, weight)  # checks the temperatures
        self.temperature = options.temperature
        self.temperature_end = options.temperature_end
        self.weight = self.default_weight if weight is None else float(weight)

    def temperature_at(self, epoch: int, epochs: int) -> float:
        """T for this epoch: constant, or linear from ``temperature`` to ``temperature_end``.

        A schedule lets soft targets start soft (high T) and sharpen towards the hard labels.
        """
        if self.temperature_end is None or epochs <= 1:
            return self.temperature
        frac = min(max(epoch / (epochs - 1), 0.0), 1.0)
        return self.temperature + (self.temperature_end - self.temperature) * frac

    def describe(self) -> dict:
        """Metadata for ``edgekd methods`` and the report."""
        return {
            "name": self.name,
            "description": self.description,
            "paper": self.paper,
            "default_alpha": self.default_alpha,
            "weight": self.weight,
            "paper_weight": self.paper_weight,
            "temperature": self.temperature,
            "temperature_end": self.temperature_end,
            "student_taps": list(self.student_taps),
            "teacher_taps": list(self.teacher_taps),
        }

    def setup(self, student: nn.Module, teacher: nn.Module | None, example: dict) -> None:
        """Called once before training with both models and an example batch (build adapters)."""

    def loss(self, batch: DistillBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method", __name__)


def register_method(cls: type[Method]) -> type[Method]:
    return METHODS.register(cls.name, cls)


def all_methods() -> dict[str, type[Method]]:
    return METHODS.all()


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


def make_method(name: str, **hparams: object) -> Method:
    """A method instance; options it does not know are ignored (``temperature`` for fitnet)."""
    return get_method(name)(**hparams)
