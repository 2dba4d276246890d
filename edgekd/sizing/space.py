"""What the sizing search tries: one family (or a user's factory) over a (width, depth) grid.

``search_space`` picks the family (the one named, or the first that takes the data's inputs) and
the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.data import DataBundle
from edgekd.errors import BadInputError

WIDTHS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
FACTORY_DEPTHS = (0.5, 1.0, 2.0)  # depth multipliers tried for a user factory that takes depth


@dataclass(frozen=True)
class SearchSpace:
    """What to search: a family or a factory, and the (width, depth) grid."""

    name: str
    grid: tuple[tuple[float | None, float | None], ...]
    build: Callable[[float | None, float | None], Any]  # (width, depth) -> nn.Module
    view: tuple[int, ...] | None = None  # the shape the family is built for, if not the data's


def search_space(
    data: DataBundle,
    student: str | None,
    widths: Sequence[float],
    depths: Sequence[float] | None,
    view: Sequence[int] | None = None,
) -> SearchSpace:
    """The family or factory ``student`` names (None: the default family for the data's input
    kind) over ``widths`` x ``depths`` (None: the family's own depths). ``view``: the shape a
    family is built for when it is not the data's (``edgekd.students.student_view``)."""
    from edgekd.students import (
        build_student,
        families_for,
        family_options,
        get_family,
        student_view,
    )
    from edgekd.students.factory import is_factory_spec, load_student_factory

    shape = data.sample_shapes[data.input_names[0]]
    if is_factory_spec(student):
        factory = load_student_factory(student)
        ws = tuple(widths) if factory.takes_width else (None,)
        ds = tuple(depths or FACTORY_DEPTHS) if factory.takes_depth else (None,)
        return SearchSpace(
            factory.spec,
            tuple((w, d) for d in ds for w in ws),
            lambda w, d: factory.build(shape, data.num_classes, w, d),
        )
    if student:
        fam = get_family(student)
        takes = data.input_kind in fam.input_kinds
        if not takes and view is None and student_view(fam.name, shape) is None:
            raise BadInputError(
                f"student family {fam.name!r} takes {', '.join(fam.input_kinds)} inputs; "
                f"data {data.name!r} has {data.input_kind} inputs"
            )
    else:
        found = families_for(data.input_kind)
        if not found:
            raise BadInputError(f"no student family takes {data.input_kind} inputs")
        fam = found[0]
    options = family_options(fam.name, data)
    if view is not None:
        options["view"] = tuple(view)
    return SearchSpace(
        fam.name,
        tuple((w, d) for d in (depths or fam.depths) for w in widths),
        lambda w, d: build_student(fam.name, shape, data.num_classes, w, int(d), **options),
        tuple(view) if view is not None else student_view(fam.name, shape),
    )
