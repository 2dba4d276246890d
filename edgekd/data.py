"""Data sets behind one small interface: named input arrays plus optional labels, split three ways.

The embedded default is scikit-learn's digits (1,797 real 8x8 handwritten digits that ship with
scikit-learn, so nothing is downloaded). ``mnist1d`` generates the MNIST-1D benchmark locally
(Greydanus 2020, https://arxiv.org/abs/2011.14439) when the optional package is installed.
A user's ``.npz`` holds one array per model input (``x`` for a single-input model) and ``y``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import DataError

INPUT_KINDS = ("image", "vector", "sequence", "tokens")


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
        return Split(
            {k: v[index] for k, v in self.inputs.items()},
            None if self.y is None else self.y[index],
        )

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, Split]]:
        """Yield ``(index, batch)``; shuffled when ``rng`` is given."""
        order = rng.permutation(self.n) if rng is not None else np.arange(self.n)
        for start in range(0, self.n, batch_size):
            index = order[start : start + batch_size]
            yield index, self.take(index)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.inputs):
            a = np.ascontiguousarray(self.inputs[name])
            h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
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

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.train.inputs)

    @property
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.train.inputs.items()}

    def example_inputs(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        return {k: v[:batch_size] for k, v in self.test.inputs.items()}


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


def _three_way(
    name: str,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    kind: str,
    seed: int,
    num_classes: int,
    test: Split | None = None,
) -> DataBundle:
    full = Split(x, y)
    if test is None:
        train_idx, val_idx, test_idx = stratified_split(y, (0.7, 0.1, 0.2), seed)
        note = f"stratified 70/10/20 train/val/test split of {full.n} samples, seed {seed}"
        test = full.take(test_idx)
    else:
        train_idx, val_idx = stratified_split(y, (0.9, 0.1), seed)
        note = f"given test split; training data split 90/10 train/val, seed {seed}"
    return DataBundle(name, full.take(train_idx), full.take(val_idx), test, num_classes, kind, note)


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


def load_npz(path: str | Path, seed: int = 0, test_path: str | Path | None = None) -> DataBundle:
    """A ``.npz`` with one array per model input plus ``y`` (integer class labels)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/ValueError/OSError: all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if "y" not in arrays:
        raise DataError(f"{path}: missing array 'y' (integer class labels)")
    y = arrays.pop("y")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: array 'y' must hold integer class labels, got {y.dtype}")
    if not arrays:
        raise DataError(f"{path}: no input arrays besides 'y'")
    x = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()}
    first = next(iter(x.values()))
    kind = _kind_of(first.shape[1:], first.dtype)
    num_classes = int(y.max()) + 1
    test = _split_from_npz(Path(test_path)) if test_path else None
    return _three_way(path.stem, x, y.astype(np.int64), kind, seed, num_classes, test)


def _split_from_npz(path: Path) -> Split:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    y = arrays.pop("y", None)
    x = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()}
    return Split(x, None if y is None else y.astype(np.int64))


def load_data(spec: str | None = None, seed: int = 0, test_data: str | None = None) -> DataBundle:
    """Resolve ``--data``: None or ``digits`` (default), ``mnist1d``, or a path to a ``.npz``."""
    if spec in (None, "", "digits"):
        return load_digits_default(seed)
    if spec == "mnist1d":
        return load_mnist1d(seed)
    if spec.endswith(".npz"):
        return load_npz(spec, seed, test_data)
    raise DataError(f"unknown data {spec!r} (expected 'digits', 'mnist1d' or a .npz file)")
