"""Readers for users' data: ``.npz``, ``.npy`` files and folders, ``.csv``, image folders, and
``pkg.module:factory``.

Each reader returns a :class:`Source`: named input arrays (in the dtype they were stored with),
labels when the data has them, and class names when labels were names (CSV text labels, image
sub-folders). A held-out file is read with the training data's class names, so that "cat" means
the same class index in both. Splitting is ``edgekd.data``'s job, not the readers'.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.data.readers.source import Source
from edgekd.errors import DataError

__all__ = ["Source", "read_data"]


def read_data(
    spec: str,
    label_column: str | None = None,
    classes: tuple[str, ...] = (),
    image_size: int | None = None,
    data_workers: int | None = None,
) -> Source:
    """Read ``spec`` (a file, a folder or a factory) into a :class:`Source`. ``image_size``
    (``--image-size``): images of a folder resized and centre-cropped to that square;
    ``data_workers`` (``--data-workers``): processes decoding a large image folder's batches."""
    if image_size is not None and not _is_image_folder(spec):
        raise DataError(f"{spec}: --image-size applies to a folder of images only")
    from edgekd.usercode import parse_factory

    if parse_factory(spec) is not None and not Path(spec).exists():
        from edgekd.data.readers.factory import read_factory

        return read_factory(spec)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir() or path.suffix.lower() == ".npy":
        from edgekd.data.readers.npz import is_npy_folder, read_npy

        if not path.is_dir() or is_npy_folder(path):
            return read_npy(path, label_column or "y")
    if path.is_dir():
        from edgekd.data.readers.image_folder import read_image_folder

        return read_image_folder(path, classes, image_size, data_workers)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        from edgekd.data.readers.npz import read_npz

        return read_npz(path, label_column or "y")
    if suffix in (".csv", ".tsv"):
        from edgekd.data.readers.csv_table import read_csv

        return read_csv(path, label_column, classes)
    raise DataError(
        f"{path}: unknown data format (expected .npz, .npy, .csv, a folder of .npy files or of "
        "class sub-folders, or pkg.module:factory)"
    )


def _is_image_folder(spec: str) -> bool:
    from edgekd.data.readers.npz import is_npy_folder

    path = Path(spec)
    return path.is_dir() and not is_npy_folder(path)
