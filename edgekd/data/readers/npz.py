"""``.npz`` data, and the same arrays as ``.npy`` files: one array per model input (named after
the input; ``x`` for a single-input model) plus, optionally, integer class labels (``y``, or the
name given as the label column).

A ``.npy`` file is the single input ``x``; a folder of ``.npy`` files holds one file per array,
named like the ``.npz`` keys (``x.npy``, ``y.npy``). Large arrays stay on disk, memory-mapped
(``edgekd.data.mapped``): ``.npy`` files always, ``.npz`` members when the file is uncompressed
(``np.savez``, not ``np.savez_compressed``, whose members must be read whole).

Read with ``allow_pickle=False``: an object array would be a pickle, and is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.mapped import load_npy, npz_members
from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError


def read_npz(path: Path, label: str = "y") -> Source:
    mapped = npz_members(path) or {}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: mapped[k] if k in mapped else z[k] for k in z.files}
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise DataError(f"{path}: holds object arrays (pickles); they are not loaded") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except Exception as exc:  # zipfile/OSError/EOFError: all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return source_of(path, arrays, label)


def is_npy_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.npy"))


def read_npy(path: Path, label: str = "y") -> Source:
    """A ``.npy`` file (the input ``x``) or a folder of ``.npy`` files (one per array)."""
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    arrays = {}
    for file in files:
        try:
            arrays["x" if file == path else file.stem] = load_npy(file)
        except ValueError as exc:
            if "Object arrays" in str(exc):
                raise DataError(f"{file}: holds an object array (a pickle); not loaded") from None
            raise DataError(f"{file}: not a readable .npy file ({exc})") from None
        except OSError as exc:
            raise DataError(f"{file}: not a readable .npy file ({exc})") from None
    return source_of(path, arrays, label)


def source_of(path: Path, arrays: dict[str, np.ndarray], label: str) -> Source:
    """The arrays checked (numeric inputs with samples first, integer labels) as a Source."""
    y = arrays.pop(label, None)
    if not arrays:
        raise DataError(f"{path}: no input arrays besides {label!r}")
    for name, a in arrays.items():
        if a.ndim == 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise DataError(
                f"{path}: array {name!r} is {a.dtype}{list(a.shape)}; inputs must be numeric "
                "arrays with samples first"
            )
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(
                f"{path}: array {label!r} must hold integer class labels, one per sample, "
                f"got {y.dtype}{list(y.shape)}"
            )
        if y.size and y.min() < 0:
            raise DataError(f"{path}: array {label!r} has negative class labels")
        y = np.asarray(y).astype(np.int64)  # labels are small: held in memory
    try:
        split = Split(arrays, y)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return Source(path.stem, split)
