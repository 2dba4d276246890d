"""Student families: models with width and depth knobs, registered by name.

Every family builds an ``nn.Module`` with two children: ``features`` (the body; its last output is
the last feature map before pooling, which feature-based distillation taps) and ``head``
(pooling + classifier). Adding a family is one new module in this package that calls
``@register_student``; modules here are imported automatically. A family also says which depths
the budget search tries (``depths``) and, where the architecture needs facts about the data beyond
the sample shape (a vocabulary size), how to read them (``options``).

A family may also take the same numbers in another shape (a *view*): a 1-D conv net over a signal
stored ``[N, 40]`` sees ``[N, 1, 40]``, an image CNN over ``[N, 64]`` sees ``[N, 1, 8, 8]``. The
student then reshapes its input itself (a ``Reshape`` is its first ONNX op), so the exported model
takes the user's shape unchanged. :func:`student_view` says which view a family gets by default:
a channel axis added in front, and a flat vector becomes a square image only when its length is a
perfect square (nothing else tells H from W; a teacher that shows its own view, see
``edgekd.sizing.evidence``, passes it as ``view=``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgekd.errors import BadInputError
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


_RANK_KIND = {1: "vector", 2: "sequence", 3: "image"}  # as edgekd.data's rank rule for floats


class View(nn.Module):
    """The user's input reshaped to the shape a family is built for (batch axis kept)."""

    def __init__(self, view: tuple[int, ...]) -> None:
        super().__init__()
        self.view = tuple(int(d) for d in view)

    def forward(self, x):
        return x.reshape(-1, *self.view)


def student_view(family: str, sample_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape ``family`` sees for inputs of ``sample_shape`` when it does not take that shape's
    rank itself: ``(1, L)`` for a sequence family over ``(L,)``; ``(C, r, r)`` for an image family
    over ``(C, r*r)`` or ``(r*r,)`` (C = 1); None where no view applies or none is needed.

    >>> student_view("cnn1d", (40,)), student_view("cnn", (64,)), student_view("cnn", (48,))
    ((1, 40), (1, 8, 8), None)
    """
    import math

    fam = get_family(family)
    shape = tuple(sample_shape)
    if _RANK_KIND.get(len(shape)) in fam.input_kinds:
        return None
    if "sequence" in fam.input_kinds and len(shape) == 1:
        return (1, shape[0])
    if "image" in fam.input_kinds and len(shape) in (1, 2):
        channels, length = (1, shape[0]) if len(shape) == 1 else shape
        side = math.isqrt(length)
        if side >= 2 and side * side == length:
            return (channels, side, side)
    return None


def build_student(
    family: str,
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    view: tuple[int, ...] | None = None,
    **facts: Any,
) -> nn.Module:
    """Build a student. ``facts`` about the data (``input_shapes``, ``vocab_size``, ...) reach the
    families whose build function names them as parameters, and are recorded with the knobs.
    ``view``: the shape the family is built for when it is not ``sample_shape`` (default:
    :func:`student_view`); the student reshapes its input to it first.
    """
    fam = get_family(family)
    accepted = inspect.signature(fam.build).parameters
    extra = {k: v for k, v in facts.items() if k in accepted}
    given = view is not None
    view = tuple(view) if given else student_view(family, tuple(sample_shape))
    if view is not None and math.prod(view) != math.prod(sample_shape):
        raise BadInputError(
            f"student view {list(view)} does not hold the {math.prod(sample_shape)} values of "
            f"a {list(sample_shape)} sample"
        )
    built_for = tuple(view) if view is not None else tuple(sample_shape)
    model = fam.build(built_for, num_classes, width=width, depth=depth, **extra)
    if view is not None:
        # Reshape first, inside the body, so that forward (head(features(x))) and the taps on
        # the last feature map stay as the family wrote them.
        model.features = nn.Sequential(View(view), model.features)
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
    if given:  # a default view is derived again from the shape; a given one must be recorded
        model.edgekd_arch["view"] = list(view)
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
