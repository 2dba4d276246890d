"""The Typer app and the ``verb`` decorator that every command module registers itself with."""

from __future__ import annotations

import functools
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
    rank = _worker_rank()
    typer.echo(f"edgekd: error: {rank}{message}", err=True)
    if rank and _in_process_group():  # a torchrun worker: exit with this code, not an abort
        from edgekd.train.distributed import exit_worker

        exit_worker(code)
    raise typer.Exit(code)


def _in_process_group() -> bool:
    torch_dist = sys.modules.get("torch.distributed")  # never imported here just to ask
    return bool(torch_dist and torch_dist.is_available() and torch_dist.is_initialized())


def _worker_rank() -> str:
    """``rank R: `` in a worker of a distributed run (torchrun sets RANK and WORLD_SIZE)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ:
        return f"rank {os.environ['RANK']}: "
    return ""


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
