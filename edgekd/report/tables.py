"""The terminal view of a bench report: one row per model with its latency statistics."""

from __future__ import annotations

from edgekd.report.markdown import short_provider
from edgekd.results import Report


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def bench_rows(report: Report) -> list[list[str]]:
    rows = []
    for m in report.models:
        lat = m.latency_ms
        big = m.throughput[1] if len(m.throughput) > 1 else None
        rows.append(
            [
                m.name,
                f"{short_provider(m.provider)} ({m.device.upper()})",
                _f(lat.get("p50"), ".4f"),
                f"{_f(lat.get('ci_low'), '.4f')}-{_f(lat.get('ci_high'), '.4f')}",
                _f(lat.get("p95"), ".4f"),
                _f(lat.get("p99"), ".4f"),
                f"{lat.get('n', '-')}/{lat.get('processes', 1)}",
                _f(lat.get("process_spread"), ".0%"),
                _f(lat.get("descheduled_fraction"), ".0%"),
                "-" if big is None else f"{big['items_per_s']:,.0f}@{big['batch_size']}",
                _f(m.peak_rss_mb, ".0f")
                + ("" if m.gpu_memory_mb is None else f" +{m.gpu_memory_mb:.0f}G"),
                _f(m.accuracy, ".3f"),
                _f(m.agreement_with_teacher, ".3f"),
            ]
        )
    return rows


COLUMNS = (
    "model",
    "provider",
    "p50 ms",
    "95% CI p50",
    "p95 ms",
    "p99 ms",
    "n/proc",
    "drift",
    "busy",
    "items/s",
    "peak MB",
    "acc",
    "agree",
)


def print_bench(report: Report) -> None:
    """Rich table of the models, then every warning (unavailable runtimes first).

    p50 and the other statistics come from the clean samples (``latency_ms["basis"]``).
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140 if not Console().is_terminal else None)
    t = report.target.get("name")
    table = Table(
        title=f"edgekd bench: target {t}, batch {report.target.get('batch_size')}, "
        f"{report.host.get('threads', {}).get('threads_used', '?')} threads",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    for col in COLUMNS:
        left = col in ("model", "provider")
        table.add_column(col, justify="left" if left else "right", overflow="fold")
    for row in bench_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(
        "drift: how far the per-process medians differ (max/min - 1); busy: samples during which "
        "the thread waited for its CPU (set aside by the gate); n/proc: samples / processes",
        highlight=False,
    )
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
