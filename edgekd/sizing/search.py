"""The sizing search: every candidate of a family measured, the largest that fits every line chosen.

``size_student_to_budget`` builds a ``SizingRequest`` and passes it whole down
``_size_one`` (one family) -> ``_measure_point`` (one grid point) -> ``measure_candidate``. When no
family is named, the default family goes first and the others that take the data's inputs follow,
so that a small teacher still gets a (smaller-family) student.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekd.bench.memory import runtime_baseline_mb
from edgekd.data import DataBundle
from edgekd.errors import BadInputError
from edgekd.results import Line, short_number
from edgekd.sizing.candidate import (
    MAX_SHARE_OF_TEACHER,
    Candidate,
    SizingRequest,
    check_lines,
    measure_candidate,
)
from edgekd.sizing.space import WIDTHS, SearchSpace, search_space
from edgekd.targets import TargetProfile

_LINES = ("params", "model_size_kb", "latency_ms", "peak_memory_mb", "share_of_teacher")
_NOTES = (
    "latency_ms and peak_memory_mb are estimates for the target device, not measurements; "
    "host_ms is measured on this host (1 thread) for reference",
    "candidates that break an exact line (params, share_of_teacher) are not timed on the "
    "host nor quantized to int8 ('-' in the table): they cannot be chosen",
)


@dataclass(frozen=True)
class SizingResult:
    """The search: every candidate (smallest first), the chosen one, and what the figures mean."""

    target: str
    device: str
    precision: str
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    teacher_params: int | None
    max_share_of_teacher: float
    runtime_baseline_mb: float
    notes: tuple[str, ...] = field(default=())
    # Set by edgekd.sizing.trial.choose_student (typed loosely: trial imports this module).
    evidence: Any = None  # edgekd.sizing.evidence.FamilyEvidence: why these families
    trial: Any = None  # edgekd.sizing.trial.TrialResult: the short trial between them
    augment_kind: str | None = None  # the input kind whose augmentation the student gets

    @property
    def stopped_by(self) -> tuple[Line, ...]:
        """The lines the next larger candidate breaks: what keeps the student from growing."""
        chosen = self.chosen.order
        bigger = [c for c in self.candidates if c.order > chosen and not c.fits]
        return min(bigger, key=lambda c: c.order).failing if bigger else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "device": self.device,
            "precision": self.precision,
            "chosen": self.chosen.to_dict(),
            "stopped_by": [x.describe() for x in self.stopped_by],
            "candidates": [c.to_dict() for c in self.candidates],
            "teacher_params": self.teacher_params,
            "max_share_of_teacher": self.max_share_of_teacher,
            "runtime_baseline_mb": self.runtime_baseline_mb,
            "latency_label": "estimate",
            "notes": list(self.notes),
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
            "trial": None if self.trial is None else self.trial.to_dict(),
            "augment_kind": self.augment_kind,
        }


class NothingFitsError(BadInputError):
    """No candidate of a family meets every budget line (the message names the line)."""


def size_student_to_budget(
    target: TargetProfile,
    data: DataBundle,
    teacher_params: int | None = None,
    student: str | None = None,
    *,
    precision: str = "fp32",
    widths: Sequence[float] = WIDTHS,
    depths: Sequence[float] | None = None,
    max_share_of_teacher: float = MAX_SHARE_OF_TEACHER,
    measure_host: bool = True,
    baseline_mb: float | None = None,
) -> SizingResult:
    """Search student sizes for ``target`` and pick the largest that fits every budget line.

    ``student`` is a family name, a ``pkg.module:factory`` spec, or None for the default family
    of the data's input kind. ``teacher_params`` (None: unknown) bounds the student to
    ``max_share_of_teacher`` of it. Raises :class:`BadInputError` naming the budget line no
    candidate can meet when nothing fits.

    >>> result = size_student_to_budget(load_target("iot"), load_data("digits"), 140_458)
    ... # doctest: +SKIP
    >>> result.chosen.label  # doctest: +SKIP
    'cnn width 1 depth 4'
    """
    request = SizingRequest(
        target,
        data,
        teacher_params,
        precision=precision,
        widths=widths,
        depths=depths,
        max_share=max_share_of_teacher,
        measure_host=measure_host,
        baseline_mb=baseline_mb,
    )
    if student is not None:
        return _size_one(request, student)
    from edgekd.students import families_for

    names = [f.name for f in families_for(data.input_kind)]
    if not names:
        raise BadInputError(f"no student family takes {data.input_kind} inputs")
    first_error: NothingFitsError | None = None
    for name in names:
        try:
            result = _size_one(request, name)
        except NothingFitsError as exc:
            first_error = first_error or exc
            continue
        if name != names[0]:
            note = f"the default family {names[0]!r} did not fit ({first_error}); used {name!r}"
            result = dataclasses.replace(result, notes=(*result.notes, note))
        return result
    assert first_error is not None
    raise first_error


def size_family(
    request: SizingRequest,
    family: str,
    view: Sequence[int] | None = None,
    top_down: bool = False,
) -> SizingResult:
    """The largest candidate of one family (or factory) that fits, the family built for ``view``
    where given; :class:`NothingFitsError` when none does. ``top_down``: measure only from the
    largest candidate within the exact lines downwards until one fits (the table then holds only
    those: a family the trial may pass over needs no full table)."""
    if top_down:
        found = _size_top_down(request, family, view)
        if found is not None:
            return found
    return _size_one(request, family, view)


def _size_top_down(
    request: SizingRequest, family: str, view: Sequence[int] | None
) -> SizingResult | None:
    """See :func:`size_family`; None when nothing within the exact lines fits (the full search
    then says why)."""
    from edgekd.students import count_params

    space = search_space(request.data, family, request.widths, request.depths, view)
    if request.baseline_mb is None:
        request = dataclasses.replace(request, baseline_mb=runtime_baseline_mb())
    # Counting parameters needs no export: the points that break an exact line are dropped
    # before anything is measured.
    sizes = [(count_params(space.build(w, d)), w, d) for w, d in space.grid]
    within = sorted((p for p in sizes if not request.breaks_exact_line(p[0])), reverse=True)
    measured: list[Candidate] = []
    with _one_torch_thread():
        for _, width, depth in within:
            measured.append(_measure_point(space, width, depth, request))
            if measured[-1].fits:
                note = "measured from the largest candidate within the exact lines down"
                return _result(request, space, measured, extra_notes=(note,))
    return None


def _size_one(
    request: SizingRequest, student: str, view: Sequence[int] | None = None
) -> SizingResult:
    space = search_space(request.data, student, request.widths, request.depths, view)
    if request.baseline_mb is None:
        request = dataclasses.replace(request, baseline_mb=runtime_baseline_mb())
    measured: dict[tuple, Candidate] = {}
    with _one_torch_thread():
        for width, depth in space.grid:
            c = _measure_point(space, width, depth, request)
            # Two knobs can round to the same network (tiny widths hit the channel floor).
            signature = (c.params, c.macs, round(c.size_kb, 3))
            if signature not in measured or c.order < measured[signature].order:
                measured[signature] = c
    return _result(request, space, measured.values())


def _result(
    request: SizingRequest,
    space: SearchSpace,
    measured: Iterable[Candidate],
    extra_notes: tuple[str, ...] = (),
) -> SizingResult:
    candidates = tuple(sorted(measured, key=lambda c: c.order))
    notes = _NOTES + extra_notes
    if request.teacher_params is None:
        notes += ("teacher size unknown: the share-of-teacher line was not checked",)
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        raise NothingFitsError(_nothing_fits(request.target, space.name, candidates))
    assert request.baseline_mb is not None
    return SizingResult(
        target=request.target.name,
        device=request.target.device.name,
        precision=request.precision,
        chosen=max(fitting, key=lambda c: c.order),
        candidates=candidates,
        teacher_params=request.teacher_params,
        max_share_of_teacher=request.max_share,
        runtime_baseline_mb=request.baseline_mb,
        notes=notes,
    )


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Trace and export on one torch thread, then restore: tracing small models gains nothing
    from more threads, and on a busy host they only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _measure_point(
    space: SearchSpace, width: float | None, depth: float | None, request: SizingRequest
) -> Candidate:
    from edgekd.students import count_params

    model = space.build(width, depth)
    # A candidate that breaks an exact line can never be chosen: skip its slow extras (host
    # timing, int8 quantization); its table row shows "-" there.
    hopeless = request.breaks_exact_line(count_params(model))
    c = measure_candidate(model, space.name, width, depth, request, extras=not hopeless)
    lines = check_lines(
        c, request.target, request.precision, request.teacher_params, request.max_share
    )
    return dataclasses.replace(c, lines=lines, view=space.view)


def _nothing_fits(target: TargetProfile, name: str, candidates: Sequence[Candidate]) -> str:
    """Name the line every candidate breaks and what the smallest candidate needs for it."""
    smallest = candidates[0]
    if len(candidates) == 1:
        broken = "; ".join(_needs(line) for line in smallest.failing)
        return f"student {smallest.label} does not fit target {target.name!r}: {broken}"
    for line_name in _LINES:
        lines = [c.line(line_name) for c in candidates]
        if all(x is not None and not x.passed for x in lines):
            best = min(lines, key=lambda x: x.value)  # the least any candidate needs
            who = min((c for c in candidates if c.line(line_name) is best), key=lambda c: c.order)
            which = "smallest" if who is smallest else "least demanding"
            return (
                f"no student fits target {target.name!r}: every {name} candidate breaks "
                f"{line_name}; the {which} ({who.label}) needs {_needs(best)}"
            )
    return (
        f"no student fits target {target.name!r}: no {name} candidate meets every line at once; "
        f"the smallest ({smallest.label}) breaks " + "; ".join(_needs(x) for x in smallest.failing)
    )


def _needs(line: Line) -> str:
    est = " (estimate)" if line.kind == "estimate" else ""
    if line.name == "share_of_teacher":
        return (
            f"{line.value * 100:.3g}% of the teacher's parameters > the {line.limit * 100:.3g}% "
            "a student may have"
        )
    unit = line.unit.strip()
    unit_txt = f" {unit}" if unit and unit != "x" else ""
    label = "" if line.name not in ("params",) else " parameters"
    value, limit = short_number(line.value), short_number(line.limit)
    return f"{value}{unit_txt}{label} > {limit}{unit_txt}{est}"
