"""Atomic file and folder writes: an artifact is either complete under its final name or absent.

Everything edgekd writes goes to a temporary name in the same folder, is flushed and fsynced, and
is then renamed (``os.replace`` is atomic on POSIX within one filesystem).

A write that fails leaves the previous file as it was. When it failed because the disk is full
(``ENOSPC``, or a library such as torch whose own error hides the errno, on a filesystem left
with almost no free space) it ends in ``DiskFullError`` saying so; other ``OSError`` on the
output path end in ``OutputError`` naming the path and the reason (exit 2, not a traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd.errors import DISK_FULL_ERRNOS, DiskFullError, EdgekdError, OutputError

# Below this much free space, a failed write is taken to have failed for lack of it: torch's
# zip writer reports ENOSPC only as "file write failed".
NEARLY_FULL_BYTES = 1 << 20


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every platform lets us open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it into place.

    >>> with atomic_path("model.onnx") as tmp:
    ...     write_model(tmp)  # doctest: +SKIP
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=suffix or ".tmp", dir=final.parent
        )
        os.close(fd)
    except OSError as exc:
        raise OutputError.of(exc, final) from None
    tmp = Path(name)
    try:
        try:
            yield tmp
        except Exception as exc:
            if _disk_full(exc, final.parent):
                raise DiskFullError(_full_message(final)) from exc
            raise
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise OutputError.of(exc, final) from None
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def free_bytes(folder: Path) -> int | None:
    """Free bytes on ``folder``'s filesystem for this user (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(exc, EdgekdError):
        return False  # already said what went wrong (a DiskFullError too)
    free = free_bytes(folder)
    return free is not None and free < NEARLY_FULL_BYTES


def _full_message(final: Path) -> str:
    free = free_bytes(final.parent)
    left = "" if free is None else f", {free:,} bytes free"
    kept = "; the previous file is kept" if final.exists() else ""
    return f"disk full: cannot write {final} (no space left on the device{left}){kept}"


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(final, text.encode("utf-8"))


def write_json_atomic(final: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder under a temporary name and rename it into place on success.

    On any exception the temporary folder is removed, so no half-written run folder is left.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        from edgekd.errors import BadInputError

        raise BadInputError(
            f"output folder {final} already exists (pass --overwrite to replace it)"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise OutputError.of(exc, final) from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
