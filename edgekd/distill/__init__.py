"""Knowledge distillation proper: methods (one paper per file), strategies, the job they share.

Kept free of heavy imports: the CLI and ``edgekd.config`` read the defaults below at ``--help``,
and :class:`MethodOptions` can be built (and checked) before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgekd.errors import BadInputError

# Hinton et al. (2015) used T in [2, 20]; 4 is the common default in RepDistiller and torchdistill.
# The one place this default is written: DistillConfig, the CLI option and the losses read it here.
DEFAULT_TEMPERATURE = 4.0


@dataclass(frozen=True)
class MethodOptions:
    """What a run tells its distillation method, under the names every ``Method`` takes.

    ``temperature_end``: anneal T linearly to this value (None: constant T). ``weight``: the
    method's own loss weight (None: its ``default_weight``). ``pairs``: layer pairs
    "student_layer:teacher_layer" for feature methods (none: the default ``features`` pair).

    The temperatures are checked here and nowhere else: a ``Method`` builds its options through
    this class, so a run and a direct ``make_method("kd", temperature=0.0)`` get the same error.

    >>> MethodOptions(temperature=0.0)
    Traceback (most recent call last):
    edgekd.errors.BadInputError: temperature must be > 0, got 0.0
    """

    temperature: float = DEFAULT_TEMPERATURE
    temperature_end: float | None = None
    weight: float | None = None
    pairs: tuple[str, ...] = ()  # or edgekd.distill.pairing.LayerPair objects

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(self.pairs or ()))  # a list is fine too
        problems = self.field_problems(vars(self))
        if problems:
            raise BadInputError("; ".join(f"{key} {message}" for key, message in problems))

    @staticmethod
    def field_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``[(key, message)]`` for the values of these fields in ``values`` (any mapping that
        uses their names, e.g. a run configuration being read from a file)."""
        return [
            (key, f"must be > 0, got {values[key]!r}")
            for key in ("temperature", "temperature_end")
            if values.get(key) is not None and not values[key] > 0
        ]
