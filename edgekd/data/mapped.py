"""Memory-mapped arrays: data sets larger than memory, read from ``.npy`` files and uncompressed
``.npz`` members as the rows are used.

Arrays of at least :data:`MAP_MIN_BYTES` stay on disk, mapped copy-on-write (``mmap_mode="c"``:
numpy and torch may treat them as writable, and no write ever reaches the user's file); smaller
ones are read whole, as before (mapping a small file saves nothing). A subset of a mapped array
(a train/val/test split) is written to an unnamed file beside the cache and mapped in turn
(:func:`take_rows`), and every whole-array pass (:func:`row_chunks`: hashing, copying) lets the
pages it read go after each chunk: peak memory grows with the chunk, not with the data.
"""

from __future__ import annotations

import mmap
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MAP_MIN_BYTES = 64 << 20  # below this an array is read into memory
CHUNK_BYTES = 8 << 20  # rows per chunk of a whole-array pass: about this many bytes
FAULT_AROUND = 2 << 20  # a multiple of the page size


def load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file: mapped when large, else read whole (``allow_pickle=False``)."""
    mapped = np.load(path, mmap_mode="c", allow_pickle=False)
    if mapped.nbytes >= MAP_MIN_BYTES and not mapped.dtype.hasobject:
        return mapped
    return np.load(path, allow_pickle=False)


def npz_members(path: Path) -> dict[str, np.ndarray] | None:
    """The large members of an uncompressed ``.npz``, each mapped at its offset inside the zip
    (numpy's own ``np.load`` cannot map a member). None when a member is compressed, encrypted
    or not a plain array: the caller then reads the file whole. Small members are left out (the
    caller reads them)."""
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            infos = zf.infolist()
            if any(i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 1 for i in infos):
                return None
            arrays = {}
            for info in infos:
                a = _map_member(path, fh, info)
                if a is None:
                    return None
                if a.nbytes >= MAP_MIN_BYTES:
                    arrays[info.filename.removesuffix(".npy")] = a
            return arrays
    except (OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None


def _map_member(path: Path, fh, info: zipfile.ZipInfo) -> np.ndarray | None:
    """One stored ``.npy`` member mapped where its bytes start (after the zip's local header and
    the ``.npy`` header)."""
    if not info.filename.endswith(".npy"):
        return None
    fh.seek(info.header_offset)
    local = fh.read(30)
    if local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        return None
    if dtype.hasobject or 0 in shape:
        return None
    order = "F" if fortran else "C"
    return np.memmap(path, dtype, "c", fh.tell(), shape, order)


def row_chunks(a: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """``a`` in consecutive row blocks of about ``chunk_bytes``; the pages of a mapped ``a`` leave
    the process after each block (:func:`_release`)."""
    rows = max(1, chunk_bytes // max(1, a[:1].nbytes))
    for start in range(0, len(a), rows):
        yield a[start : start + rows]
        _release(a, start, start + rows)


def batch_rows(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``a[index]`` in memory (a batch). From a mapped ``a`` the rows are read one window of the
    file at a time, in file order, and each window's pages leave the process before the next is
    read, so that neither a batch nor an epoch gathers data larger than memory in memory."""
    if not _releasable(a) or len(index) < 2:
        return a[index]
    out = np.empty((len(index), *a.shape[1:]), a.dtype)
    order = np.argsort(index, kind="stable")
    rows = index[order]
    window = (a.offset + rows * a[:1].nbytes) // FAULT_AROUND
    cuts = [0, *(np.flatnonzero(np.diff(window)) + 1).tolist(), len(rows)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        out[order[lo:hi]] = a[rows[lo:hi]]
        _release(a, int(rows[lo]), int(rows[hi - 1]) + 1)
    return out


def take_rows(a: np.ndarray, index: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """``a[index]``: in memory for an in-memory ``a``; for a mapped ``a``, written chunk by chunk
    to an unnamed file in the cache folder (not /tmp, often memory itself) and mapped, so that a
    train/val/test split of data larger than memory never holds it in memory."""
    if not isinstance(a, np.memmap) or not len(index):
        return a[index]
    from edgekd.cache import cache_dir

    rows = max(1, chunk_bytes // max(1, a[:1].nbytes))
    if np.all(index[:-1] <= index[1:]):
        # sorted (as the splits are): a chunk is the index's rows within one block of the file,
        # since the kernel maps the pages around each row read, and sparse rows span the file
        bounds = np.searchsorted(index, np.arange(0, len(a) + rows, rows))
    else:
        bounds = np.arange(0, len(index) + rows, rows)
    with tempfile.TemporaryFile(dir=cache_dir()) as fh:  # gone when the last mapping is
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                fh.write(memoryview(np.ascontiguousarray(a[index[lo:hi]])))
                _release(a, int(index[lo]), int(index[hi - 1]) + 1)
        fh.flush()
        return np.memmap(fh, a.dtype, "c", 0, (len(index), *a.shape[1:]))


def _release(a: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows ``start:stop`` of a mapped ``a`` from this process (MADV_DONTNEED;
    read from the file again when used), so that a pass over the whole array does not keep it
    all: mapped pages count in the process's memory. Nothing for other arrays. The mappings are
    copy-on-write and edgekd never writes to them, so nothing is lost."""
    if not _releasable(a):
        return
    base = a.base
    row = a[:1].nbytes
    skip = a.offset % mmap.ALLOCATIONGRANULARITY  # numpy maps from an aligned offset
    # Linux maps more than the page read: cached pages around it ("fault-around") and the whole
    # of a large folio (up to 2 MiB) the page cache holds it in; drop that window too
    lo = skip + start * row
    lo -= lo % FAULT_AROUND
    hi = min(len(base), -(-(skip + stop * row) // FAULT_AROUND) * FAULT_AROUND)
    if hi > lo:
        base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _releasable(a: np.ndarray) -> bool:
    """Whether ``a`` is a whole mapping (not a view: its offset would be the parent's) with rows
    contiguous in the file, on a platform that can drop pages."""
    return (
        isinstance(a, np.memmap)
        and isinstance(a.base, mmap.mmap)
        and a.flags.c_contiguous
        and hasattr(mmap, "MADV_DONTNEED")
    )
