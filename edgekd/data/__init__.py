"""Data sets behind one small interface: named input arrays plus optional labels, split three ways.

The embedded default is scikit-learn's digits (1,797 real 8x8 handwritten digits that ship with
scikit-learn, so nothing is downloaded). ``mnist1d`` generates the MNIST-1D benchmark locally
(Greydanus 2020, https://arxiv.org/abs/2011.14439) when the optional package is installed.
A user's data (``.npz``, ``.csv``, an image folder, a factory) is read by ``edgekd.data.readers``
and split here. The types, :class:`Split` and :class:`DataBundle`, live in ``edgekd.data.split``
(re-exported here). Arrays keep the dtype they were stored with;
``edgekd.data.inputs.check_inputs`` fits them to a model (and says what does not fit) before any
training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgekd.data.split import INPUT_KINDS, DataBundle, Split
from edgekd.errors import DataError

__all__ = [
    "BUILT_IN",
    "INPUT_KINDS",
    "DataBundle",
    "Split",
    "input_kind_of",
    "is_token_ids",
    "load_data",
    "load_digits_default",
    "load_eval_data",
    "load_mnist1d",
    "load_npz",
    "random_split",
    "split_bundle",
    "stratified_split",
]


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices per class so that each part keeps the class balance; reproducible by seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        bounds = np.cumsum([0] + [round(f * len(idx)) for f in fractions[:-1]] + [len(idx)])
        bounds = np.minimum(bounds, len(idx))
        for i in range(len(fractions)):
            parts[i].extend(idx[bounds[i] : bounds[i + 1]].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


SPLIT_FRACTIONS = {
    # (val given, test given) -> fractions of the training data for the splits still needed
    (False, False): ((0.7, 0.1, 0.2), ("train", "val", "test")),
    (False, True): ((0.9, 0.1), ("train", "val")),
    (True, False): ((0.8, 0.2), ("train", "test")),
    (True, True): ((1.0,), ("train",)),
}


def random_split(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` at random in the given proportions; reproducible by seed."""
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + [round(f * n) for f in fractions[:-1]] + [n])
    bounds = np.minimum(bounds, n)
    return [np.sort(order[bounds[i] : bounds[i + 1]]) for i in range(len(fractions))]


def split_bundle(
    name: str,
    full: Split,
    seed: int,
    val: Split | None = None,
    test: Split | None = None,
    class_names: tuple[str, ...] = (),
) -> DataBundle:
    """Split ``full`` into whatever of train/val/test was not given, stratified when labelled.

    The split note (recorded in the report) says how, and with which seed.
    """
    fractions, names = SPLIT_FRACTIONS[(val is not None, test is not None)]
    if len(fractions) == 1:
        splits = {"train": full}  # all of it, in its order: nothing to copy
    else:
        if full.y is not None:
            parts = stratified_split(full.y, fractions, seed)
        else:
            parts = random_split(full.n, fractions, seed)
        splits = dict(zip(names, (full.part(p) for p in parts), strict=True))
    given = [n for n, s in (("val", val), ("test", test)) if s is not None]
    how = "stratified" if full.y is not None else "random (no labels)"
    shares = "/".join(str(round(f * 100)) for f in fractions)
    if given:
        note = f"given {' and '.join(given)} data; "
        note += (
            f"training data split {how} {shares} {'/'.join(names)}, seed {seed}"
            if len(names) > 1
            else "all of the training data used for training"
        )
    else:
        note = f"{how} {shares} train/val/test split of {full.n} samples, seed {seed}"
    val = val if val is not None else splits["val"]
    test = test if test is not None else splits["test"]
    labels = [s.y for s in (full, val, test) if s.y is not None and len(s.y)]
    num_classes = max([len(class_names)] + [int(y.max()) + 1 for y in labels])
    if num_classes and any(s.y is not None and s.y.size and s.y.min() < 0 for s in (val, test)):
        raise DataError(f"{name}: class labels must be >= 0")
    kind = input_kind_of(full.inputs)
    return DataBundle(name, splits["train"], val, test, num_classes, kind, note, class_names)


def _three_way(
    name: str,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    kind: str,
    seed: int,
    num_classes: int,
    test: Split | None = None,
) -> DataBundle:
    bundle = split_bundle(name, Split(x, y), seed, test=test)
    return DataBundle(
        name, bundle.train, bundle.val, bundle.test, num_classes, kind, bundle.split_note
    )


def load_digits_default(seed: int = 0) -> DataBundle:
    """scikit-learn's digits as 1x8x8 images scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    return _three_way("digits", {"x": x}, y, "image", seed, 10)


def load_mnist1d(seed: int = 0) -> DataBundle:
    """MNIST-1D generated locally: 4,000 train / 1,000 test sequences of length 40, 10 classes."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("data 'mnist1d' needs the mnist1d package: pip install mnist1d") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        d = make_dataset(get_dataset_args())
    x = d["x"].astype(np.float32)[:, None, :]
    x_test = d["x_test"].astype(np.float32)[:, None, :]
    test = Split({"x": x_test}, d["y_test"].astype(np.int64))
    return _three_way("mnist1d", {"x": x}, d["y"].astype(np.int64), "sequence", seed, 10, test)


