"""The run folder: ``OUT.partial/`` while a run is in progress, renamed to ``OUT`` when it is done.

``OUT.partial/`` holds ``config.json`` (the run's settings) from the start and ``checkpoint.pt``
(the training state) from the end of the first epoch, or for the other strategies one file per
stage in ``stages/``. An interrupted run (Ctrl-C, SIGTERM,
``kill -9``, a crash) keeps it, so that ``edgekd distill --resume OUT`` continues where it
stopped; a run that fails on bad input, divergence or a parity check leaves nothing behind. A
resumed run that fails again keeps its folder (``--overwrite`` starts over).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgekd.errors import BadInputError, EdgekdError, Interrupted
from edgekd.fileio import _fsync_dir

PARTIAL_SUFFIX = ".partial"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
STAGES_DIR = "stages"  # the non-default strategies: one checkpoint per stage (generation, ...)


def partial_dir(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def find_interrupted_run(run: str | os.PathLike[str]) -> Path:
    """The ``.partial`` folder of run ``OUT`` (given as ``OUT`` or as ``OUT.partial``)."""
    run = Path(run)
    work = run if run.name.endswith(PARTIAL_SUFFIX) else partial_dir(run)
    if (work / CONFIG_FILE).is_file():
        return work
    out = run.with_name(run.name.removesuffix(PARTIAL_SUFFIX))
    if (out / "report.json").is_file():
        raise BadInputError(f"--resume {run}: that run is already complete ({out}/report.json)")
    raise BadInputError(f"--resume {run}: no interrupted run there ({work}/{CONFIG_FILE} missing)")


def _resumable(work: Path) -> bool:
    stages = work / STAGES_DIR
    return (work / CHECKPOINT_FILE).is_file() or (stages.is_dir() and any(stages.iterdir()))


@contextlib.contextmanager
def run_dir(
    out: str | os.PathLike[str], overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Yield the in-progress folder; on success drop the checkpoint and rename it to ``out``."""
    out = Path(out)
    work = partial_dir(out)
    if resume:
        work = find_interrupted_run(out)
    else:
        if out.exists() and not overwrite:
            raise BadInputError(
                f"output folder {out} already exists (pass --overwrite to replace it)"
            )
        if work.exists():
            if not overwrite:
                raise BadInputError(
                    f"{work} holds an interrupted run: continue it with --resume {out}, or pass "
                    "--overwrite to start over"
                )
            shutil.rmtree(work)
        work.mkdir(parents=True)
    keep = resume
    try:
        yield work
    except (Interrupted, KeyboardInterrupt):
        keep = True
        raise
    except EdgekdError:
        raise
    except BaseException:
        keep = keep or _resumable(work)  # a crash: the training can continue from a checkpoint
        raise
    else:
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)
        shutil.rmtree(work / STAGES_DIR, ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
        _fsync_dir(out.parent)
        keep = True
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
