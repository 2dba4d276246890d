"""The ``edgekd`` command line: parse options, build a config, call one library verb, print.

No logic lives here, and nothing heavy is imported at module level, so ``edgekd --help`` stays fast
(torch and onnxruntime are imported only by the command that needs them).
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Annotated

import typer

from edgekd.errors import EXIT_INTERNAL, EdgekdError

app = typer.Typer(
    name="edgekd",
    help="Distil a large PyTorch model into a small one that meets an edge device's budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _fail(message: str, code: int) -> None:
    typer.echo(f"edgekd: error: {message}", err=True)
    raise typer.Exit(code)


def verb(fn):
    """Register a command whose expected errors become one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except EdgekdError as exc:
            if _state["debug"]:
                traceback.print_exc()
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: one line unless --debug
            if _state["debug"]:
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0]
            _fail(
                f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the "
                "traceback)",
                EXIT_INTERNAL,
            )

    return app.command()(wrapper)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@verb
def targets(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the shipped target profiles and their budgets."""
    from edgekd.targets import list_targets

    profiles = list_targets()
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgekd targets")
    for col in (
        "name",
        "aliases",
        "device",
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
            p.device.name,
            str(p.threads),
            ", ".join(p.precisions),
            f"{b.latency_ms:g}",
            f"{b.peak_memory_mb:g}",
            f"{b.model_size_kb:g}",
            f"{b.params:,}",
            f"{b.accuracy_drop:g}",
        )
    Console().print(table)


@verb
def distill(
    target: Annotated[
        str, typer.Option(help="Target profile: name, alias, or path to a TOML.")
    ] = "mobile",
    data: Annotated[
        str | None, typer.Option(help="Training data: 'digits' (default), 'mnist1d', or a .npz.")
    ] = None,
    method: Annotated[str, typer.Option(help="Distillation method (see `edgekd methods`).")] = "kd",
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature T for soft targets.")
    ] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the hard-label CE; 1 - alpha weights the KD term.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option(help="Student training epochs.")] = 30,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    student: Annotated[
        str | None,
        typer.Option(help="Student family (see `edgekd students`); default by input kind."),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default runs/TARGET-TIMESTAMP).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
) -> None:
    """Distil a teacher into a student sized for the target; export, quantize, bench, gate."""
    from edgekd.pipeline import DistillConfig
    from edgekd.pipeline import distill as run_distill
    from edgekd.report import print_summary

    config = DistillConfig(
        target=target,
        data=data,
        method=method,
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        lr=lr,
        seed=seed,
        student_family=student,
        out=out,
        overwrite=overwrite,
    )
    report = run_distill(config)
    if as_json:
        typer.echo(report.to_json())
    else:
        print_summary(report)
        typer.echo(f"report: {report.models[0].path.rsplit('/', 1)[0]}/report.md")


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
