"""The data types every stage passes around: :class:`Split` (named input arrays plus optional
labels) and :class:`DataBundle` (train/val/test splits and what the inputs look like).

Apart from ``edgekd.data``'s loaders so that the readers (``edgekd.data.readers``), which the
loaders call, can build splits without importing the loaders back.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgekd.data.mapped import batch_rows, row_chunks, take_rows
from edgekd.data.stream import is_lazy, stream_batches
from edgekd.errors import DataError

if TYPE_CHECKING:
    from edgekd.data.normalize import Normalization

INPUT_KINDS = ("image", "vector", "sequence", "tokens", "multi")


@dataclass(frozen=True)
class Split:
    """One split: ``inputs`` maps input name -> array (samples first); ``y`` may be None."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        sizes = {name: len(a) for name, a in self.inputs.items()}
        if not sizes:
            raise DataError("a data split has no inputs")
        if len(set(sizes.values())) != 1:
            raise DataError(f"inputs have different sample counts: {sizes}")
        if self.y is not None and len(self.y) != self.n:
            raise DataError(f"labels 'y' have {len(self.y)} samples but inputs have {self.n}")

    @property
    def n(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, index: np.ndarray) -> Split:
        """The rows ``index`` in memory (a batch; see :meth:`part` for a split that lasts)."""
        return Split(
            {k: batch_rows(v, index) for k, v in self.inputs.items()},
            None if self.y is None else self.y[index],
        )

    def part(self, index: np.ndarray) -> Split:
        """``take(index)`` for a split that lasts (train/val/test): rows of a memory-mapped input
        stay on disk (``edgekd.data.mapped.take_rows``) instead of being copied into memory."""
        return Split(
            {
                k: v.subset(index) if is_lazy(v) else take_rows(v, index)
                for k, v in self.inputs.items()
            },
            None if self.y is None else self.y[index],
        )

    @property
    def streamed(self) -> bool:
        """Whether an input is decoded on demand (``edgekd.data.stream``: a large image folder)."""
        return any(is_lazy(v) for v in self.inputs.values())

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, Split]]:
        """Yield ``(index, batch)``; shuffled when ``rng`` is given."""
        order = rng.permutation(self.n) if rng is not None else np.arange(self.n)
        index = [order[start : start + batch_size] for start in range(0, self.n, batch_size)]
        with self.feed(index) as feed:
            yield from feed

    @contextlib.contextmanager
    def feed(self, order: list[np.ndarray]) -> Iterator[Iterator[tuple[np.ndarray, Split]]]:
        """``(index, self.take(index))`` for each index array of ``order``, in that order: taken
        as they are asked for, or, for a streamed split, decoded ahead by worker processes
        (``edgekd.data.stream``), which end with the block."""
        if not self.streamed or not len(order):  # (no workers started for no batch)
            yield ((index, self.take(index)) for index in order)
            return
        with stream_batches(self.inputs, self.y, order) as batches:
            yield ((index, Split(rows, y)) for index, rows, y in batches)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.inputs):
            a = self.inputs[name]
            if is_lazy(a):  # decoded once, chunk by chunk, and remembered
                h.update(a.fingerprint(name))
                continue
            h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
            for part in row_chunks(a):  # the same bytes as a.tobytes(), never all in memory
                h.update(memoryview(np.ascontiguousarray(part)))
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class DataBundle:
    """A data set ready for distillation: train/val/test splits and what the inputs look like."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_kind: str
    split_note: str = ""
    class_names: tuple[str, ...] = field(default=())
    # (x - mean) / std the student runs first (edgekd.data.normalize; None: inputs as they are)
    normalization: Normalization | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.train.inputs)

    @property
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.train.inputs.items()}

    def example_inputs(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        return {k: v[:batch_size] for k, v in self.test.inputs.items()}

    def test_inputs(self, rows: int = 4096, streamed_rows: int = 2048) -> dict[str, np.ndarray]:
        """The test inputs export's parity check runs on: at most ``rows`` of an in-memory or
        mapped split, spread over it (:func:`spread_rows`; on 60,000 images parity over all
        12,000 test rows cost 16 s of the teacher alone at load 11, for no more evidence than
        4,096 give, and the benchmark scores the exported file on the whole split anyway); the
        first ``streamed_rows`` of a streamed one, decoded (never the whole set)."""
        if self.test.streamed:
            return self.example_inputs(min(streamed_rows, self.test.n))
        if self.test.n <= rows:
            return self.test.inputs
        return self.test.part(spread_rows(self.test.n, rows)).inputs


def spread_rows(n: int, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` of ``n`` row indices drawn at random (seeded) and sorted: a subset that keeps a
    split's mix of classes even when its file is ordered by class (splits keep the file's
    order), read in order from a memory-mapped file.

    >>> spread_rows(10, 3).tolist(), len(spread_rows(60_000, 4_096))
    ([5, 6, 9], 4096)
    """
    return np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
