"""The teacher-output cache: a frozen teacher's outputs, computed once per split and kept on disk.

A large pretrained teacher then costs one inference pass over the data (memory: the teacher plus
one batch) instead of one per epoch, and a second run on the same data reuses the file. The file
is written batch by batch and read back memory-mapped, so outputs over data larger than memory
are never all in memory (training reads each batch's rows: ``edgekd.train.loop.cached_teacher``).
This is the one cache of teacher outputs: :func:`outputs_key` builds every key from the teacher's
fingerprint (a user's teacher file, or :func:`weights_hash` of a module) and the data's, so a
retrained teacher or other data never reuses stale outputs. On several workers (``dist``) each
computes a contiguous part of the split and all get the whole (all-gather); rank 0 writes the
cache entry. :class:`TeacherOutputs` carries the outputs prepared with the teacher into training.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgekd.cache import cache_dir, cache_key
from edgekd.data import Split
from edgekd.errors import DivergedError
from edgekd.fileio import atomic_path
from edgekd.progress import progress_bar
from edgekd.train.device import OnDevice, module_device, training_device
from edgekd.train.loop import to_tensors
from edgekd.train.threads import fit_training_threads

if TYPE_CHECKING:
    from edgekd.train.distributed import DistContext

BATCH_SIZE = 64


@dataclass(frozen=True)
class TeacherOutputs:
    """A frozen teacher's outputs over the training and validation splits, computed once with the
    teacher (``edgekd.teacher.prepare``); the offline strategy teaches from them."""

    train: np.ndarray  # one row per training sample, in the split's order
    val: np.ndarray

    def __post_init__(self) -> None:
        if self.train.shape[1:] != self.val.shape[1:]:
            raise ValueError(
                f"teacher outputs of different widths: {self.train.shape[1:]} for the training "
                f"split, {self.val.shape[1:]} for validation"
            )


def weights_hash(model: nn.Module) -> str:
    """Hash of a model's architecture record, parameter/buffer names, dtypes, shapes and values."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(json.dumps(getattr(model, "edgekd_arch", None), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def outputs_key(teacher: str, split: Split) -> str:
    """The cache key of the outputs of the teacher with fingerprint ``teacher`` over ``split``."""
    return cache_key(teacher=teacher, data=split.fingerprint(), v=1)


def module_outputs(
    teacher: nn.Module,
    split: Split,
    use_cache: bool = True,
    dist: DistContext | None = None,
    batch_size: int = BATCH_SIZE,
) -> tuple[np.ndarray, str]:
    """A frozen module's outputs over ``split``, keyed by its :func:`weights_hash`, and where they
    came from: "cache hit", "cache miss" or "no cache" (``use_cache=False``)."""
    key = outputs_key(weights_hash(teacher), split) if use_cache else None
    out, hit = _cached_outputs(teacher, split, key, "teacher outputs", batch_size, dist)
    return out, "no cache" if key is None else "cache hit" if hit else "cache miss"


