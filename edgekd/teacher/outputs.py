"""Offline teacher outputs: computed once per split, in batches, with a progress bar, and cached.

A large pretrained teacher then costs one inference pass over the data (memory: the teacher plus
one batch) instead of one per epoch, and a second run on the same data reuses the file. The cache
key covers the teacher's weights (or file), the chosen output and the data itself. On several
workers (``dist``) each computes a contiguous part of the split and all get the whole (all-gather);
rank 0 writes the cache entry.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgekd.cache import cache_dir
from edgekd.data import Split
from edgekd.errors import DivergedError
from edgekd.fileio import atomic_path
from edgekd.progress import progress_bar
from edgekd.train.device import OnDevice, module_device, training_device
from edgekd.train.loop import to_tensors

if TYPE_CHECKING:
    from edgekd.train.distributed import DistContext

BATCH_SIZE = 64


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
    names an entry there. Raises DivergedError for NaN or infinite outputs.

    ``device`` (``--device``: auto, cpu, cuda, cuda:N): a torch teacher computes there, batch by
    batch, and goes back where it was; GPU outputs differ from CPU ones in the last bits, so they
    are cached under their own name.
    """
    where = training_device(device, dist)  # (dist) on CUDA: each worker's own GPU
    suffix = "" if where.type == "cpu" else f"-{where.type}"
    path = cache_dir() / f"outputs-{key}{suffix}.npy" if key else None
    cached = _read_cache(path, split.n)
    # (dist) the cache is used only when every worker has the entry, else all compute their part
    if cached is not None if dist is None else dist.all(cached is not None):
        return cached

    def compute(part: Split) -> np.ndarray:
        with OnDevice(where, teacher):
            return _outputs(teacher, part, description, batch_size)

    out = compute(split) if dist is None else dist.gather_rows(compute, split)
    bad = int((~np.isfinite(out)).any(axis=tuple(range(1, out.ndim))).sum())
    if bad:
        raise DivergedError(
            f"{description}: the teacher produced NaN or infinite outputs for {bad} of "
            f"{split.n} samples; check the teacher and the data (nothing was trained)"
        )
    if path is not None and (dist is None or dist.is_main):
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, out)
    return out


def _outputs(teacher: nn.Module, split: Split, description: str, batch_size: int) -> np.ndarray:
    if hasattr(teacher, "eval"):
        teacher.eval()
    outs = []
    with torch.inference_mode(), progress_bar(description, math.ceil(split.n / batch_size)) as bar:
        for _, batch in split.batches(batch_size):
            inputs = to_tensors(batch, module_device(teacher))
            outs.append(teacher(*inputs).float().cpu().numpy())
            bar.advance()
    return np.concatenate(outs).astype(np.float32, copy=False)


def _read_cache(path, n: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed, not trusted
    return cached if len(cached) == n else None
