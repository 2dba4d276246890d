"""A student the user brings: ``--student pkg.module:factory``.

``factory`` is either a callable or an ``nn.Module`` instance. A callable that takes ``width``
and/or ``depth`` keyword arguments (multipliers, 1.0 = the factory's own default size) is searched
over like a built-in family; one that takes neither is a fixed student, built once and still
measured against the budget. A callable may also take ``sample_shape`` (one sample's shape, no
batch axis) and ``num_classes``; they are passed when it names them.

The module is imported as Python code: bring only code you trust, as with any import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgekd.errors import BadInputError

_DATA_ARGS = ("sample_shape", "num_classes")


def is_factory_spec(text: str | None) -> bool:
    """``pkg.module:factory`` or ``file.py:factory`` rather than a family name."""
    from edgekd.usercode import parse_factory

    return bool(text) and parse_factory(text) is not None


@dataclass(frozen=True)
class StudentFactory:
    spec: str
    target: Any  # the callable, or the fixed nn.Module
    takes_width: bool
    takes_depth: bool
    accepted: frozenset[str]

    @property
    def searchable(self) -> bool:
        return self.takes_width or self.takes_depth

    def build(
        self,
        sample_shape: tuple[int, ...],
        num_classes: int,
        width: float | None = None,
        depth: float | None = None,
    ) -> nn.Module:
        if isinstance(self.target, nn.Module):
            return self.target
        kwargs: dict[str, Any] = {}
        if "sample_shape" in self.accepted:
            kwargs["sample_shape"] = tuple(sample_shape)
        if "num_classes" in self.accepted:
            kwargs["num_classes"] = num_classes
        if self.takes_width and width is not None:
            kwargs["width"] = width
        if self.takes_depth and depth is not None:
            kwargs["depth"] = depth
        try:
            model = self.target(**kwargs)
        except Exception as exc:
            raise BadInputError(
                f"student factory {self.spec} failed with {kwargs}: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(model, nn.Module):
            raise BadInputError(
                f"student factory {self.spec} returned {type(model).__name__}, not a torch "
                "nn.Module"
            )
        return model


def load_student_factory(spec: str) -> StudentFactory:
    """Resolve ``pkg.module:attr`` to a :class:`StudentFactory`.

    >>> f = load_student_factory("mypkg.models:tiny_cnn")  # doctest: +SKIP
    >>> f.searchable  # doctest: +SKIP
    True
    """
    from edgekd.usercode import load_factory  # one parser and importer for every factory spec

    obj: Any = load_factory(spec, "student")
    if isinstance(obj, nn.Module):
        return StudentFactory(spec, obj, False, False, frozenset())
    if not callable(obj):
        raise BadInputError(f"--student {spec}: neither a callable nor an nn.Module")
    accepted = _accepted_kwargs(obj)
    return StudentFactory(spec, obj, "width" in accepted, "depth" in accepted, accepted)


def _accepted_kwargs(fn: Callable[..., Any]) -> frozenset[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call with nothing
        return frozenset()
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return frozenset(names & {"width", "depth", *_DATA_ARGS})
