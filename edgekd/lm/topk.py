"""A causal-LM teacher's outputs over the corpus, computed once and cached as top-k
log-probabilities in memory-mapped files.

Full logits do not fit anywhere: 10,000 blocks of 128 tokens over a 49,152-token vocabulary are
250 GB in float32. Per position we keep the teacher's k most likely tokens (``index``, int32),
their log-probabilities and, last, the log of the remaining mass (``log_probs``, float32,
[N, T, k + 1]): 66 MB at k = 32 for the same corpus. The teacher runs over the corpus once,
batch by batch, written straight into the cache files (never all in memory), and a second run on
the same teacher and text reuses them. Training reads each batch's rows.

A large teacher (``BF16_MIN_PARAMS`` and up) on a CPU that multiplies bfloat16 natively
(AVX512-BF16 or AMX) runs this pass in bf16, on a bf16 copy of its weights: the pass is
the teacher's whole cost. Measured on a SmolLM-135M-shaped teacher, 4 blocks of 128 tokens on 2
cores of an EPYC with AVX512-BF16 (load 13.8, side by side): fp32 28.5 s, bf16 weights 8.8 s
(3.3x), autocast 29.1 s (no gain); the bf16 log-probabilities of the fp32 top-32 tokens were
within 0.035 nats. The cache key records the precision; ``precision="fp32"`` forces fp32.

The losses compare the teacher's k + 1 buckets with the student's probabilities of the same k
tokens and of all the others together: ``edgekd.distill.methods._tokens`` says exactly how the
tail is treated (as one outcome; a bound on the full divergence, exact when k covers the
vocabulary).
"""

from __future__ import annotations

import copy
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
# Below this the teacher's matmuls are too small for bf16 to pay (the default teacher is 1.3M)
BF16_MIN_PARAMS = 20_000_000


@dataclass(frozen=True)
class TopK:
    """The teacher's top-k over ``N`` blocks of ``T`` positions: ``log_probs`` [N, T, k + 1]
    (k tokens, then the tail) and ``index`` [N, T, k]; arrays may be memory-mapped."""

    log_probs: np.ndarray
    index: np.ndarray
    source: str = "computed"  # "cache hit", "cache miss" or "no cache"
    precision: str = "fp32"  # the teacher's arithmetic in the pass: "fp32" or "bf16"

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
    precision: str = "auto",
) -> TopK:
    """The teacher's top-k next-token log-probabilities at every input position of ``blocks``
    [N, context + 1] (it reads ``blocks[:, :-1]``), from the cache when this teacher already
    scored this text. ``precision``: "auto" (bf16 for a large teacher on a CPU with native bf16,
    see the module docstring), "fp32" or "bf16". Raises DivergedError for NaN or infinite teacher
    outputs.

    >>> top = teacher_top_k(teacher.module, corpus.blocks, k=32)  # doctest: +SKIP
    >>> top.log_probs.shape  # doctest: +SKIP
    (1200, 128, 33)
    """
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    where = torch.device(device)
    precision = pass_precision(teacher, where, precision)
    if not use_cache:
        lp, ix = _compute(_in_precision(teacher, precision), blocks, k, batch_size, device)
        return TopK(lp, ix, "no cache", precision)
    text = hashlib.sha256(np.ascontiguousarray(blocks, dtype=np.int64).tobytes()).hexdigest()
    key = cache_key(teacher=weights_hash(teacher), text=text, shape=blocks.shape, k=k, v=1,
                    **({} if precision == "fp32" else {"precision": precision}))  # fmt: skip
    suffix = "" if where.type == "cpu" else f"-{where.type}"  # GPU logits differ in the last bits
    lp_path = cache_dir() / f"lm-topk-{key}{suffix}-logp.npy"
    ix_path = cache_dir() / f"lm-topk-{key}{suffix}-index.npy"
    cached = _read(lp_path, ix_path, len(blocks))
    if cached is not None:
        return TopK(*cached, "cache hit", precision)
    scorer = _in_precision(teacher, precision)
    with atomic_path(ix_path, suffix=".npy") as ix_tmp, atomic_path(lp_path, suffix=".npy") as lp:
        written = _compute(scorer, blocks, k, batch_size, device, into=(lp, ix_tmp))
        del written  # unmapped before the files are renamed into place
    return TopK(*_read(lp_path, ix_path, len(blocks)), "cache miss", precision)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # not Linux: stay in fp32
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pass_precision(teacher: nn.Module, device: torch.device, precision: str = "auto") -> str:
    """The arithmetic of the top-k pass: ``precision`` itself, or for "auto" bf16 when the
    teacher is large and the CPU multiplies bf16 natively (see the module docstring)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"top-k precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    large = sum(p.numel() for p in teacher.parameters()) >= BF16_MIN_PARAMS
    return "bf16" if device.type == "cpu" and large and native_bf16() else "fp32"


def _in_precision(teacher: nn.Module, precision: str) -> nn.Module:
    """The teacher itself (fp32), or a bf16 copy of it: the run's teacher stays fp32 for the
    benchmark and the live steps."""
    return teacher if precision == "fp32" else copy.deepcopy(teacher).to(torch.bfloat16)


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
