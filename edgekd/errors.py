"""Error types and the exit code each maps to.

The CLI turns an ``EdgekdError`` into one line on stderr and its ``exit_code``; anything else is an
internal error (exit 1) and prints a traceback only under ``--debug``.

Exit codes (a contract, documented in README.md):
    0  success / gate passed
    1  internal error (a bug: please report it)
    2  bad input or usage (unknown target, missing or malformed file, wrong shape), an output
       path that cannot be written (read-only, impossible, the disk full)
    3  a budget line or a regression check failed (``edgekd gate``)
    4  inconclusive gate verdict (too few or too noisy samples to decide)
    5  training diverged (NaN or infinite loss or teacher output)
    6  export or quantization produced a model that disagrees with PyTorch (parity failure)
    7  a distributed worker failed or lost contact with the others (the rank is named)
    130 interrupted (Ctrl-C / SIGTERM) after a consistent checkpoint was written
"""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_INCONCLUSIVE = 4
EXIT_DIVERGED = 5
EXIT_PARITY = 6
EXIT_WORKER_FAILED = 7
EXIT_INTERRUPTED = 130


class EdgekdError(Exception):
    """Base class: an expected failure with a one-line message for the user."""

    exit_code = EXIT_INTERNAL


class BadInputError(EdgekdError, ValueError):
    """The user gave us something we cannot use: a file, a field, a shape."""

    exit_code = EXIT_BAD_INPUT


class TargetError(BadInputError):
    """A target profile is unknown or malformed."""


class DataError(BadInputError):
    """A data set is missing, malformed, or does not fit the model."""


class UnsafeInputError(BadInputError):
    """A file asks for something we refuse to do (unpickle code, read outside its folder)."""


class OutputError(BadInputError):
    """An output path cannot be written: read-only, not a folder, no such parent, ..."""

    @classmethod
    def of(cls, exc: OSError, path: str | os.PathLike[str] | None = None) -> OutputError:
        """The one line for ``exc`` raised while writing ``path`` (or the file it names)."""
        where = path if path is not None else (exc.filename or "output")
        if exc.errno in DISK_FULL_ERRNOS:
            return DiskFullError(f"disk full: cannot write {where} ({exc.strerror})")
        return cls(f"cannot write {where}: {exc.strerror or type(exc).__name__}")


class DiskFullError(OutputError):
    """The disk (or the user's quota) is full; what was written before is kept."""


# ENOSPC, and the quota's EDQUOT where the platform has one.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class ExportError(EdgekdError):
    """torch -> ONNX export failed (unsupported operator, data-dependent control flow)."""

    exit_code = EXIT_BAD_INPUT


class ParityError(EdgekdError):
    """An exported or quantized model disagrees with its PyTorch source beyond the thresholds."""

    exit_code = EXIT_PARITY


class DivergedError(EdgekdError):
    """Training produced a NaN or infinite loss (or the teacher produced non-finite outputs)."""

    exit_code = EXIT_DIVERGED


class GateFailed(EdgekdError):
    """A budget line or regression check failed."""

    exit_code = EXIT_GATE_FAILED


class GateInconclusive(EdgekdError):
    """The gate could not decide: too few samples or too much noise."""

    exit_code = EXIT_INCONCLUSIVE


class Interrupted(EdgekdError):
    """The run was interrupted; a consistent checkpoint was written."""

    exit_code = EXIT_INTERRUPTED


class WorkerFailed(EdgekdError):
    """A worker of a distributed run died, failed, or stayed silent past the process-group timeout.

    ``exit_code`` may be set per instance: the launcher passes on a failed worker's own edgekd exit
    code (e.g. 5 when it diverged) and uses 7 for a worker killed by a signal.
    """

    exit_code = EXIT_WORKER_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
