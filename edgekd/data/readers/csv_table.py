"""CSV data: a header row, numeric feature columns, and an optional label column.

The label column is ``--label-column`` (default ``label`` when the header has one). Labels that
are all integers are class indices; otherwise they are class names, numbered in sorted order
(a held-out file uses the training file's numbering). Features become one float32 input ``x``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError


def read_csv(path: Path, label_column: str | None, classes: tuple[str, ...] = ()) -> Source:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh, delimiter=delimiter) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column is not None and label_column not in header:
        raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(header)})")
    label = label_column or ("label" if "label" in header else None)
    features = [i for i, h in enumerate(header) if h != label]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label column {label!r}")
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float32)
    labels: list[str] = []
    li = header.index(label) if label is not None else None
    for r, row in enumerate(rows[1:]):
        line = r + 2
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, but the header has {len(header)}"
            )
        for j, i in enumerate(features):
            try:
                x[r, j] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{path} line {line}, column {header[i]!r}: {row[i]!r} is not a number"
                ) from None
        if li is not None:
            labels.append(row[li].strip())
    if li is None:
        return Source(path.stem, Split({"x": x}))
    y, names = _encode_labels(labels, classes, path)
    return Source(path.stem, Split({"x": x}, y), names)


def _encode_labels(
    labels: list[str], classes: tuple[str, ...], path: Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    if not classes and all(_is_int(v) for v in labels):
        y = np.array([int(v) for v in labels], dtype=np.int64)
        if y.min() < 0:
            raise DataError(f"{path}: class labels must be >= 0, found {y.min()}")
        return y, ()
    names = classes or tuple(sorted(set(labels)))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(
            f"{path}: labels {', '.join(map(repr, unknown[:3]))} are not classes of the "
            f"training data ({', '.join(names[:10])})"
        )
    return np.array([index[v] for v in labels], dtype=np.int64), names


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
