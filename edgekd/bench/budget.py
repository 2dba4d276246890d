"""Budget lines: each line of a target's budget checked against one measured model."""

from __future__ import annotations

from edgekd.report import BudgetLine, ModelResult
from edgekd.targets import TargetProfile


def budget_lines(
    target: TargetProfile, model: ModelResult, teacher: ModelResult | None = None
) -> list[BudgetLine]:
    b = target.budget
    p95 = model.latency_ms.get("p95")
    lines = [
        BudgetLine(
            "latency_ms",
            b.latency_ms,
            p95,
            p95 is not None and p95 <= b.latency_ms,
            "ms",
            model.name,
            f"p95 at batch {model.batch_size} on the host, {model.provider}",
        ),
        BudgetLine(
            "peak_memory_mb",
            b.peak_memory_mb,
            model.peak_rss_mb,
            model.peak_rss_mb is not None and model.peak_rss_mb <= b.peak_memory_mb,
            "MB",
            model.name,
            "peak RSS of a fresh process that loads and runs the model",
        ),
        BudgetLine(
            "model_size_kb",
            b.model_size_kb,
            model.size_bytes / 1024,
            model.size_bytes / 1024 <= b.model_size_kb,
            "KB",
            model.name,
        ),
        BudgetLine("params", b.params, model.params, model.params <= b.params, "", model.name),
    ]
    if teacher is not None and teacher.accuracy is not None and model.accuracy is not None:
        drop = teacher.accuracy - model.accuracy
        lines.append(
            BudgetLine(
                "accuracy_drop",
                b.accuracy_drop,
                drop,
                drop <= b.accuracy_drop,
                "",
                model.name,
                f"teacher {teacher.accuracy:.4f} - model {model.accuracy:.4f} on the test split",
            )
        )
    if b.latency_vs_teacher > 0 and teacher is not None:
        ratio = model.latency_ms["p50"] / teacher.latency_ms["p50"]
        lines.append(
            BudgetLine(
                "latency_vs_teacher",
                b.latency_vs_teacher,
                ratio,
                ratio <= b.latency_vs_teacher,
                "x",
                model.name,
                f"p50 ratio to {teacher.name}, measured in the same run",
            )
        )
    return lines
