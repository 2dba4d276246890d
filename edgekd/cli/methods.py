"""`edgekd methods`: list the distillation methods and strategies, each with its paper."""

from __future__ import annotations

import json

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import Json


def _method_rows() -> list[dict]:
    from edgekd.distill.methods import all_methods

    rows = []
    for name, cls in sorted(all_methods().items()):
        rows.append(
            {
                "name": name,
                "description": cls.description,
                "paper": cls.paper,
                "default_alpha": cls.default_alpha,
                "default_weight": cls.default_weight,
                "paper_weight": cls.paper_weight,
                "needs": "teacher layers" if cls.needs_layers else "teacher logits",
            }
        )
    return rows


def _strategy_rows() -> list[dict]:
    from edgekd.distill.strategies import all_strategies

    return [
        {"name": s.name, "description": s.description, "paper": s.paper}
        for s in sorted(all_strategies().values(), key=lambda s: s.name)
    ]


@verb
def methods(
    as_json: Json = False,
) -> None:
    """List the distillation methods (--method) and strategies (--strategy)."""
    rows, strategies = _method_rows(), _strategy_rows()
    if as_json:
        typer.echo(json.dumps({"methods": rows, "strategies": strategies}, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="edgekd methods (--method)", box=box.SIMPLE_HEAD)
    for col in ("name", "description", "paper", "alpha", "weight (paper)", "needs"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["description"],
            r["paper"],
            f"{r['default_alpha']:g}",
            f"{r['default_weight']:g}"
            + (f" ({r['paper_weight']:g})" if r["paper_weight"] != r["default_weight"] else ""),
            r["needs"],
        )
    console.print(table)
    st = Table(title="edgekd strategies (--strategy)", box=box.SIMPLE_HEAD)
    for col in ("name", "description", "paper"):
        st.add_column(col)
    for r in strategies:
        st.add_row(r["name"], r["description"], r["paper"])
    console.print(st)
    console.print(
        "  loss = alpha * CE(labels) + (1 - alpha) * weight * method loss; "
        "feature methods pair layers with --pair STUDENT:TEACHER (default features:features)",
        highlight=False,
    )
