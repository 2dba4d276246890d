"""`edgekd targets`: list the shipped target profiles."""

from __future__ import annotations

import json

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Json


@verb
def targets(
    as_json: Json = False,
) -> None:
    """List the shipped target profiles and their budgets."""
    from edgekd.targets import list_targets

    profiles = list_targets()
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgekd targets", box=box.SIMPLE_HEAD)
    for col in (
        "name",
        "aliases",
        "threads",
        "precisions",
        "latency ms",
        "memory MB",
        "size KB",
        "params",
        "acc drop",
    ):
        table.add_column(col)
    for p in profiles:
        b = p.budget
        table.add_row(
            p.name,
            ", ".join(p.aliases),
            str(p.threads),
            ", ".join(p.precisions),
            f"{b.latency_ms:g}",
            f"{b.peak_memory_mb:g}",
            f"{b.model_size_kb:g}",
            f"{b.params:,}",
            f"{b.accuracy_drop:g}",
        )
    console = Console()
    console.print(table)
    for p in profiles:
        console.print(f"  {p.name}: {p.description}", highlight=False)
