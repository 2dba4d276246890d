"""`edgekd size`: search student sizes for a target and print the table, without training."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Data, Json, Seed, Student, Target


@verb
def size(
    target: Target = "mobile",
    data: Data = None,
    student: Student = None,
    precision: Annotated[
        str, typer.Option(help="Check the budget at this precision: fp32 or int8.")
    ] = "fp32",
    seed: Seed = 0,
    trial: Annotated[
        bool,
        typer.Option(
            help="Train the default teacher (or reuse it from the cache) and run the short trial "
            "between the plausible student families and augmentation levels, as distill does."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Size a student for TARGET: every candidate's params, MACs, file size, estimated device
    latency and memory, measured host latency, and which budget lines it breaks; which families
    the teacher and the data make plausible, and (--trial) the trial between them."""
    from edgekd.sizing import size_for_target

    result = size_for_target(target, data, student, precision, seed, trial)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from edgekd.report.sizing_table import TABLE_COLUMNS, sizing_rows

    table = Table(
        title=f"student sizes for {result.target}, checked at {result.precision} "
        f"(est. = estimated on {result.device}; host = measured here, 1 thread)",
        box=box.SIMPLE_HEAD,
    )
    for col in TABLE_COLUMNS:
        left = col in ("candidate", "breaks")
        table.add_column(col, justify="left" if left else "right", no_wrap=not left)
    for row in sizing_rows(result):
        table.add_row(*row)
    console = Console(width=None if Console().is_terminal else 150)
    console.print(table)
    c = result.chosen
    stop = "; ".join(x.describe() for x in result.stopped_by) or "no larger candidate tried"
    console.print(
        f"chosen: {c.label}, {c.params:,} parameters, est. {c.latency_estimate_ms:.3f} ms on "
        f"{result.device} (estimate); the next size up breaks: {stop}",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False)
    _print_choice(console, result)


def _print_choice(console, result) -> None:
    """The evidence for the family and the trial's table (``edgekd.sizing.trial``)."""
    from rich import box
    from rich.table import Table

    from edgekd.report.sizing_table import TRIAL_COLUMNS, choice_lines, trial_rows

    for line in choice_lines(result):
        console.print(line, highlight=False)
    rows = trial_rows(result)
    if rows:
        table = Table(title="trial (validation agreement with the teacher)", box=box.SIMPLE_HEAD)
        for col in TRIAL_COLUMNS:
            table.add_column(col, justify="left" if col in ("stage", "candidate") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
