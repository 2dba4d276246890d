"""`edgekd students`: list the registered student families."""

from __future__ import annotations

import json

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Json


@verb
def students(
    as_json: Json = False,
) -> None:
    """List the student families, the inputs each takes, and the depths the size search tries."""
    from edgekd.students import all_families

    families = all_families()
    rows = [
        {
            "name": f.name,
            "input_kinds": list(f.input_kinds),
            "depths": list(f.depths),
            "description": f.description,
        }
        for f in families
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgekd student families", box=box.SIMPLE_HEAD)
    for col in ("name", "inputs", "depths", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            ", ".join(r["input_kinds"]),
            ", ".join(map(str, r["depths"])),
            r["description"],
        )
    Console().print(table)
    typer.echo("Bring your own with --student pkg.module:factory (width/depth keyword arguments).")
