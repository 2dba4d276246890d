"""Sizing a student to a target's budget: the largest candidate that fits every budget line.

Each candidate (a family at one width and depth, or a user's factory) is built, exported to ONNX
and measured where it can be measured exactly, and estimated where it cannot:

* ``params``: exact, the PyTorch parameter count (what the budget's ``params`` line checks).
* ``model_size_kb``: measured, the exported fp32 ONNX file; where the target runs int8, also the
  static int8 (QDQ) file that ``distill`` would write, quantized here with a few calibration
  samples (the scales differ from a full calibration, the file's size and graph do not).
* ``latency_ms``: *estimated* on the target device with the roofline model of
  ``edgekd.sizing.roofline``
  from the graph's per-node work and bytes (the device is not here to measure), for the fp32
  graph and for the int8 graph (every quantize/dequantize node counted); the host's own
  latency is measured too, for reference, and never compared with the budget.
* ``peak_memory_mb``: *estimated* as the runtime's own footprint (measured once per ONNX Runtime
  version in a fresh process, cached) plus ``MEMORY_FACTOR`` x (weights + peak activations). The
  factor is measured: fresh-process peak RSS of ONNX Runtime 1.32 grew by 1.95-2.0 MB per MB of
  weights (MLPs of 0.3-16.6 MB) and by 2.1 MB per MB of peak activation (a conv net with 8 MB of
  activations), on x86-64 Linux.
* ``share_of_teacher``: a student is at most ``MAX_SHARE_OF_TEACHER`` of the teacher's parameters.

Every line is checked at the precision the search is asked for (``fp32`` by default: the variant
``distill`` always produces; ``int8`` checks the int8 file's size, latency and memory). The chosen
candidate is the largest fitting one in a fixed order (parameters, then MACs): a larger budget
only adds fitting candidates, so it can never pick a smaller student.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.data import DataBundle
from edgekd.errors import BadInputError
from edgekd.targets import TargetProfile

WIDTHS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
FACTORY_DEPTHS = (0.5, 1.0, 2.0)  # depth multipliers tried for a user factory that takes depth
# A student must be at most this share of the teacher's parameters, or it compresses nothing
# worth distilling for (DistilBERT kept 60% of BERT; TinyBERT 13%).
MAX_SHARE_OF_TEACHER = 0.25
MEMORY_FACTOR = 2.0  # peak RSS MB per MB of weights + activations (measured; module docstring)
# Used only if measuring fails: ORT 1.32, Python 3.11, x86-64 Linux, tiny model, fresh process.
RUNTIME_BASELINE_FALLBACK_MB = 56.0
# Calibration samples for the sizing's int8 files: enough to set scales, and fast.
INT8_CALIBRATION_SAMPLES = 4
_LINES = ("params", "model_size_kb", "latency_ms", "peak_memory_mb", "share_of_teacher")


@dataclass(frozen=True)
class SizingLine:
    """One budget line for one candidate. ``kind``: exact, measured or estimate."""

    name: str
    value: float
    limit: float
    unit: str
    kind: str

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    def describe(self) -> str:
        est = " (estimate)" if self.kind == "estimate" else ""
        return f"{self.name} {_num(self.value)}{self.unit} > {_num(self.limit)}{self.unit}{est}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


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
    lines: tuple[SizingLine, ...] = ()

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
    def failing(self) -> tuple[SizingLine, ...]:
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

    def line(self, name: str) -> SizingLine | None:
        return next((x for x in self.lines if x.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lines"] = [line.to_dict() for line in self.lines]
        d.update(label=self.label, fits=self.fits, failing=[x.describe() for x in self.failing])
        return d


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

    @property
    def stopped_by(self) -> tuple[SizingLine, ...]:
        """The lines the next larger candidate breaks: what keeps the student from growing."""
        bigger = [c for c in self.candidates if _order(c) > _order(self.chosen) and not c.fits]
        return min(bigger, key=_order).failing if bigger else ()

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
        }


def _num(v: float) -> str:
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _order(c: Candidate) -> tuple:
    return (c.params, c.macs, c.width or 0.0, c.depth or 0.0)


# --- building candidates -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Space:
    """What to search: a family or a factory, and the (width, depth) grid."""

    name: str
    grid: tuple[tuple[float | None, float | None], ...]
    build: Any  # (width, depth) -> nn.Module


def _space(
    data: DataBundle,
    student: str | None,
    widths: Sequence[float],
    depths: Sequence[float] | None,
) -> _Space:
    from edgekd.students import build_student, families_for, family_options, get_family
    from edgekd.students.factory import is_factory_spec, load_student_factory

    shape = data.sample_shapes[data.input_names[0]]
    if is_factory_spec(student):
        factory = load_student_factory(student)
        ws = tuple(widths) if factory.takes_width else (None,)
        ds = tuple(depths or FACTORY_DEPTHS) if factory.takes_depth else (None,)
        return _Space(
            factory.spec,
            tuple((w, d) for d in ds for w in ws),
            lambda w, d: factory.build(shape, data.num_classes, w, d),
        )
    if student:
        fam = get_family(student)
        if data.input_kind not in fam.input_kinds:
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
    return _Space(
        fam.name,
        tuple((w, d) for d in (depths or fam.depths) for w in widths),
        lambda w, d: build_student(fam.name, shape, data.num_classes, w, int(d), **options),
    )


def build_candidate(candidate: Candidate, data: DataBundle) -> Any:
    """Rebuild the student a candidate describes (fresh weights)."""
    space = _space(data, candidate.family, (candidate.width or 1.0,), (candidate.depth or 1,))
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


def runtime_baseline_mb() -> float:
    """Peak RSS of a fresh process that loads ONNX Runtime and runs a one-node model: measured
    once per ONNX Runtime and Python version, then cached."""
    import platform

    import onnxruntime as ort

    from edgekd.cache import cache_dir, cache_key

    key = cache_key(ort=ort.__version__, python=platform.python_version(), os=platform.platform())
    path = cache_dir() / f"ort-baseline-{key}.json"
    if path.is_file():
        try:
            return float(json.loads(path.read_text())["peak_rss_mb"])
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache entry: measure again
    value = _measure_baseline_mb()
    from edgekd.fileio import write_text_atomic

    write_text_atomic(path, json.dumps({"peak_rss_mb": value}))
    return value


def _measure_baseline_mb() -> float:
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    from edgekd.bench.memory import peak_rss_mb

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.onnx"
        onnx.save(model, path)
        try:
            return peak_rss_mb("ort_cpu", str(path), {"x": np.zeros((1, 4), np.float32)})
        except (RuntimeError, OSError, ValueError):
            return RUNTIME_BASELINE_FALLBACK_MB


def measure_candidate(
    model: Any,
    family: str,
    width: float | None,
    depth: float | None,
    target: TargetProfile,
    data: DataBundle,
    baseline_mb: float,
    measure_host: bool = True,
    quantize: bool = True,
) -> Candidate:
    """Export ``model`` and count, measure and estimate what it costs on ``target``; with
    ``quantize`` (and a target that runs int8), its static int8 file too."""
    import onnx

    from edgekd.export import trace_bytes
    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency
    from edgekd.students import count_params

    blob = trace_bytes(model, data.example_inputs(1), target.opset)
    cost = analyze_onnx(onnx.load_from_string(blob), batch_size=target.batch_size)
    int8_kb = int8_ms = int8_mb = None
    if quantize and "int8" in target.precisions:
        q = quantize_bytes(blob, data)
        q_cost = analyze_onnx(onnx.load_from_string(q), batch_size=target.batch_size)
        int8_kb = len(q) / 1024
        int8_ms = estimate_latency(q_cost, target.device).total_ms
        int8_mb = _memory_mb(baseline_mb, q_cost)
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
        host_ms=_host_ms(blob, data.example_inputs(target.batch_size)) if measure_host else None,
    )


def _memory_mb(baseline_mb: float, cost: Any) -> float:
    return baseline_mb + MEMORY_FACTOR * (cost.weight_bytes + cost.peak_activation_bytes) / 2**20


def check_lines(
    c: Candidate,
    target: TargetProfile,
    precision: str,
    teacher_params: int | None,
    max_share: float,
) -> tuple[SizingLine, ...]:
    b = target.budget
    lines = [SizingLine("params", c.params, b.params, "", "exact")]
    if teacher_params:
        share = c.params / teacher_params
        lines.append(SizingLine("share_of_teacher", share, max_share, "x", "exact"))
    if precision == "int8":
        if c.int8_size_kb is None:  # not quantized: it already breaks an exact line
            return tuple(lines)
        size, latency = c.int8_size_kb, c.int8_latency_estimate_ms or 0.0
        memory = c.int8_peak_memory_mb_estimate or 0.0
    else:
        size, latency, memory = c.size_kb, c.latency_estimate_ms, c.peak_memory_mb_estimate
    lines[1:1] = [
        SizingLine("model_size_kb", size, b.model_size_kb, " KB", "measured"),
        SizingLine("latency_ms", latency, b.latency_ms, " ms", "estimate"),
        SizingLine("peak_memory_mb", memory, b.peak_memory_mb, " MB", "estimate"),
    ]
    return tuple(lines)


def _breaks_exact_line(
    params: int, target: TargetProfile, teacher_params: int | None, max_share: float
) -> bool:
    too_many = params > target.budget.params
    return too_many or (teacher_params is not None and params > max_share * teacher_params)


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
    if precision not in target.precisions:
        raise BadInputError(
            f"target {target.name!r} does not run {precision} (its precisions: "
            f"{', '.join(target.precisions)})"
        )
    kwargs = dict(
        precision=precision,
        widths=widths,
        depths=depths,
        max_share_of_teacher=max_share_of_teacher,
        measure_host=measure_host,
        baseline_mb=baseline_mb,
    )
    if student is not None:
        return _size_one(target, data, teacher_params, student, **kwargs)
    # No family named: the default family for the input kind first, then the others that take
    # it, so that a small teacher still gets a (smaller-family) student.
    from edgekd.students import families_for

    names = [f.name for f in families_for(data.input_kind)]
    if not names:
        raise BadInputError(f"no student family takes {data.input_kind} inputs")
    first_error: NothingFitsError | None = None
    for name in names:
        try:
            result = _size_one(target, data, teacher_params, name, **kwargs)
        except NothingFitsError as exc:
            first_error = first_error or exc
            continue
        if name != names[0]:
            note = f"the default family {names[0]!r} did not fit ({first_error}); used {name!r}"
            result = dataclasses.replace(result, notes=(*result.notes, note))
        return result
    assert first_error is not None
    raise first_error


def _size_one(
    target: TargetProfile,
    data: DataBundle,
    teacher_params: int | None,
    student: str,
    *,
    precision: str,
    widths: Sequence[float],
    depths: Sequence[float] | None,
    max_share_of_teacher: float,
    measure_host: bool,
    baseline_mb: float | None,
) -> SizingResult:
    if not 0 < max_share_of_teacher:
        raise BadInputError(f"max_share_of_teacher must be > 0, got {max_share_of_teacher}")
    space = _space(data, student, widths, depths)
    baseline = runtime_baseline_mb() if baseline_mb is None else baseline_mb
    measured: dict[tuple, Candidate] = {}
    with _one_torch_thread():
        for width, depth in space.grid:
            c = _measure_point(
                space,
                width,
                depth,
                target,
                data,
                baseline,
                teacher_params,
                max_share_of_teacher,
                precision,
                measure_host,
            )
            # Two knobs can round to the same network (tiny widths hit the channel floor).
            signature = (c.params, c.macs, round(c.size_kb, 3))
            if signature not in measured or _order(c) < _order(measured[signature]):
                measured[signature] = c
    candidates = tuple(sorted(measured.values(), key=_order))
    notes = (
        "latency_ms and peak_memory_mb are estimates for the target device, not measurements; "
        "host_ms is measured on this host (1 thread) for reference",
        "candidates that break an exact line (params, share_of_teacher) are not timed on the "
        "host nor quantized to int8 ('-' in the table): they cannot be chosen",
    )
    if teacher_params is None:
        notes += ("teacher size unknown: the share-of-teacher line was not checked",)
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        raise NothingFitsError(_nothing_fits(target, space.name, candidates))
    return SizingResult(
        target=target.name,
        device=target.device.name,
        precision=precision,
        chosen=max(fitting, key=_order),
        candidates=candidates,
        teacher_params=teacher_params,
        max_share_of_teacher=max_share_of_teacher,
        runtime_baseline_mb=baseline,
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
    space: _Space,
    width: float | None,
    depth: float | None,
    target: TargetProfile,
    data: DataBundle,
    baseline: float,
    teacher_params: int | None,
    max_share: float,
    precision: str,
    measure_host: bool,
) -> Candidate:
    from edgekd.students import count_params

    model = space.build(width, depth)
    # A candidate that breaks an exact line can never be chosen: skip its slow extras (host
    # timing, int8 quantization); its table row shows "-" there.
    hopeless = _breaks_exact_line(count_params(model), target, teacher_params, max_share)
    c = measure_candidate(
        model,
        space.name,
        width,
        depth,
        target,
        data,
        baseline,
        measure_host=measure_host and not hopeless,
        quantize=not hopeless,
    )
    lines = check_lines(c, target, precision, teacher_params, max_share)
    return dataclasses.replace(c, lines=lines)


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
            who = min((c for c in candidates if c.line(line_name) is best), key=_order)
            which = "smallest" if who is smallest else "least demanding"
            return (
                f"no student fits target {target.name!r}: every {name} candidate breaks "
                f"{line_name}; the {which} ({who.label}) needs {_needs(best)}"
            )
    return (
        f"no student fits target {target.name!r}: no {name} candidate meets every line at once; "
        f"the smallest ({smallest.label}) breaks " + "; ".join(_needs(x) for x in smallest.failing)
    )


def _needs(line: SizingLine) -> str:
    est = " (estimate)" if line.kind == "estimate" else ""
    if line.name == "share_of_teacher":
        return (
            f"{line.value * 100:.3g}% of the teacher's parameters > the {line.limit * 100:.3g}% "
            "a student may have"
        )
    unit = line.unit.strip()
    unit_txt = f" {unit}" if unit and unit != "x" else ""
    label = "" if line.name not in ("params",) else " parameters"
    return f"{_num(line.value)}{unit_txt}{label} > {_num(line.limit)}{unit_txt}{est}"


def default_teacher_params(data: DataBundle) -> int | None:
    """Parameters of the default teacher ``distill`` would train for this data (built, not
    trained); None where there is no default teacher."""
    from edgekd.students import build_student, count_params
    from edgekd.teacher.default import DEFAULT_TEACHERS

    if data.input_kind not in DEFAULT_TEACHERS or len(data.input_names) != 1:
        return None
    family, width, depth = DEFAULT_TEACHERS[data.input_kind]
    shape = data.sample_shapes[data.input_names[0]]
    return count_params(build_student(family, shape, data.num_classes, width, depth))


def size_for_target(
    target: str,
    data: str | None = None,
    student: str | None = None,
    precision: str = "fp32",
    seed: int = 0,
) -> SizingResult:
    """``edgekd size``: load the target and data, size against the default teacher's parameters.

    >>> size_for_target("iot").chosen.params <= 60_000  # doctest: +SKIP
    True
    """
    from edgekd.data import load_data
    from edgekd.targets import load_target

    bundle = load_data(data, seed=seed)
    return size_student_to_budget(
        load_target(target), bundle, default_teacher_params(bundle), student, precision=precision
    )


# --- the table -----------------------------------------------------------------------------------

TABLE_COLUMNS = (
    "candidate",
    "params",
    "MACs",
    "size KB",
    "est. ms",
    "int8 KB",
    "est. int8 ms",
    "host ms",
    "est. MB",
    "fits?",
    "breaks",
)


def sizing_rows(result: SizingResult | dict[str, Any]) -> list[list[str]]:
    """One row per candidate, smallest first; the chosen one marked ``*``. Takes the result or
    its ``to_dict()`` (as stored in report.json)."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    chosen = d["chosen"]["label"]

    def ms(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    rows = []
    for c in d["candidates"]:
        short = " ".join(
            [c["family"]]
            + ([f"w{c['width']:g}"] if c["width"] is not None else [])
            + ([f"d{c['depth']:g}"] if c["depth"] is not None else [])
        )
        rows.append(
            [
                short + (" *" if c["label"] == chosen else ""),
                f"{c['params']:,}",
                f"{c['macs']:,}",
                f"{c['size_kb']:.1f}",
                ms(c["latency_estimate_ms"], ".3f"),
                ms(c["int8_size_kb"], ".1f"),
                ms(c["int8_latency_estimate_ms"], ".3f"),
                ms(c["host_ms"], ".4f"),
                f"{c['peak_memory_mb_estimate']:.1f}",
                "yes" if c["fits"] else "no",
                "; ".join(x["name"] for x in c["lines"] if not x["passed"]),
            ]
        )
    return rows


def sizing_markdown(result: SizingResult | dict[str, Any]) -> str:
    """The search as a Markdown table, with what "est." means under it."""
    d = result.to_dict() if isinstance(result, SizingResult) else result
    lines = [
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in sizing_rows(d)]
    stop = "; ".join(d.get("stopped_by", [])) or "-"
    lines += [
        "",
        f"`*` chosen: {d['chosen']['label']} (checked at {d['precision']}); the next size up "
        f"breaks: {stop}. est. = estimated for {d['device']} (roofline model, not a "
        "measurement); host ms = measured on this host, 1 thread.",
    ]
    return "\n".join(lines)
