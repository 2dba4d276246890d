"""One sized candidate: what a student of one size costs on a target, and its budget lines.

``SizingRequest`` is what the search is asked (target, data, teacher size, precision, ...);
``build_candidate`` rebuilds the student a candidate describes;
``measure_candidate`` exports a student and counts, measures and estimates its cost
(``edgekd.sizing`` says which figure is which); ``check_lines`` holds the costs against the
target's budget as ``edgekd.results.Line``s.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.data import DataBundle
from edgekd.errors import BadInputError
from edgekd.results import Line
from edgekd.sizing.space import WIDTHS, search_space
from edgekd.targets import TargetProfile

# A student must be at most this share of the teacher's parameters, or it compresses nothing
# worth distilling for (DistilBERT kept 60% of BERT; TinyBERT 13%).
MAX_SHARE_OF_TEACHER = 0.25
MEMORY_FACTOR = 2.0  # peak RSS MB per MB of weights + activations (measured; edgekd.sizing)
# Calibration samples for the sizing's int8 files: enough to set scales, and fast.
INT8_CALIBRATION_SAMPLES = 4


@dataclass(frozen=True)
class SizingRequest:
    """What a sizing search is asked, passed whole down the search.

    ``teacher_params`` None: unknown (the share-of-teacher line is not checked).
    ``baseline_mb`` None: measure the runtime's own footprint (``runtime_baseline_mb``).
    ``depths`` None: the family's own depths.
    """

    target: TargetProfile
    data: DataBundle
    teacher_params: int | None = None
    precision: str = "fp32"
    widths: Sequence[float] = WIDTHS
    depths: Sequence[float] | None = None
    max_share: float = MAX_SHARE_OF_TEACHER
    measure_host: bool = True
    baseline_mb: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in self.target.precisions:
            raise BadInputError(
                f"target {self.target.name!r} does not run {self.precision} (its precisions: "
                f"{', '.join(self.target.precisions)})"
            )
        if not 0 < self.max_share:
            raise BadInputError(f"max_share_of_teacher must be > 0, got {self.max_share}")

    def breaks_exact_line(self, params: int) -> bool:
        """Whether ``params`` alone rules a candidate out (params or share of teacher)."""
        too_many = params > self.target.budget.params
        teacher = self.teacher_params
        return too_many or (teacher is not None and params > self.max_share * teacher)


@dataclass(frozen=True)
class Candidate:
    """One student size and what it costs. ``*_estimate`` fields are modelled, not measured."""

    family: str  # a registered family, or the user's ``pkg.module:factory``
    width: float | None
    depth: float | None
    params: int
    macs: int
    size_kb: float  # measured: the fp32 ONNX file
    int8_size_kb: float | None  # measured: the static int8 file; None where no int8
    peak_activation_kb: float
    peak_memory_mb_estimate: float
    latency_estimate_ms: float  # fp32 on the target device
    int8_latency_estimate_ms: float | None  # None where the target has no int8
    int8_peak_memory_mb_estimate: float | None
    host_ms: float | None  # measured p50 on this host (1 thread); None when not measured
    lines: tuple[Line, ...] = ()
    view: tuple[int, ...] | None = None  # the shape the family sees, if not the data's

    @property
    def label(self) -> str:
        parts = [self.family]
        if self.width is not None:
            parts.append(f"width {self.width:g}")
        if self.depth is not None:
            parts.append(f"depth {self.depth:g}")
        return " ".join(parts)

    @property
    def fits(self) -> bool:
        return all(line.passed for line in self.lines)

    @property
    def failing(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if not line.passed)

    @property
    def short_label(self) -> str:
        """``cnn w0.5 d2``: the label for a table column."""
        parts = [self.family]
        if self.width is not None:
            parts.append(f"w{self.width:g}")
        if self.depth is not None:
            parts.append(f"d{self.depth:g}")
        return " ".join(parts)

    @property
    def order(self) -> tuple:
        """Smaller first: parameters, then MACs (then the knobs, to break ties)."""
        return (self.params, self.macs, self.width or 0.0, self.depth or 0.0)

    def line(self, name: str) -> Line | None:
        return next((x for x in self.lines if x.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lines"] = [line.to_dict() for line in self.lines]
        d.update(label=self.label, fits=self.fits, failing=[x.describe() for x in self.failing])
        return d


def build_candidate(candidate: Candidate, data: DataBundle) -> Any:
    """Rebuild the student a candidate describes (fresh weights)."""
    space = search_space(
        data, candidate.family, (candidate.width or 1.0,), (candidate.depth or 1,), candidate.view
    )
    return space.build(candidate.width, candidate.depth)


def quantize_bytes(onnx_bytes: bytes, data: DataBundle) -> bytes:
    """The static int8 (QDQ) file ``distill`` writes for this fp32 file (edgekd.quantize with its
    default ``Int8StaticConfig``), calibrated on the first ``INT8_CALIBRATION_SAMPLES`` training
    samples."""
    import tempfile
    from pathlib import Path

    from edgekd.quantize import Int8StaticConfig, quantize

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        config = Int8StaticConfig(num_samples=INT8_CALIBRATION_SAMPLES)
        quantize(src, config, dst, data.train.inputs)
        return dst.read_bytes()


def _host_ms(onnx_bytes: bytes, feed: dict[str, np.ndarray]) -> float:
    from edgekd.bench.harness import measure_latency
    from edgekd.runtimes.ort_cpu import open_session

    sess = open_session(onnx_bytes, threads=1)  # one thread: steadier on a shared host
    samples = measure_latency(
        lambda: sess.run(None, feed), warmup=5, min_samples=10, min_time_s=0.02, max_time_s=0.3
    )
    return samples.summary().p50


def measure_candidate(
    model: Any,
    family: str,
    width: float | None,
    depth: float | None,
    request: SizingRequest,
    *,
    extras: bool = True,
) -> Candidate:
    """Export ``model`` and count, measure and estimate what it costs on the request's target.
    ``extras``: also time it on this host (where the request asks) and, where the target runs
    int8, quantize it to the static int8 file and estimate that too. ``request.baseline_mb`` must
    be known."""
    import onnx

    from edgekd.export import trace_bytes
    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency
    from edgekd.students import count_params

    target, data, baseline_mb = request.target, request.data, request.baseline_mb
    assert baseline_mb is not None, "resolve the runtime baseline before measuring"
    blob = trace_bytes(model, data.example_inputs(1), target.opset)
    cost = analyze_onnx(onnx.load_from_string(blob), batch_size=target.batch_size)
    int8_kb = int8_ms = int8_mb = None
    if extras and "int8" in target.precisions:
        q = quantize_bytes(blob, data)
        q_cost = analyze_onnx(onnx.load_from_string(q), batch_size=target.batch_size)
        int8_kb = len(q) / 1024
        int8_ms = estimate_latency(q_cost, target.device).total_ms
        int8_mb = _memory_mb(baseline_mb, q_cost)
    timed = extras and request.measure_host
    return Candidate(
        family=family,
        width=width,
        depth=depth,
        params=count_params(model),
        macs=cost.macs,
        size_kb=len(blob) / 1024,
        int8_size_kb=int8_kb,
        peak_activation_kb=cost.peak_activation_bytes / 1024,
        peak_memory_mb_estimate=_memory_mb(baseline_mb, cost),
        latency_estimate_ms=estimate_latency(cost, target.device).total_ms,
        int8_latency_estimate_ms=int8_ms,
        int8_peak_memory_mb_estimate=int8_mb,
        host_ms=_host_ms(blob, data.example_inputs(target.batch_size)) if timed else None,
    )


def _memory_mb(baseline_mb: float, cost: Any) -> float:
    return baseline_mb + MEMORY_FACTOR * (cost.weight_bytes + cost.peak_activation_bytes) / 2**20


def check_lines(
    c: Candidate,
    target: TargetProfile,
    precision: str,
    teacher_params: int | None,
    max_share: float,
) -> tuple[Line, ...]:
    """The candidate's budget lines at ``precision``, each labelled exact, measured or
    estimate."""
    b = target.budget
    lines = [Line("params", c.params, b.params, "", "exact")]
    if teacher_params:
        share = c.params / teacher_params
        lines.append(Line("share_of_teacher", share, max_share, "x", "exact"))
    if precision == "int8":
        if c.int8_size_kb is None:  # not quantized: it already breaks an exact line
            return tuple(lines)
        size, latency = c.int8_size_kb, c.int8_latency_estimate_ms or 0.0
        memory = c.int8_peak_memory_mb_estimate or 0.0
    else:
        size, latency, memory = c.size_kb, c.latency_estimate_ms, c.peak_memory_mb_estimate
    lines[1:1] = [
        Line("model_size_kb", size, b.model_size_kb, " KB", "measured"),
        Line("latency_ms", latency, b.latency_ms, " ms", "estimate"),
        Line("peak_memory_mb", memory, b.peak_memory_mb, " MB", "estimate"),
    ]
    return tuple(lines)
