"""Re-render a finished run (Markdown, JSON, HTML) and compare two runs, without recomputing."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgekd.errors import BadInputError
from edgekd.gate.inputs import lm_report
from edgekd.report.lm import lm_markdown
from edgekd.report.markdown import MODEL_COLUMNS, budget_rows, model_rows, to_markdown
from edgekd.results import Report

FORMATS = ("md", "json", "html")


def _report_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    path = run_dir / "report.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise BadInputError(f"{run_dir}: no report.json there (is it an edgekd run folder?)")
    return path


def load_run(run_dir: str | Path) -> Report:
    """A classifier run's report; a causal-LM run's is refused in one line (``edgekd compare``
    reads classifier runs; ``edgekd report`` and ``edgekd gate`` read both)."""
    path = _report_path(run_dir)
    if lm_report(path) is not None:
        raise BadInputError(f"{path}: a causal-LM report; edgekd compare reads classifier runs "
                            "(compare two LM runs with edgekd gate REPORT --baseline BASE)")
    return Report.load(path)


def render_run(run_dir: str | Path, fmt: str = "md") -> str:
    """The stored report of ``run_dir`` as Markdown, JSON or a self-contained HTML page; a
    causal-LM run's as the Markdown its run wrote (``md``; ``html`` wraps that text), or JSON."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    lm = lm_report(_report_path(run_dir))
    if lm is not None:
        return render_lm(lm, fmt)
    report = load_run(run_dir)
    if fmt == "json":
        return report.to_json()
    if fmt == "md":
        return to_markdown(report)
    return to_html(report)


def render_lm(report: dict, fmt: str) -> str:
    """A causal-LM report (its JSON) as the report.md its run wrote, as JSON, or as an HTML page
    holding that Markdown text (LM runs draw no charts)."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    if report.get("strategy") == "blackbox":
        from edgekd.lm.blackbox.pipeline import blackbox_markdown

        text = blackbox_markdown(report)
    else:
        text = lm_markdown(report)
    if fmt == "md":
        return text
    title = html.escape(f"edgekd causal-LM report: {report.get('target')}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><pre>{html.escape(text)}</pre></body></html>")  # fmt: skip


def _table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report) -> str:
    t = report.target
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgekd report: {html.escape(str(t.get('name')))}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "text-align:right}td:first-child{text-align:left}</style></head><body>",
        f"<h1>edgekd report: target <code>{html.escape(str(t.get('name')))}</code></h1>",
        f"<p>{html.escape(str(t.get('description', '')))}</p>",
        "<h2>Models</h2>",
        _table(MODEL_COLUMNS, model_rows(report)),
    ]
    if report.budget:
        verdict = "PASS" if report.passed else "FAIL"
        parts += [
            "<h2>Budget verdict</h2>",
            _table(["line", "model", "measured", "limit", "verdict"], budget_rows(report)),
            f"<p><b>Overall: {verdict}</b></p>",
        ]
    for chart in report.charts:
        parts.append(f"<p><img src='{html.escape(chart)}' alt='{html.escape(chart)}'></p>")
    if report.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
        parts.append(f"<h2>Warnings</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def compare_rows(a: Report, b: Report) -> list[list[str]]:
    """One row per model present in either run: p50, size and accuracy in A and in B."""
    names = list(dict.fromkeys([m.name for m in a.models] + [m.name for m in b.models]))
    by_a, by_b = {m.name: m for m in a.models}, {m.name: m for m in b.models}

    def cell(m, key: str) -> str:
        if m is None:
            return "-"
        if key == "p50":
            return f"{m.latency_ms['p50']:.4f}"
        if key == "size":
            return f"{m.size_bytes / 1024:.1f}"
        return "-" if m.accuracy is None else f"{m.accuracy:.4f}"

    rows = []
    for name in names:
        ma, mb = by_a.get(name), by_b.get(name)
        ratio = "-"
        if ma is not None and mb is not None:
            ratio = f"{mb.latency_ms['p50'] / ma.latency_ms['p50']:.2f}x"
        rows.append(
            [
                name,
                cell(ma, "p50"),
                cell(mb, "p50"),
                ratio,
                cell(ma, "size"),
                cell(mb, "size"),
                cell(ma, "acc"),
                cell(mb, "acc"),
            ]
        )
    return rows


COMPARE_COLUMNS = ("model", "p50 ms A", "p50 ms B", "B/A", "KB A", "KB B", "acc A", "acc B")


def compare_markdown(a: Report, b: Report, name_a: str = "A", name_b: str = "B") -> str:
    lines = [
        f"# edgekd compare: A = {name_a}, B = {name_b}",
        "",
        "| " + " | ".join(COMPARE_COLUMNS) + " |",
        "|" + "---|" * len(COMPARE_COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in compare_rows(a, b)]
    lines += [
        "",
        "Latency ratios are of single runs; use `edgekd gate --baseline` for a "
        "significance-tested verdict.",
        "",
    ]
    return "\n".join(lines)
