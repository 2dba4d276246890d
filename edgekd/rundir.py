"""The run folder: ``OUT.partial/`` while a run is in progress, renamed to ``OUT`` when it is done.

``OUT.partial/`` holds ``config.json`` (the run's settings) from the start and ``checkpoint.pt``
(the training state) from the end of the first epoch, or for the other strategies one file per
stage in ``stages/``. An interrupted run (Ctrl-C, SIGTERM,
``kill -9``, a crash) keeps it, so that ``edgekd distill --resume OUT`` continues where it
stopped; a run that fails on bad input, divergence or a parity check leaves nothing behind. A
resumed run that fails again keeps its folder (``--overwrite`` starts over).

One run at a time writes a folder: ``OUT.partial/.lock`` is held (``flock``) for as long as a run
works in it and holds that run's PID, so a second ``distill`` on the same ``--out`` (a fresh start,
``--overwrite`` or ``--resume``) is refused with the PID instead of writing into it. The folder is
created with its lock already held (built under a temporary name, then renamed), so two runs
that start at the same moment cannot both take it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekd.errors import BadInputError, DiskFullError, EdgekdError, Interrupted, OutputError
from edgekd.fileio import _fsync_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking, as before
    fcntl = None

PARTIAL_SUFFIX = ".partial"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
STAGES_DIR = "stages"  # the non-default strategies: one checkpoint per stage (generation, ...)
LOCK_FILE = ".lock"  # held while a run works in the folder; holds its PID


def partial_dir(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def find_interrupted_run(run: str | os.PathLike[str]) -> Path:
    """The ``.partial`` folder of run ``OUT`` (given as ``OUT`` or as ``OUT.partial``)."""
    run = Path(run)
    work = run if run.name.endswith(PARTIAL_SUFFIX) else partial_dir(run)
    _refuse_if_in_use(work)
    if (work / CONFIG_FILE).is_file():
        return work
    out = run.with_name(run.name.removesuffix(PARTIAL_SUFFIX))
    if (out / "report.json").is_file():
        raise BadInputError(f"--resume {run}: that run is already complete ({out}/report.json)")
    raise BadInputError(f"--resume {run}: no interrupted run there ({work}/{CONFIG_FILE} missing)")


def _resumable(work: Path) -> bool:
    stages = work / STAGES_DIR
    return (work / CHECKPOINT_FILE).is_file() or (stages.is_dir() and any(stages.iterdir()))


# --- the lock ------------------------------------------------------------------------------------


def lock_holder(work: Path) -> int | None:
    """The PID of the run that holds ``work``'s lock (0 when it wrote none yet); None when no
    run does. Only asks: the lock is not kept."""
    if fcntl is None:
        return None
    try:
        fd = os.open(work / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no run has ever held it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    finally:
        os.close(fd)  # closing also drops a lock we got
    return None


def _read_pid(fd: int) -> int:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def _in_use(work: Path, pid: int) -> BadInputError:
    who = f"PID {pid}" if pid else "a process that is starting"
    return BadInputError(
        f"{work} is in use by another edgekd run ({who}); wait for it to end or stop it, "
        "then try again"
    )


def _refuse_if_in_use(work: Path) -> None:
    pid = lock_holder(work)
    if pid is not None:
        raise _in_use(work, pid)


def _take_lock(work: Path) -> int | None:
    """Hold ``work``'s lock (an open file descriptor, kept until the run ends) and write our PID
    in it; refuse when another run holds it."""
    if fcntl is None:
        return None
    fd = os.open(work / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise _in_use(work, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing drops the flock


def _create_locked(work: Path) -> int | None:
    """Create ``work`` with its lock already held: built under a temporary name and renamed, so a
    second run sees either no folder or a locked one."""
    try:
        work.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{work.name}.", dir=work.parent))
    except OSError as exc:
        raise OutputError.of(exc, work) from None
    fd = _take_lock(tmp)
    try:
        os.rename(tmp, work)  # fails when another run created it first
    except OSError:
        _release(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise _in_use(work, lock_holder(work) or 0) from None
    return fd


# --- the run folder ------------------------------------------------------------------------------


def _open_work(out: Path, overwrite: bool, resume: bool) -> tuple[Path, int | None]:
    """``OUT.partial`` for this run, locked: found (``resume``) or created."""
    if resume:
        work = find_interrupted_run(out)
        return work, _take_lock(work)
    work = partial_dir(out)
    _check_parent(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write {out}: it is a file, not a folder")
    if out.exists() and not overwrite:
        raise BadInputError(f"output folder {out} already exists (pass --overwrite to replace it)")
    if work.exists():
        _refuse_if_in_use(work)  # before suggesting --resume, or deleting a live run's files
        if not overwrite:
            raise BadInputError(
                f"{work} holds an interrupted run: continue it with --resume {out}, or pass "
                "--overwrite to start over"
            )
        shutil.rmtree(work)
    return work, _create_locked(work)


def _check_parent(out: Path) -> None:
    """The nearest existing folder above ``out`` must be a folder (``--out notes.txt/run``)."""
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {out}: {parent} is a file, not a folder")
            return


@contextlib.contextmanager
def run_dir(
    out: str | os.PathLike[str], overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Yield the in-progress folder, locked; on success drop the checkpoint and rename it to
    ``out``."""
    out = Path(out)
    if not out.name:
        raise BadInputError(f"--out {str(out)!r}: not a folder name")
    work, lock = _open_work(out, overwrite, resume)
    keep = resume
    try:
        yield work
    except (Interrupted, KeyboardInterrupt):
        keep = True if resume else (work / CONFIG_FILE).is_file()  # stopped before it: nothing
        raise
    except DiskFullError as exc:  # like a crash: what was written so far can continue
        keep = keep or _resumable(work)
        if keep:
            raise DiskFullError(
                f"{exc}; free some space, then resume with: edgekd distill --resume {out}"
            ) from None
        raise
    except EdgekdError:
        raise
    except BaseException:
        keep = keep or _resumable(work)  # a crash: the training can continue from a checkpoint
        raise
    else:
        _finish(work, out)
        keep = True
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        _release(lock)


@contextlib.contextmanager
def resume_hint_on_stop(out: str | os.PathLike[str], enabled: bool = True) -> Iterator[None]:
    """A run stopped at any stage (Ctrl-C, SIGTERM) ends in :class:`Interrupted` with the resume
    command: the folder is kept (:func:`run_dir`), and ``--resume`` goes on from its last
    checkpoint. ``enabled`` False (a worker that does not own the folder): left as raised."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        if not enabled or (isinstance(exc, Interrupted) and "--resume" in str(exc)):
            raise
        said = str(exc) or "interrupted"
        said = said if said.startswith("distill:") else f"distill: {said}"
        raise Interrupted(f"{said}; resume with: edgekd distill --resume {out}") from None


def _finish(work: Path, out: Path) -> None:
    """Drop the training state and rename ``work`` to ``out``. The lock moves with the folder
    and is removed only then: until the rename, ``OUT.partial`` stays locked."""
    (work / CHECKPOINT_FILE).unlink(missing_ok=True)
    shutil.rmtree(work / STAGES_DIR, ignore_errors=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    (out / LOCK_FILE).unlink(missing_ok=True)
    _fsync_dir(out.parent)