def _kind_of(shape: tuple[int, ...], dtype: np.dtype) -> str:
    if np.issubdtype(dtype, np.integer):
        return "tokens"
    return {1: "vector", 2: "sequence", 3: "image"}.get(len(shape), "vector")


def input_kind_of(inputs: dict[str, np.ndarray]) -> str:
    """``image``/``sequence``/``vector`` by rank for one float input; ``tokens`` when integer ids
    are among the inputs (an attention mask alone is not ids); ``multi`` for several float inputs.
    """
    if len(inputs) == 1:
        (a,) = inputs.values()
        return _kind_of(a.shape[1:], a.dtype)
    ids = [k for k, a in inputs.items() if is_token_ids(k, a)]
    return "tokens" if ids else "multi"


def is_token_ids(name: str, a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer) and "mask" not in name.lower()


def load_npz(path: str | Path, seed: int = 0, test_path: str | Path | None = None) -> DataBundle:
    """A ``.npz`` with one array per model input plus, optionally, ``y`` (integer class labels)."""
    return load_data(str(path), seed, test_data=None if test_path is None else str(test_path))


BUILT_IN = ("digits", "mnist1d")


def load_data(
    spec: str | None = None,
    seed: int = 0,
    test_data: str | None = None,
    val_data: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    data_workers: int | None = None,
    normalize: str = "none",
) -> DataBundle:
    """Resolve ``--data``: None or ``digits`` (default), ``mnist1d``, or a user's data set.

    A user's data is a ``.npz`` (one array per model input, ``y`` for labels), a ``.csv`` (feature
    columns plus a label column), a folder of images in class sub-folders, or
    ``pkg.module:factory`` / ``file.py:factory``. ``test_data`` and ``val_data`` name held-out data
    in the same format; what is not given is split off the training data (seeded). Labels are
    optional: a transfer set without them is distilled from the teacher's outputs alone.
    ``image_size`` (``--image-size``): images of a folder resized and centre-cropped to it.
    ``data_workers`` (``--data-workers``): processes decoding a large image folder's batches
    (``edgekd.data.stream``; None: one per spare core). ``normalize`` (``--normalize``): the
    bundle's ``normalization`` (``edgekd.data.normalize``), from its training split.

    >>> bundle = load_data("train.npz", seed=0, test_data="test.npz")  # doctest: +SKIP
    """
    bundle = _load(spec, seed, test_data, val_data, label_column, image_size, data_workers)
    if normalize == "none":
        return bundle
    from edgekd.data.normalize import normalization_for

    norm = normalization_for(normalize, bundle.train, seed)
    return dataclasses.replace(bundle, normalization=norm)


def _load(spec, seed, test_data, val_data, label_column, image_size, data_workers) -> DataBundle:
    if spec in (None, "", *BUILT_IN):
        if test_data or val_data or image_size:
            raise DataError(
                "--test-data, --val-data and --image-size go with a --data file, folder or factory"
            )
        return load_mnist1d(seed) if spec == "mnist1d" else load_digits_default(seed)
    from edgekd.data.inputs import check_loaded
    from edgekd.data.readers import read_data

    label = label_column or "y"
    source = read_data(spec, label_column, image_size=image_size, data_workers=data_workers)
    for split in (source.train, source.val, source.test):  # a factory may hand over all three
        if split is not None:
            check_loaded(spec, split, label)
    classes = source.class_names

    def held_out(path: str) -> Split:  # read with the training data's class names
        split = read_data(path, label_column, classes, image_size, data_workers).train
        check_loaded(path, split, label)
        return split

    val = held_out(val_data) if val_data else source.val
    test = held_out(test_data) if test_data else source.test
    return split_bundle(source.name, source.train, seed, val, test, classes)


def load_eval_data(spec: str, label_column: str | None = None) -> Split:
    """All of a data file (any ``--data`` format) as one split, to measure a model on it, as
    ``edgekd bench --data FILE`` does. Fit it to the model with ``edgekd.data.inputs.check_inputs``.

    >>> split = load_eval_data("holdout.csv", label_column="kind")  # doctest: +SKIP
    """
    if spec in BUILT_IN:
        return (load_mnist1d() if spec == "mnist1d" else load_digits_default()).test
    from edgekd.data.inputs import check_loaded
    from edgekd.data.readers import read_data

    source = read_data(spec, label_column)
    split = source.train
    if source.val is not None or source.test is not None:
        split = source.test or source.val  # a factory's held-out split
    check_loaded(spec, split, label_column or "y")
    return split
