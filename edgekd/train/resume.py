"""The training state, saved after every epoch (and when stopped) so that a run can resume exactly.

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
"""

from __future__ import annotations

import os
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
