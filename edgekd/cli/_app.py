"""The Typer app and the ``verb`` decorator that every command module registers itself with.

``verb`` keeps the exit-code contract (``edgekd.errors``): an ``EdgekdError`` is one line and its
code; an ``OSError`` about a file (a read-only or impossible output path, a full disk) is one
line naming the file, exit 2; Ctrl-C or SIGTERM is exit 130; a ``sys.exit()`` in code a user
brought is exit 2 (never its own code, which may be 0); anything else is an internal error.
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Annotated

import typer

from edgekd.errors import (
    DISK_FULL_ERRNOS,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EdgekdError,
)

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
        from edgekd.train.interrupt import raise_on_signals

        try:
            # SIGTERM like Ctrl-C (exit 130, one line); a torchrun worker keeps the launcher's way
            with raise_on_signals(enabled=not _worker_rank()):
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except EdgekdError as exc:
            if _state["debug"]:
                traceback.print_exc()
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
        except KeyboardInterrupt as exc:  # (a SIGTERM is one too: edgekd.train.interrupt)
            _fail(str(exc) or "interrupted", EXIT_INTERRUPTED)
        except SystemExit as exc:  # typer's own exits are not SystemExit: this is user code's
            _debug_traceback()
            _fail(f"code run by this command called sys.exit({exc.code!r})", EXIT_BAD_INPUT)
        except OSError as exc:
            if exc.filename is None:
                _internal(exc)
            _debug_traceback()
            _fail(_file_problem(exc), EXIT_BAD_INPUT)
        except Exception as exc:  # a bug: one line unless --debug
            _internal(exc)

    return app.command()(wrapper)


def _file_problem(exc: OSError) -> str:
    """``PATH: Permission denied``; a full disk said plainly."""
    if exc.errno in DISK_FULL_ERRNOS:
        return f"disk full: cannot write {exc.filename} ({exc.strerror})"
    return f"{exc.filename}: {exc.strerror or type(exc).__name__}"


def _debug_traceback() -> None:
    if _state["debug"]:
        traceback.print_exc()


def _internal(exc: BaseException) -> None:
    """A bug: one line unless --debug."""
    _debug_traceback()
    first = (str(exc).splitlines() or [""])[0]
    _fail(
        f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
        EXIT_INTERNAL,
    )


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
