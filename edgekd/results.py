"""The run report as dataclasses <-> report.json: the schema, nothing about how it is shown.

report.json field names are a contract (other tools and ``edgekd gate`` read them); new fields
may be added, existing ones are not renamed. ``schema_version`` changes when one must be.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import BadInputError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelResult:
    name: str
    path: str
    format: str  # "torch" | "onnx"
    precision: str  # "fp32" | "int8" | "fp16"
    provider: str  # what actually ran, e.g. "CPUExecutionProvider", "torch-cpu"
    params: int
    size_bytes: int
    latency_ms: dict[str, Any]  # p50, p90, p95, p99, mean, std, min, n, ci_low, ci_high, ...
    peak_rss_mb: float | None
    accuracy: float | None
    agreement_with_teacher: float | None
    role: str = "student"  # "teacher" | "student"
    runtime: str = ""
    top5_accuracy: float | None = None
    kl_to_teacher: float | None = None
    latency_samples_ms: list[float] = field(default_factory=list)  # raw samples, for the gate
    loops: int = 1
    device: str = "cpu"  # where `provider` ran: "cpu" | "gpu" (never "gpu" for a CPU fallback)
    gpu_memory_mb: float | None = None
    latency_processes: list[dict[str, Any]] = field(default_factory=list)  # raw samples per process
    throughput: list[dict[str, Any]] = field(default_factory=list)  # target batch, larger batch
    threads: int = 1
    batch_size: int = 1
    notes: list[str] = field(default_factory=list)
    # Embedding tasks: mean cosine similarity to the teacher's vectors on the test split
    # (agreement_with_teacher then holds nearest-neighbour agreement).
    cosine_to_teacher: float | None = None
    # Roofline estimate on the target device (edgekd.sizing.roofline): a model, never a measurement.
    latency_estimate_ms: float | None = None
    # SHA-256 of the model file measured: the gate re-measures a stored model only while it holds.
    sha256: str | None = None


def short_number(v: float) -> str:
    """A line's figure as its messages write it: ``60,000``, ``0.42``, ``1,234``."""
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


@dataclass(frozen=True)
class Line:
    """One budget line: a figure, its limit and unit, and ``kind``, how the figure was obtained
    or checked (sizing: exact, measured or estimate; the gate: absolute, relative, estimate or
    regression). Sizing uses it as it is; the gate's ``GateLine`` adds its verdict and reason."""

    name: str
    value: float | None  # None: the figure is missing (the gate then cannot decide)
    limit: float
    unit: str = ""
    kind: str = ""

    @property
    def passed(self) -> bool | None:
        """Within the limit; None where there is no figure."""
        return None if self.value is None else self.value <= self.limit

    def describe(self) -> str:
        """The broken line in words: ``model_size_kb 130 KB > 100 KB (estimate)``."""
        est = " (estimate)" if self.kind == "estimate" else ""
        value = "-" if self.value is None else short_number(self.value)
        return f"{self.name} {value}{self.unit} > {short_number(self.limit)}{self.unit}{est}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class BudgetLine:
    """A decided line as report.json's ``budget`` list keeps it (``passed`` None: inconclusive).

    Its fields, their order and its missing ``kind`` are the schema (``Report.to_dict`` writes
    them with ``asdict``), so it is not a ``Line`` subclass; ``GateLine.to_budget_line`` makes it.
    """

    name: str
    limit: float
    value: float | None
    passed: bool | None  # None = could not be decided (INCONCLUSIVE)
    unit: str = ""
    model: str = ""
    detail: str = ""


@dataclass
class Report:
    target: dict[str, Any]
    host: dict[str, Any]
    models: list[ModelResult]
    budget: list[BudgetLine] = field(default_factory=list)
    chosen: str | None = None
    schema_version: int = SCHEMA_VERSION
    data: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)  # settings, runtimes, unavailable ones
    gate: dict[str, Any] = field(default_factory=dict)  # the gate's verdict on this report
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    out_dir: str = ""
    charts: list[str] = field(default_factory=list)  # PNG file names beside report.md

    def model(self, name: str) -> ModelResult:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def passed(self) -> bool:
        return all(line.passed for line in self.budget)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "report") -> Report:
        try:
            d = dict(d)
            models = [ModelResult(**m) for m in d.pop("models")]
            budget = [BudgetLine(**b) for b in d.pop("budget", [])]
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(models=models, budget=budget, **{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise BadInputError(f"{where}: not an edgekd report ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Report:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: report not found")
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}: not valid JSON ({exc})") from None
