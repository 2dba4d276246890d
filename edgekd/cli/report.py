"""`edgekd report` and `edgekd compare`: re-render stored runs, nothing recomputed."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli._app import verb


@verb
def report(
    run_dir: Annotated[str, typer.Argument(help="A run folder (or its report.json).")],
    fmt: Annotated[str, typer.Option("--format", help="md, json or html.")] = "md",
    out: Annotated[str | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Re-render a finished run's report without recomputing anything."""
    from edgekd.fileio import write_text_atomic
    from edgekd.report.rerender import render_run

    text = render_run(run_dir, fmt)
    if out:
        write_text_atomic(out, text)
    else:
        typer.echo(text)


@verb
def compare(
    run_a: Annotated[str, typer.Argument(help="First run folder (A, the baseline).")],
    run_b: Annotated[str, typer.Argument(help="Second run folder (B).")],
    markdown: Annotated[bool, typer.Option(help="Print Markdown instead of a table.")] = False,
) -> None:
    """Show two runs side by side: latency, size and accuracy per model, with B/A."""
    from edgekd.report.rerender import COMPARE_COLUMNS, compare_markdown, compare_rows, load_run

    a, b = load_run(run_a), load_run(run_b)
    if markdown:
        typer.echo(compare_markdown(a, b, run_a, run_b))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"A = {run_a}   B = {run_b}", box=box.SIMPLE_HEAD)
    for col in COMPARE_COLUMNS:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for row in compare_rows(a, b):
        table.add_row(*row)
    Console(width=100 if not Console().is_terminal else None).print(table)
