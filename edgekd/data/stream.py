"""Inputs decoded on demand: image folders larger than memory, streamed to training and to the
teacher through a ``torch.utils.data.DataLoader`` with worker processes.

:class:`LazyRows` stands in a :class:`~edgekd.data.split.Split` where an array would: it has an
array's ``shape``, ``dtype`` and ``len``, ``rows[index]`` decodes those rows (a batch, in memory)
and :meth:`LazyRows.subset` is a split of it that stays lazy. :func:`split_batches` feeds a
split's batches in a given order; for a split with lazy rows, a ``DataLoader`` over
:class:`BatchDataset` decodes each batch in a worker process while the model trains on the one
before, so that peak memory grows with the batch, not with the data set. Decoded rows are the
same bytes as the in-memory path's, so the same seed trains the same student.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from edgekd.data.mapped import row_chunks


def default_workers() -> int:
    """Worker processes for decoding: one per usable core beyond the one that trains, at most
    4 (decoding a batch of small images takes less than a training step), 0 on a 1-core box
    (decoded in the training process)."""
    from edgekd.hostinfo import usable_cores

    return max(0, min(4, usable_cores() - 1))


class LazyRows:
    """Rows decoded on demand by ``decode(i) -> np.ndarray`` (one sample of ``sample_shape`` and
    ``dtype``) for each ``i`` of ``ids``; ``workers`` decode batches for :func:`split_batches`
    (None: :func:`default_workers`)."""

    def __init__(
        self,
        decode: Callable[[int], np.ndarray],
        ids: np.ndarray,
        sample_shape: tuple[int, ...],
        dtype: np.dtype | str = np.float32,
        workers: int | None = None,
    ) -> None:
        self.decode, self.ids = decode, np.asarray(ids, dtype=np.int64)
        self.sample_shape, self.dtype = tuple(sample_shape), np.dtype(dtype)
        self.workers = default_workers() if workers is None else workers
        self._fingerprint: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:  # decoded, as an array would hold them
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> np.ndarray:
        """The rows ``index`` (an int, a slice or an index array) decoded, in memory."""
        picked = self.ids[index]
        if np.ndim(picked) == 0:
            return self._one(int(picked))
        out = np.empty((len(picked), *self.sample_shape), self.dtype)
        for row, i in enumerate(picked):
            out[row] = self._one(int(i))
        return out

    def _one(self, i: int) -> np.ndarray:
        return np.asarray(self.decode(i), dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # every row in memory: only for callers that need the whole array (e.g. np.savez)
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def subset(self, index: np.ndarray) -> LazyRows:
        """The rows ``index`` (a train/val/test split), still decoded on demand."""
        return LazyRows(self.decode, self.ids[index], self.sample_shape, self.dtype, self.workers)

    def astype(self, dtype) -> LazyRows:
        """Decoded as ``dtype`` (``edgekd.data.inputs`` fits inputs to a model's dtype)."""
        rows = self.subset(np.arange(len(self)))
        rows.dtype = np.dtype(dtype)
        return rows

    def fingerprint(self, name: str) -> bytes:
        """The digest :meth:`Split.fingerprint` takes for this input: the same bytes as for the
        decoded array (name, dtype, shape, then the rows), computed once per object."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(name.encode() + str(self.dtype).encode() + str(self.shape).encode())
            for part in row_chunks(self):
                h.update(memoryview(np.ascontiguousarray(part)))
            self._fingerprint = h.hexdigest()
        return self._fingerprint.encode()


def is_lazy(a) -> bool:
    return isinstance(a, LazyRows)


class BatchDataset:
    """A ``torch.utils.data.Dataset`` whose items are whole batches: ``dataset[index]`` (an
    index array) is ``(index, inputs, y)`` with every input's rows decoded. A DataLoader over it
    (``batch_size=None``, the batches' indices as its sampler) decodes one batch per worker."""

    def __init__(self, inputs: dict, y: np.ndarray | None) -> None:
        self.inputs, self.y = inputs, y

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def __getitem__(self, index):
        index = np.asarray(index, dtype=np.int64)
        rows = {
            k: (v[index] if is_lazy(v) else np.asarray(v[index])) for k, v in self.inputs.items()
        }
        return index, rows, None if self.y is None else self.y[index]


@contextlib.contextmanager
def stream_batches(
    inputs: dict, y: np.ndarray | None, order: Sequence[np.ndarray] | Iterable[np.ndarray]
) -> Iterator[Iterator[tuple[np.ndarray, dict, np.ndarray | None]]]:
    """``(index, inputs, y)`` for each index array of ``order``, in that order, decoded by a
    DataLoader's worker processes (as many as the lazy inputs ask for; 0: in this process).
    The workers end when the block does, also on an error or a signal."""
    import torch.utils.data

    workers = max((v.workers for v in inputs.values() if is_lazy(v)), default=0)
    order = list(order)
    loader = torch.utils.data.DataLoader(
        BatchDataset(inputs, y),
        sampler=order,
        batch_size=None,  # the sampler's items are whole batches already
        num_workers=workers,
        collate_fn=None,
        prefetch_factor=2 if workers else None,
    )
    it = iter(loader)
    try:
        yield (_numpy(item) for item in it)
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _numpy(item):
    # batch_size=None still converts numpy arrays to tensors (default_convert); undo that
    index, rows, y = item
    return (
        np.asarray(index),
        {k: np.asarray(v) for k, v in rows.items()},
        None if y is None else np.asarray(y),
    )
