"""A causal-LM teacher's outputs over the corpus, computed once and cached as top-k
log-probabilities in memory-mapped files.

Full logits do not fit anywhere: 10,000 blocks of 128 tokens over a 49,152-token vocabulary are
250 GB in float32. Per position we keep the teacher's k most likely tokens (``index``, int32),
their log-probabilities and, last, the log of the remaining mass (``log_probs``, float32,
[N, T, k + 1]): 66 MB at k = 32 for the same corpus. The teacher runs over the corpus once,
batch by batch, written straight into the cache files (never all in memory), and a second run on
the same teacher and text reuses them. Training reads each batch's rows.

The losses compare the teacher's k + 1 buckets with the student's probabilities of the same k
tokens and of all the others together: ``edgekd.distill.methods._tokens`` says exactly how the
tail is treated (as one outcome; a bound on the full divergence, exact when k covers the
vocabulary).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.cache import cache_dir, cache_key
from edgekd.distill.methods._tokens import bucket_log_probs
from edgekd.errors import DivergedError
from edgekd.fileio import atomic_path
from edgekd.progress import progress_bar
from edgekd.teacher.outputs import weights_hash
from edgekd.train.device import OnDevice, module_device

DEFAULT_TOP_K = 32


@dataclass(frozen=True)
class TopK:
    """The teacher's top-k over ``N`` blocks of ``T`` positions: ``log_probs`` [N, T, k + 1]
    (k tokens, then the tail) and ``index`` [N, T, k]; arrays may be memory-mapped."""

    log_probs: np.ndarray
    index: np.ndarray
    source: str = "computed"  # "cache hit", "cache miss" or "no cache"

    def __post_init__(self) -> None:
        if self.log_probs.shape[:-1] != self.index.shape[:-1] or (
            self.log_probs.shape[-1] != self.index.shape[-1] + 1
        ):
            raise ValueError(
                f"top-k shapes do not fit: log_probs {self.log_probs.shape}, index "
                f"{self.index.shape}"
            )

    @property
    def k(self) -> int:
        return self.index.shape[-1]

    def rows(self, rows: np.ndarray, device: torch.device | str = "cpu"):
        """(log-probs, index) tensors of blocks ``rows``, read from the files."""
        log_probs = torch.from_numpy(np.asarray(self.log_probs[rows], dtype=np.float32))
        index = torch.from_numpy(np.asarray(self.index[rows], dtype=np.int64))
        return log_probs.to(device), index.to(device)


def teacher_top_k(
    teacher: nn.Module,
    blocks: np.ndarray,
    k: int = DEFAULT_TOP_K,
    use_cache: bool = True,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> TopK:
    """The teacher's top-k next-token log-probabilities at every input position of ``blocks``
    [N, context + 1] (it reads ``blocks[:, :-1]``), from the cache when this teacher already
    scored this text. Raises DivergedError for NaN or infinite teacher outputs.

    >>> top = teacher_top_k(teacher.module, corpus.blocks, k=32)  # doctest: +SKIP
    >>> top.log_probs.shape  # doctest: +SKIP
    (1200, 128, 33)
    """
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    if not use_cache:
        lp, ix = _compute(teacher, blocks, k, batch_size, device)
        return TopK(lp, ix, "no cache")
    text = hashlib.sha256(np.ascontiguousarray(blocks, dtype=np.int64).tobytes()).hexdigest()
    key = cache_key(teacher=weights_hash(teacher), text=text, shape=blocks.shape, k=k, v=1)
    where = torch.device(device)
    suffix = "" if where.type == "cpu" else f"-{where.type}"  # GPU logits differ in the last bits
    lp_path = cache_dir() / f"lm-topk-{key}{suffix}-logp.npy"
    ix_path = cache_dir() / f"lm-topk-{key}{suffix}-index.npy"
    cached = _read(lp_path, ix_path, len(blocks))
    if cached is not None:
        return TopK(*cached, "cache hit")
    with atomic_path(ix_path, suffix=".npy") as ix_tmp, atomic_path(lp_path, suffix=".npy") as lp:
        written = _compute(teacher, blocks, k, batch_size, device, into=(lp, ix_tmp))
        del written  # unmapped before the files are renamed into place
    return TopK(*_read(lp_path, ix_path, len(blocks)), "cache miss")


def _compute(
    teacher: nn.Module,
    blocks: np.ndarray,
    k: int,
    batch_size: int,
    device: torch.device | str,
    into: tuple[Path, Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n, t = blocks.shape[0], blocks.shape[1] - 1
    lp_out = ix_out = None
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    teacher.eval()
    steps = math.ceil(n / batch_size)
    with (
        OnDevice(torch.device(device), teacher),
        torch.inference_mode(),
        progress_bar("teacher top-k", steps) as bar,
    ):
        for start in range(0, n, batch_size):
            ids = torch.from_numpy(np.asarray(blocks[start : start + batch_size, :-1]))
            logits = teacher(ids.to(module_device(teacher))).float()
            if not torch.isfinite(logits).all():
                raise DivergedError(
                    f"teacher top-k: the teacher produced NaN or infinite logits for blocks "
                    f"{start}-{start + len(ids) - 1}; check the teacher (nothing was trained)"
                )
            kk = min(k, logits.shape[-1])
            index = logits.topk(kk, dim=-1).indices
            lp, ix = bucket_log_probs(logits, index).cpu().numpy(), index.cpu().numpy()
            if into is None:
                parts.append((lp, ix.astype(np.int32)))
            else:
                if lp_out is None:
                    lp_out = np.lib.format.open_memmap(into[0], "w+", np.float32, (n, t, kk + 1))
                    ix_out = np.lib.format.open_memmap(into[1], "w+", np.int32, (n, t, kk))
                lp_out[start : start + len(ids)] = lp
                ix_out[start : start + len(ids)] = ix
            bar.advance()
    if into is None:
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    lp_out.flush()
    ix_out.flush()
    return lp_out, ix_out


def _read(lp_path: Path, ix_path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays memory-mapped read-only, or None when there is no usable entry."""
    if not (lp_path.is_file() and ix_path.is_file()):
        return None
    try:
        lp = np.load(lp_path, mmap_mode="r", allow_pickle=False)
        ix = np.load(ix_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged entry is recomputed, not trusted
    return (lp, ix) if len(lp) == n and len(ix) == n else None
