"""``.npz`` data: one array per model input (named after the input; ``x`` for a single-input
model) plus, optionally, integer class labels (``y``, or the name given as the label column).

Read with ``allow_pickle=False``: an object array would be a pickle, and is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError


def read_npz(path: Path, label: str = "y") -> Source:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise DataError(f"{path}: holds object arrays (pickles); they are not loaded") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except Exception as exc:  # zipfile/OSError/EOFError: all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
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
        y = y.astype(np.int64)
    try:
        split = Split(arrays, y)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return Source(path.stem, split)
