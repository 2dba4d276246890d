"""More fresh processes of a causal-LM report's student for the latency lines that its stored
runs leave undecided (``edgekd gate --max-seconds``): the LM side of ``edgekd.gate.remeasure``.

The LM benchmark keeps each run's samples (``ttft_runs``, ``decode_runs``; an ONNX model's runs
each a fresh process of ``python -m edgekd.lm._timeprobe``). A line still INCONCLUSIVE on them
gets more processes of the same probe with the run's settings (its prompt tokens, new tokens and
prefills; one thread, as ``edgekd.lm.bench.bench_lm`` runs it), added to the stored ones a round
at a time by ``remeasure.measure_until_decided`` (its loop, its budget of seconds, its ABBA order
against a baseline). One probe process times both figures, so a model's two sides share it: a
process run for the decode line adds its time-to-first-token samples to the ttft side too, as a
classifier's processes added for its budget line count for its regression.

The file is the student row's ``path``, else the same path or name beside the report, and must
still be the row's ``size_bytes`` long (an LM report keeps no SHA-256); a report measured on
another CPU (``host.cpu_model``) is not added to here (``remeasure.other_cpu``, as for a
classifier's; ``--any-host`` does not change it). A student that the gate has to measure again
but cannot find is one line naming the file (exit 2; ``--max-seconds 0`` judges the stored runs
alone); a baseline whose file is gone keeps its stored runs, as a classifier baseline does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekd.bench.stats import LatencySamples
from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict
from edgekd.gate.lines import GateLine
from edgekd.gate.remeasure import Side, candidate_paths, measure_until_decided, other_cpu

FIGURES = {"ttft": "ttft_runs", "decode": "decode_runs"}  # figure -> its per-run field
# One probe process of an ONNX LM: (file, settings) -> {"ttft": samples, "decode": samples}
Probe = Callable[[Path, dict[str, int]], dict[str, LatencySamples]]


def student_row(data: dict[str, Any]) -> dict[str, Any] | None:
    """A causal-LM report's ``student`` row (None when it has none)."""
    rows = [m for m in data.get("models") or [] if isinstance(m, dict)]
    return next((m for m in rows if m.get("name") == "student"), None)


def runs_of(row: dict[str, Any], field: str, where: str) -> list[LatencySamples]:
    """A row's per-run samples (``ttft_runs``/``decode_runs``); [] in a report without them."""
    stored = row.get(field) or []
    if not isinstance(stored, list):
        raise BadInputError(f"{where}: field 'models[student].{field}' must be a list")
    try:
        return [LatencySamples.from_dict(r) for r in stored]
    except BadInputError as exc:
        raise BadInputError(f"{where}: field 'models[student].{field}': {exc}") from None


def run_unit(runs: Sequence[LatencySamples]) -> str:
    """What one run is, in words: a fresh process (an ONNX model) or a repeat in one process."""
    units = {r.metadata.get("unit") for r in runs}
    return ("a fresh process per run" if units == {"process"} else
            "runs within one process: blind to drift between processes")  # fmt: skip


def probe_once(path: Path, settings: dict[str, int]) -> dict[str, LatencySamples]:
    """One fresh process of the LM time probe on ``path`` (``time_in_processes``)."""
    from edgekd.lm import bench

    speed = bench.time_in_processes(path, settings["prompt_tokens"], settings["new_tokens"], 1,
                                    settings["vocab_size"], settings["prefills"])  # fmt: skip
    return {"ttft": speed.ttft_runs[0], "decode": speed.decode_runs[0]}


def _model_file(row: dict[str, Any], where: str) -> tuple[Path | None, str]:
    """The student's ONNX file as measured, or None and why it cannot be measured again."""
    recorded = row.get("path")
    if row.get("format") != "onnx":
        return None, "the student is not an ONNX file (a report never makes the gate run code)"
    if not isinstance(recorded, str) or not recorded:
        return None, "the report names no file for the student (field 'models[student].path')"
    size = row.get("size_bytes")
    for path in candidate_paths(recorded, where):
        if path.is_file() and (size is None or path.stat().st_size == size):
            return path, ""
    return None, f"the student's file {recorded} is gone or has changed since it was measured"


