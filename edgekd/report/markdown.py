"""The run report as Markdown (report.md) and as a rich summary in the terminal."""

from __future__ import annotations

from typing import Any

from edgekd.results import Report


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


def _input_lines(data: dict) -> list[str]:
    """What was done to the inputs: ``--image-size``, and ``--normalize`` (run by the model)."""
    lines = []
    if data.get("image_transform"):
        lines += [f"**Images:** {data['image_transform']}", ""]
    norm = data.get("normalization")
    if norm:
        def nums(v):
            return ", ".join(f"{x:.4g}" for x in v)

        lines += [
            f"**Normalisation ({norm.get('how')}):** (x - [{nums(norm['mean'])}]) / "
            f"[{nums(norm['std'])}] per channel, run by the student as its first ops (the ONNX "
            "model takes raw inputs)",
            "",
        ]
    return lines


def to_markdown(report: Report) -> str:
    t = report.target
    lines = [f"# edgekd report: target `{t.get('name')}`", "", f"{t.get('description', '')}", ""]
    b = t.get("budget", {})
    if b:
        lines += ["**Budget:** " + ", ".join(f"{k} = {v}" for k, v in b.items()), ""]
    if report.data:
        lines += [f"**Data:** {report.data.get('name')} ({report.data.get('split_note', '')})", ""]
        lines += _input_lines(report.data)
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
        from edgekd.report.sizing_table import sizing_markdown

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
