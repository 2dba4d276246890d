"""The training state, saved on a clock (and when stopped, and at the end) so that a run can
resume exactly; and the clock that says when.

One file holds everything the next step depends on: student (and method adapter) weights, the
optimizer and scheduler states, both random generators, the position in the epoch (with that
epoch's shuffled order), the history so far and the best weights so far, and with fp16 the gradient
scaler's state. Resuming from it gives bit-identical final weights to a run that was never stopped
(same seed, CPU).

Device-independent: tensors are read onto the CPU (``map_location``) and the trainer moves them to
its own device, so a run started on a GPU resumes on a CPU and the reverse (the device and the
precision are not settings a checkpoint must match; see ``edgekd.train.loop``).

Written with ``torch.save`` to a temporary file, fsynced and renamed over the previous one
(``edgekd.fileio.atomic_path``): a crash or ``kill -9`` mid-write leaves the previous checkpoint
whole. Read back with ``torch.load(weights_only=True)``: tensors and plain containers only, never
pickled code.

Saving costs ``torch.save`` and two fsyncs (0.13 s of a 0.7 s epoch on the default student), so
it happens every ``TrainConfig.checkpoint_every`` seconds, at the first step boundary after (the
state is step-level: the epoch's order and position are in it), instead of after every epoch: a
``kill -9`` loses at most that interval plus one step. 0 saves at every epoch's end.

``--time-budget`` is a clock too (:class:`TimeBudget`): the seconds spent training are part of the
state, so a resumed run goes on counting from the last save instead of starting afresh.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path
from edgekd.safety._files import one_line

FORMAT = 1
TEMP_SUFFIX = ".tmp"


def save_training_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=TEMP_SUFFIX) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


class CheckpointClock:
    """When the training state is due: every ``every`` seconds since the last save (0: at epoch
    ends), and at the end whatever was trained since. ``path`` None: never (not the writer)."""

    clock = staticmethod(time.monotonic)  # tests swap in a fake clock

    def __init__(self, path: str | os.PathLike[str] | None, every: float) -> None:
        self.path, self.every = path, every
        self.last = self.clock()
        self.unsaved = False  # trained since the last save (a resumed run starts saved)

    def advanced(self) -> None:
        self.unsaved = True

    def due(self, epoch_end: bool = False) -> bool:
        if self.path is None or not self.unsaved:
            return False
        if self.every == 0:
            return epoch_end
        return self.clock() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        if self.path is not None:
            save_training_state(self.path, state)
            self.last, self.unsaved = self.clock(), False


class TimeBudget:
    """Seconds of training allowed (``TrainConfig.time_budget``; None: no limit), counted from
    the start of training plus what a resumed run had spent before (``spent_before``)."""

    clock = staticmethod(time.monotonic)  # tests swap in a fake clock

    def __init__(self, seconds: float | None, spent_before: float = 0.0) -> None:
        self.seconds, self.spent_before = seconds, spent_before
        self.started = self.clock()

    def spent(self) -> float:
        return self.spent_before + (self.clock() - self.started)

    def resume(self, spent_before: float) -> None:
        """Continue counting from a checkpoint's spent seconds."""
        self.spent_before, self.started = spent_before, self.clock()

    def exhausted(self) -> bool:
        return self.seconds is not None and self.spent() >= self.seconds


def load_training_state(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The state saved at ``path``, its tensors on ``map_location`` (whatever device wrote it)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no training checkpoint to resume from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise BadInputError(
            f"{path}: not a readable training checkpoint ({one_line(exc)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BadInputError(f"{path}: not an edgekd training checkpoint (format {FORMAT})")
    return state


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files a killed writer left beside ``path``; the checkpoint itself stays."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
