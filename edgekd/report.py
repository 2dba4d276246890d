"""The run report: dataclasses <-> report.json, Markdown, and a rich table for the terminal.

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
    # Roofline estimate on the target device (edgekd.estimate): a model, never a measurement.
    latency_estimate_ms: float | None = None


@dataclass(frozen=True)
class BudgetLine:
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


# --- rendering -----------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


MODEL_COLUMNS = (
    "model",
    "provider",
    "params",
    "size KB",
    "p50 ms",
    "p95 ms",
    "peak MB",
    "acc",
    "agree",
)


def short_provider(provider: str) -> str:
    """``CPUExecutionProvider`` -> ``ort:CPU``; torch providers stay as they are."""
    if provider.endswith("ExecutionProvider"):
        return "ort:" + provider.removesuffix("ExecutionProvider")
    return provider


def model_rows(report: Report) -> list[list[str]]:
    rows = []
    for m in report.models:
        mark = " *" if m.name == report.chosen else ""
        rows.append(
            [
                m.name + mark,
                short_provider(m.provider),
                f"{m.params:,}",
                _kb(m.size_bytes),
                _fmt(m.latency_ms.get("p50"), ".4f"),
                _fmt(m.latency_ms.get("p95"), ".4f"),
                _fmt(m.peak_rss_mb, ".0f"),
                _fmt(m.accuracy),
                _fmt(m.agreement_with_teacher),
            ]
        )
    return rows


def _value(v: float | None) -> str:
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.4g}"


def budget_rows(report: Report) -> list[list[str]]:
    verdict = {True: "PASS", False: "FAIL", None: "INCONCLUSIVE"}
    return [
        [
            b.name,
            b.model,
            _value(b.value) + f" {b.unit}".rstrip(),
            _value(b.limit) + f" {b.unit}".rstrip(),
            verdict[b.passed],
        ]
        for b in report.budget
    ]


def to_markdown(report: Report) -> str:
    t = report.target
    lines = [f"# edgekd report: target `{t.get('name')}`", "", f"{t.get('description', '')}", ""]
    b = t.get("budget", {})
    if b:
        lines += ["**Budget:** " + ", ".join(f"{k} = {v}" for k, v in b.items()), ""]
    if report.data:
        lines += [f"**Data:** {report.data.get('name')} ({report.data.get('split_note', '')})", ""]
    if report.teacher:
        lines += [
            f"**Teacher:** {report.teacher.get('source')} - {report.teacher.get('params'):,}"
            " parameters",
            "",
        ]
    lines += _training_lines(report.training)
    lines += [
        "## Models",
        "",
        "| " + " | ".join(MODEL_COLUMNS) + " |",
        "|" + "---|" * len(MODEL_COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in model_rows(report)]
    lines += ["", "`*` marks the chosen student variant."]
    if report.student.get("chosen_variant_reason"):
        lines += [
            "",
            f"**Chosen:** `{report.chosen}` (variant `{report.student.get('chosen_variant')}`)"
            f": {report.student['chosen_variant_reason']}",
        ]
    lines += [""]
    if report.budget:
        lines += [
            "## Budget verdict",
            "",
            "| line | model | measured | limit | verdict |",
            "|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in budget_rows(report)]
        overall = report.gate.get("verdict") or ("PASS" if report.passed else "FAIL")
        lines += ["", f"**Overall: {overall}**", ""]
    if report.student.get("sizing"):
        from edgekd.sizing import sizing_markdown

        lines += ["## Student sizing", "", sizing_markdown(report.student["sizing"]), ""]
    if report.charts:
        lines += ["## Charts", ""] + [f"![{c.removesuffix('.png')}]({c})" for c in report.charts]
        lines += [""]
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
    h = report.host
    lines += [
        "## Host",
        "",
        f"{h.get('cpu_model')} ({h.get('cores')} cores, int8: "
        f"{h.get('int8_support')}), {h.get('os')}, Python {h.get('python')}, torch "
        f"{h.get('torch')}, onnxruntime {h.get('onnxruntime')}",
        "",
    ]
    return "\n".join(lines)


MAX_TERMINAL_WARNINGS = 4


def print_summary(report: Report) -> None:
    """A rich table that fits 100 columns; plain text (no colour codes) when piped."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=100 if not Console().is_terminal else None)
    table = Table(
        title=f"edgekd: target {report.target.get('name')}", box=box.SIMPLE_HEAD, padding=(0, 1)
    )
    for col in MODEL_COLUMNS:
        table.add_column(
            col,
            justify="left" if col in ("model", "provider") else "right",
            no_wrap=True,
            min_width=len(col),
        )
    for row in model_rows(report):
        table.add_row(*row)
    console.print(table)
    if report.budget:
        bt = Table(title=f"budget verdict for {report.chosen}", box=box.SIMPLE_HEAD)
        for col in ("line", "model", "measured", "limit", "verdict"):
            bt.add_column(col)
        for row in budget_rows(report):
            style = {"PASS": "green", "FAIL": "red"}.get(row[-1], "yellow")
            bt.add_row(*row[:-1], f"[{style}]{row[-1]}[/{style}]")
        console.print(bt)
    if report.student.get("chosen_variant_reason"):
        console.print(
            f"chosen: {report.chosen} ({report.student.get('chosen_variant')}): "
            f"{report.student['chosen_variant_reason']}",
            highlight=False,
        )
    shown = [w for w in report.warnings if not w.startswith("chosen:")]
    for w in shown[:MAX_TERMINAL_WARNINGS]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    if len(shown) > MAX_TERMINAL_WARNINGS:
        console.print(f"(+{len(shown) - MAX_TERMINAL_WARNINGS} more warnings in report.md)")


def _training_lines(training: dict[str, Any]) -> list[str]:
    """How the student was taught (augmentation, schedule) and, with --seeds, the spread."""
    if not training.get("method"):
        return []
    info = training.get("strategy_info") or {}
    run = training.get("epochs_run", training.get("epochs"))
    text = (
        f"**Training:** {training['method']} (T = {training.get('temperature')}, alpha = "
        f"{training.get('alpha')}), {run} of {training.get('epochs')} epochs"
    )
    if info.get("augment_level"):
        text += f"; augmentation {info.get('augment', info['augment_level'])}"
    if info.get("teacher_signal"):
        text += f"; teacher: {info['teacher_signal']}"
    lines = [text, ""]
    seeds = training.get("seeds")
    if seeds:
        values = ", ".join(f"{v:.4f}" for v in seeds["values"])
        lines += [
            f"**Seeds:** {seeds['metric']} {seeds['mean']:.4f} +- {seeds['std']:.4f} over seeds "
            f"{seeds['seeds']} ({values}); artifacts of {seeds['artifacts']}",
            "",
        ]
    return lines
