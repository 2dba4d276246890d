"""Student families: models with width and depth knobs, registered by name.

Every family builds an ``nn.Module`` with two children: ``features`` (the body; its last output is
the last feature map before pooling, which feature-based distillation taps) and ``head``
(pooling + classifier). Adding a family is one new module in this package that calls
``@register_student``; modules here are imported automatically. A family also says which depths
the budget search tries (``depths``) and, where the architecture needs facts about the data beyond
the sample shape (a vocabulary size), how to read them (``options``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgekd.registry import Registry


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
    default_for: tuple[str, ...] = ()  # input kinds for which this family is the default


FAMILIES: Registry[StudentFamily] = Registry("student family", __name__)


def register_student(
    name: str,
    input_kinds: tuple[str, ...],
    description: str,
    depths: tuple[int, ...] = (1, 2, 3),
    options: Callable[[Any], dict[str, Any]] | None = None,
    default_for: tuple[str, ...] = (),
):
    """Register ``fn(sample_shape, num_classes, width=1.0, depth=2, **options) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        family = StudentFamily(name, description, input_kinds, fn, depths, options, default_for)
        FAMILIES.register(name, family)
        return fn

    return wrap


def get_family(name: str) -> StudentFamily:
    return FAMILIES.get(name)


def families_for(input_kind: str) -> list[StudentFamily]:
    """Families that accept this input kind: the one declared ``default_for`` it first, then in
    registration order."""
    fitting = [f for f in all_families() if input_kind in f.input_kinds]
    return sorted(fitting, key=lambda f: input_kind not in f.default_for)


def all_families() -> list[StudentFamily]:
    return list(FAMILIES.all().values())


def build_student(
    family: str,
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    **facts: Any,
) -> nn.Module:
    """Build a student. ``facts`` about the data (``input_shapes``, ``vocab_size``, ...) reach the
    families whose build function names them as parameters, and are recorded with the knobs.
    """
    fam = get_family(family)
    accepted = inspect.signature(fam.build).parameters
    extra = {k: v for k, v in facts.items() if k in accepted}
    model = fam.build(tuple(sample_shape), num_classes, width=width, depth=depth, **extra)
    # Recorded so that a checkpoint can rebuild the architecture without executing user code.
    model.edgekd_arch = {
        "family": family,
        "sample_shape": list(sample_shape),
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
    }
    if extra:
        model.edgekd_arch["options"] = dict(extra)
    return model


def data_facts(data) -> dict[str, object]:
    """What families may need to know about a ``DataBundle`` beyond the first input's shape.

    ``vocab_size`` is the largest token id in any split plus one (ids the student never saw in
    training still need a row in its embedding table).
    """
    import numpy as np

    from edgekd.data import is_token_ids

    arrays = data.train.inputs
    facts: dict[str, object] = {
        "input_names": list(arrays),
        "input_dtypes": [str(a.dtype) for a in arrays.values()],
        "input_shapes": [list(a.shape[1:]) for a in arrays.values()],
    }
    ids = [name for name, a in arrays.items() if is_token_ids(name, a)]
    if ids:
        splits = (data.train, data.val, data.test)
        top = [int(np.max(s.inputs[n])) for s in splits for n in ids if s.inputs[n].size]
        facts["vocab_size"] = max(top) + 1
    return facts


def family_options(family: str, data: Any) -> dict[str, Any]:
    """The extra build arguments ``family`` reads from ``data`` (a DataBundle); often none.

    A family's own ``options`` reader wins; otherwise the facts of :func:`data_facts` that its
    build function names as parameters.
    """
    fam = get_family(family)
    if fam.options:
        return fam.options(data)
    accepted = inspect.signature(fam.build).parameters
    return {k: v for k, v in data_facts(data).items() if k in accepted}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