def teacher_outputs(
    teacher: nn.Module,
    split: Split,
    key: str | None = None,
    description: str = "teacher outputs",
    batch_size: int = BATCH_SIZE,
    dist: DistContext | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """The teacher's outputs for every sample of ``split`` (float32), from the cache when ``key``
    (see :func:`outputs_key`) names an entry there. Raises DivergedError for NaN or infinite
    outputs.

    ``device`` (``--device``: auto, cpu, cuda, cuda:N): a torch teacher computes there, batch by
    batch, and goes back where it was; GPU outputs differ from CPU ones in the last bits, so they
    are cached under their own name.
    """
    return _cached_outputs(teacher, split, key, description, batch_size, dist, device)[0]


def _cached_outputs(
    teacher: nn.Module,
    split: Split,
    key: str | None,
    description: str,
    batch_size: int,
    dist: DistContext | None,
    device: str = "cpu",
) -> tuple[np.ndarray, bool]:
    """:func:`teacher_outputs`, and whether they came from the cache."""
    where = training_device(device, dist)  # (dist) on CUDA: each worker's own GPU
    suffix = "" if where.type == "cpu" else f"-{where.type}"
    path = cache_dir() / f"outputs-{key}{suffix}.npy" if key else None
    cached = _read_cache(path, split.n)
    # (dist) the cache is used only when every worker has the entry, else all compute their part
    if cached is not None if dist is None else dist.all(cached is not None):
        return cached, True

    if where.type == "cpu" and isinstance(teacher, nn.Module) and split.n:
        # torch's threads fitted first, as training does (edgekd.train.threads): at its default
        # of every core, 60,000 images through a 400k CNN took 4 minutes on a 2-core host at
        # load 10 instead of 7 s at load 2-9
        fit_training_threads(lambda: _forward_trial(teacher, split, batch_size), dist is not None)

    def compute(part: Split) -> np.ndarray:
        with OnDevice(where, teacher):
            return _outputs(teacher, part, description, batch_size)

    if path is not None and dist is None:
        # written batch by batch into the cache file: never a second full copy in memory
        with atomic_path(path, suffix=".npy") as tmp, OnDevice(where, teacher):
            written = _outputs(teacher, split, description, batch_size, into=tmp)
            _check_finite(written, split.n, description)
            del written  # unmapped before the file is renamed into place
        return _read_cache(path, split.n), False
    out = compute(split) if dist is None else dist.gather_rows(compute, split)
    _check_finite(out, split.n, description)
    if path is not None and dist.is_main:
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, out)
    return out, False


def _forward_trial(teacher: nn.Module, split: Split, batch_size: int):
    """One batch through the teacher in eval mode (its BatchNorm statistics untouched), for
    timing thread counts."""
    teacher.eval()
    batch = to_tensors(split.take(np.arange(min(split.n, batch_size))), module_device(teacher))

    def step() -> None:
        with torch.inference_mode():
            teacher(*batch)

    return step


def _check_finite(out: np.ndarray, n: int, description: str, chunk: int = 4096) -> None:
    """Raises DivergedError for NaN or infinite outputs; ``chunk`` rows at a time, so that a
    memory-mapped ``out`` is never all in memory."""
    bad = 0
    for start in range(0, len(out), chunk):
        part = np.asarray(out[start : start + chunk])
        bad += int((~np.isfinite(part)).any(axis=tuple(range(1, part.ndim))).sum())
    if bad:
        raise DivergedError(
            f"{description}: the teacher produced NaN or infinite outputs for {bad} of "
            f"{n} samples; check the teacher and the data (nothing was trained)"
        )


def _outputs(
    teacher: nn.Module, split: Split, description: str, batch_size: int, into: Path | None = None
) -> np.ndarray:
    """The outputs over ``split`` (float32), in memory, or written batch by batch into a new
    ``.npy`` file ``into`` and returned memory-mapped."""
    if hasattr(teacher, "eval"):
        teacher.eval()
    outs, out = [], None
    with torch.inference_mode(), progress_bar(description, math.ceil(split.n / batch_size)) as bar:
        for index, batch in split.batches(batch_size):
            inputs = to_tensors(batch, module_device(teacher))
            rows = teacher(*inputs).float().cpu().numpy()
            if into is None:
                outs.append(rows)
            else:
                if out is None:
                    shape = (split.n, *rows.shape[1:])
                    out = np.lib.format.open_memmap(into, "w+", np.float32, shape)
                out[index[0] : index[-1] + 1] = rows  # unshuffled: contiguous rows
            bar.advance()
    if out is not None:
        out.flush()
        return out
    return np.concatenate(outs).astype(np.float32, copy=False)


def _read_cache(path: Path | None, n: int) -> np.ndarray | None:
    """The cached outputs memory-mapped (pages come from the file as rows are used, never all in
    memory), or None when there is no usable entry. Copy-on-write (``mmap_mode="c"``): callers
    may hand the array to ``torch.from_numpy`` as they did an in-memory one, and a write never
    reaches the cache file."""
    if path is None or not path.is_file():
        return None
    try:
        cached = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed, not trusted
    return cached if len(cached) == n else None
