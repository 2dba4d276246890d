"""Data from a factory: ``pkg.module:factory`` or ``file.py:factory`` returning the data.

The factory takes no arguments and returns one of:

- a ``dict`` with ``"train"`` and optionally ``"val"``, ``"test"`` and ``"class_names"``;
- just the training data.

Each split is an ``edgekd.data.Split``, a dict of arrays (inputs, plus ``"y"`` for labels), or a
tuple ``(x, y)`` where ``x`` is an array (the single input ``x``) or a dict of arrays and ``y`` may
be None. Splits that are not given are split off the training data (seeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError

SPLIT_KEYS = ("train", "val", "test")


def read_factory(spec: str) -> Source:
    from edgekd.usercode import call_factory

    result = call_factory(spec, "data")
    if isinstance(result, Mapping) and "train" in result:
        unknown = set(result) - {*SPLIT_KEYS, "class_names"}
        if unknown:
            raise DataError(
                f"{spec}: unknown keys {sorted(unknown)} (expected train, val, test, class_names)"
            )
        splits = {k: _as_split(result[k], spec, k) for k in SPLIT_KEYS if result.get(k) is not None}
        names = tuple(str(n) for n in result.get("class_names") or ())
    else:
        splits, names = {"train": _as_split(result, spec, "train")}, ()
    name = spec.rsplit(":", 1)[-1]
    return Source(name, splits["train"], names, splits.get("val"), splits.get("test"))


def _as_split(obj: Any, spec: str, which: str) -> Split:
    where = f"{spec} ({which})"
    if isinstance(obj, Split):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        x, y = obj
        inputs = dict(x) if isinstance(x, Mapping) else {"x": x}
    elif isinstance(obj, Mapping):
        inputs = dict(obj)
        y = inputs.pop("y", None)
    else:
        raise DataError(
            f"{where}: expected a Split, a dict of arrays or an (x, y) tuple, "
            f"got {type(obj).__name__}"
        )
    arrays = {}
    for k, v in inputs.items():
        a = np.asarray(v)
        if a.ndim == 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise DataError(f"{where}: input {k!r} is not a numeric array with samples first")
        arrays[str(k)] = a
    if y is not None:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{where}: labels 'y' must be integers, one per sample")
        y = y.astype(np.int64)
    try:
        return Split(arrays, y)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
