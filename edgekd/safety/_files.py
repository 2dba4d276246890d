"""Small helpers shared by the safety checks: the up-front file test and one-line reasons."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from edgekd.errors import BadInputError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def require_file(path: str | os.PathLike[str], what: str) -> tuple[Path, os.stat_result]:
    """Return ``path`` and its stat if it is a non-empty regular file, else raise BadInputError.

    A FIFO or device would block or stream forever when a loader reads it, so only regular files
    (or links to them: the user named this file on purpose) go further.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file (expected a {what})") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path}: not a valid {what} (not a regular file)")
    if st.st_size == 0:
        raise BadInputError(f"{path}: not a valid {what} (the file is empty)")
    return path, st


def one_line(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message, without terminal colours, cut to ``limit``."""
    text = _ANSI.sub("", str(exc)).strip()
    first = text.splitlines()[0].split(". ")[0].strip() if text else ""
    first = first or type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
