"""Student families: models with width and depth knobs, registered by name.

Every family builds an ``nn.Module`` with two children: ``features`` (the body; its last output is
the last feature map before pooling, which feature-based distillation taps) and ``head``
(pooling + classifier). Adding a family is one new module in this package that calls
``@register_student``; modules here are imported automatically. A family also says which depths
the budget search tries (``depths``) and, where the architecture needs facts about the data beyond
the sample shape (a vocabulary size), how to read them (``options``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgekd.errors import BadInputError


@dataclass(frozen=True)
class StudentFamily:
    name: str
    description: str
    input_kinds: tuple[str, ...]
    build: Callable[..., nn.Module]  # (sample_shape, num_classes, width, depth) -> nn.Module
    depths: tuple[int, ...] = (1, 2, 3)  # what the budget search tries
    # data -> extra keyword arguments of ``build`` (e.g. the vocabulary size); recorded in the
    # checkpoint so the architecture can be rebuilt without the data.
    options: Callable[[Any], dict[str, Any]] | None = None


FAMILIES: dict[str, StudentFamily] = {}


def register_student(
    name: str,
    input_kinds: tuple[str, ...],
    description: str,
    depths: tuple[int, ...] = (1, 2, 3),
    options: Callable[[Any], dict[str, Any]] | None = None,
):
    """Register ``fn(sample_shape, num_classes, width=1.0, depth=2, **options) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        FAMILIES[name] = StudentFamily(name, description, input_kinds, fn, depths, options)
        return fn

    return wrap


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_family(name: str) -> StudentFamily:
    _load_all()
    if name not in FAMILIES:
        raise BadInputError(
            f"unknown student family {name!r} (known: {', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[name]


def families_for(input_kind: str) -> list[StudentFamily]:
    """Families that accept this input kind, the default (first registered) first."""
    _load_all()
    return [f for f in FAMILIES.values() if input_kind in f.input_kinds]


def all_families() -> list[StudentFamily]:
    _load_all()
    return list(FAMILIES.values())


def build_student(
    family: str,
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    **options: Any,
) -> nn.Module:
    model = get_family(family).build(
        tuple(sample_shape), num_classes, width=width, depth=depth, **options
    )
    # Recorded so that a checkpoint can rebuild the architecture without executing user code.
    model.edgekd_arch = {
        "family": family,
        "sample_shape": list(sample_shape),
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
    }
    if options:
        model.edgekd_arch["options"] = dict(options)
    return model


def family_options(family: str, data: Any) -> dict[str, Any]:
    """The extra build arguments ``family`` reads from ``data`` (a DataBundle); often none."""
    fam = get_family(family)
    return fam.options(data) if fam.options else {}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