def _settings(data: dict[str, Any], row: dict[str, Any], runs: list[LatencySamples],
              where: str) -> dict[str, int]:  # fmt: skip
    """The benchmark's settings for one more process: from the stored runs' metadata, else the
    benchmark's defaults (16 new tokens, 4 prefills)."""
    meta = runs[0].metadata if runs else {}
    vocab = (data.get("student") or {}).get("vocab_size")
    settings = {"prompt_tokens": row.get("prompt_tokens") or meta.get("prompt_tokens"),
                "new_tokens": meta.get("new_tokens", 16), "prefills": meta.get("prefills", 4),
                "vocab_size": vocab if isinstance(vocab, int) and vocab >= 2 else 2}  # fmt: skip
    for key, lowest in (("prompt_tokens", 1), ("new_tokens", 2), ("prefills", 1)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise BadInputError(f"{where}: the student's {key} must be an integer >= {lowest} to "
                                f"time it again, got {value!r}")  # fmt: skip
    return settings


class _Student:
    """One report's student: a ``Side`` per figure, stored runs first, over one probe."""

    def __init__(self, data: dict[str, Any], where: str, probe: Probe):
        row = student_row(data) or {}
        self.where = where
        self.sides = {fig: Side(runs_of(row, field, where)) for fig, field in FIGURES.items()}
        path, why = _model_file(row, where)
        self.missing = why if path is None and row.get("format") == "onnx" else ""
        if path is not None:
            why = other_cpu(data.get("host"))  # another CPU's: would pool two machines' timings
            path = None if why else path
        if path is None:
            for side in self.sides.values():
                side.why_not = why
            return
        self.path, self.probe = path, probe
        self.settings: dict[str, int] | None = None
        for figure, side in self.sides.items():
            side.more = self._more_for(figure, row, data)

    def _more_for(self, figure: str, row: dict[str, Any], data: dict[str, Any]):
        def more() -> LatencySamples:
            if self.settings is None:  # checked on first use: a decided line needs none
                stored = self.sides["decode"].runs or self.sides["ttft"].runs
                self.settings = _settings(data, row, stored, self.where)
            got = self.probe(self.path, self.settings)
            number = len(self.sides[figure].runs) + 1
            for other, side in self.sides.items():
                if other != figure:  # the same process's other figure counts there too
                    side.runs.append(_by_gate(got[other], number))
            return _by_gate(got[figure], number)

        return more


def _by_gate(samples: LatencySamples, process: int) -> LatencySamples:
    meta = {**samples.metadata, "unit": "process", "process": process, "measured_by": "gate"}
    return replace(samples, metadata=meta)


class LMSettler:
    """Settles a causal-LM report's undecided latency lines (its budget's and its regressions
    against ``base``) with more probe processes, within ``max_seconds`` for the whole gate, as
    ``edgekd.gate._Settler`` does for classifiers; ``wanted(line_name)`` says which lines may be
    measured again (``--only``). With ``max_seconds`` 0 each line is decided once, on the stored
    runs. ``probe`` replaces the real process, for tests."""

    def __init__(self, data: dict[str, Any], where: str, base: dict[str, Any] | None = None,
                 base_where: str = "baseline", max_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 wanted: Callable[[str], bool] = lambda name: True,
                 probe: Probe | None = None):  # fmt: skip
        self.reports = {"current": (data, where), "baseline": (base or {}, base_where)}
        self.max_seconds, self.clock, self.wanted = max_seconds, clock, wanted
        self.probe = probe or probe_once
        self.students: dict[str, _Student] = {}

    def side(self, which: str, figure: str) -> Side:
        """``which`` ("current" or "baseline") student's side of ``figure`` (ttft or decode)."""
        if which not in self.students:
            self.students[which] = _Student(*self.reports[which], self.probe)
        return self.students[which].sides[figure]

    def absolute(self, decide: Callable[[list[LatencySamples]], GateLine], figure: str) -> GateLine:
        """A budget line: ``decide(runs)`` on the student's runs of ``figure``, settled."""
        return self._settle(lambda runs, _base, *_: decide(runs), self.side("current", figure),
                            Side([]))  # fmt: skip

    def regression(self, decide: Callable[..., GateLine], figure: str) -> GateLine:
        """A regression line: ``decide(current_runs, baseline_runs[, pairs])``, settled."""
        return self._settle(decide, self.side("current", figure), self.side("baseline", figure))

    def _settle(self, decide, current: Side, baseline: Side) -> GateLine:
        line = decide(current.runs, baseline.runs)
        if line.verdict != Verdict.INCONCLUSIVE or self.max_seconds <= 0:
            return line
        if not self.wanted(line.name):
            return line
        student = self.students["current"]
        if student.missing:
            raise BadInputError(
                f"{student.where}: {student.missing}; gate needs it to measure the undecided "
                f"{line.name} line again (--max-seconds 0 judges the stored runs alone)"
            )
        began = self.clock()
        line = measure_until_decided(decide, current, baseline, self.max_seconds, self.clock)
        self.max_seconds = max(0.0, self.max_seconds - (self.clock() - began))  # one budget
        return line
