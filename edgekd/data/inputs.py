"""What a model takes as input, and fitting data to it before any training starts.

An :class:`InputSpec` names one model input with its dtype and its per-sample shape (``None`` for
a dimension the model accepts at any size, e.g. a token sequence's length). :func:`check_inputs`
matches a split's arrays to the specs by name (a single-input model takes a single array whatever
its name, e.g. ``x``), puts them in the model's order and casts them where no value can change,
or refuses with one line such as::

    input 'x': expected float32[N,1,8,8], got float64[N,64]

Casts that are made: float to the expected float width (float64 data for a float32 model), int to
another int width when every value fits, bool or int to float. Float to int is refused: it would
silently truncate. Without a known dtype, float data becomes float32 (PyTorch's default) and
integer data stays integer (token ids must stay ids).

Before any model is involved, :func:`check_loaded` holds every file as read to what every stage
assumes, naming the file, the array and the first bad index: samples, real numbers with a feature
axis (``[N, features...]``), finite values, labels that are class indices below
:data:`MAX_CLASSES`. :func:`check_bundle` adds what training needs: a sample in each of
train/val/test, and at least two classes to tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgekd.data.mapped import row_chunks
from edgekd.data.split import DataBundle, Split
from edgekd.data.stream import LazyRows
from edgekd.errors import DataError

# The student's head has one output per class, sized from the largest label: a label of 2**40
# would ask for terabytes. A data set with more classes than this is not an edge model's job.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class InputSpec:
    """One model input: ``dtype`` is a numpy dtype name, ``shape`` excludes the batch dimension.

    ``dtype=None`` or ``shape=None`` mean "not known" (checked by running the model instead);
    ``optional`` inputs (keyword arguments with defaults) may be absent from the data.
    """

    name: str
    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        return describe(self.dtype or "any", self.shape)


def describe(dtype: str, shape: Sequence[int | None] | None) -> str:
    """``float32[N,1,8,8]``: N is the batch dimension, ``?`` a dimension of any size."""
    if shape is None:
        return f"{dtype}[N,...]"
    return f"{dtype}[" + ",".join(["N", *("?" if d is None else str(d) for d in shape)]) + "]"


def spec_from_arrays(inputs: Mapping[str, np.ndarray]) -> tuple[InputSpec, ...]:
    """Specs that fit these arrays exactly, with floats as float32 (for models built from data)."""
    specs = []
    for name, a in inputs.items():
        dtype = "float32" if np.issubdtype(a.dtype, np.floating) else str(a.dtype)
        specs.append(InputSpec(name, dtype, tuple(a.shape[1:])))
    return tuple(specs)


def check_inputs(spec: Sequence[InputSpec], split: Split, where: str = "") -> Split:
    """``split`` with its arrays named, ordered and cast as ``spec`` says; else DataError.

    >>> check_inputs([InputSpec("x", "float32", (1, 8, 8))], Split({"x": np.zeros((2, 64))}))
    Traceback (most recent call last):
    ...
    edgekd.errors.DataError: input 'x': expected float32[N,1,8,8], got float64[N,64]
    """
    prefix = f"{where}: " if where else ""
    arrays = _match_names(spec, split.inputs, prefix)
    out = {}
    for s in spec:
        if s.name in arrays:
            out[s.name] = _fit(s, arrays[s.name], prefix)
    return Split(out, split.y)


def _match_names(
    spec: Sequence[InputSpec], data: Mapping[str, np.ndarray], prefix: str
) -> dict[str, np.ndarray]:
    required = [s for s in spec if not s.optional]
    if len(spec) >= 1 and len(required) == 1 and len(data) == 1:
        # A single-input model takes the data's single array, whatever it is called ("x").
        (array,) = data.values()
        return {required[0].name: array}
    names = {s.name for s in spec}
    have = ", ".join(repr(k) for k in data)
    for s in required:
        if s.name not in data:
            raise DataError(
                f"{prefix}input {s.name!r}: missing from the data (it has {have}); "
                f"the model's inputs are {', '.join(repr(n.name) for n in spec)}"
            )
    for key in data:
        if key not in names:
            raise DataError(
                f"{prefix}data array {key!r} is not an input of the model "
                f"(its inputs: {', '.join(repr(s.name) for s in spec)})"
            )
    return dict(data)


def _fit(spec: InputSpec, array: np.ndarray, prefix: str) -> np.ndarray:
    got = describe(str(array.dtype), array.shape[1:])

    def refuse() -> DataError:
        want = describe(spec.dtype or "any", spec.shape)
        return DataError(f"{prefix}input {spec.name!r}: expected {want}, got {got}")

    if spec.shape is not None:
        sample = array.shape[1:]
        if len(sample) != len(spec.shape) or any(
            d is not None and d != g for d, g in zip(spec.shape, sample, strict=True)
        ):
            raise refuse()
    target = _target_dtype(spec.dtype, array.dtype)
    if target is None:
        raise refuse()
    if target == array.dtype:
        return array
    if np.issubdtype(target, np.integer) and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise DataError(
                f"{prefix}input {spec.name!r}: values {array.min()}..{array.max()} do not fit "
                f"the model's {target} (got {got})"
            )
    return array.astype(target)


def _target_dtype(expected: str | None, got: np.dtype) -> np.dtype | None:
    """The dtype to cast to, or None when the data cannot be made to fit without losing values."""
    if expected is None:
        return np.dtype(np.float32) if np.issubdtype(got, np.floating) else got
    want = np.dtype(expected)
    if want == got:
        return want
    if np.issubdtype(want, np.floating):
        return want  # float -> float of another width, int or bool -> float
    if np.issubdtype(want, np.integer):
        return want if (np.issubdtype(got, np.integer) or got == np.bool_) else None
    if want == np.bool_:
        return None  # 0/1 ints could be masks, but guessing is worse than saying so
    return None


# --- data as loaded ------------------------------------------------------------------------------


def check_loaded(where: str, split: Split, label: str = "y") -> None:
    """Refuse a split read from ``where`` that no stage could use, naming array and index."""
    if split.n == 0:
        raise DataError(f"{where}: no samples")
    for name, a in split.inputs.items():
        _check_array(where, name, a)
    if split.y is not None and split.y.size:
        bad = np.flatnonzero(split.y >= MAX_CLASSES)
        if bad.size:
            raise DataError(
                f"{where}: array {label!r}: label {split.y[bad[0]]} at index {bad[0]} is not a "
                f"class index (labels are 0..K-1 with K <= {MAX_CLASSES:,} classes)"
            )


def _check_array(where: str, name: str, a: np.ndarray) -> None:
    shape = list(a.shape)
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(
            f"{where}: array {name!r} is {a.dtype}{shape}; inputs must be real numbers"
        )
    if a.ndim < 2:
        raise DataError(
            f"{where}: array {name!r} is {a.dtype}{shape}: inputs need a feature axis, samples "
            f"first (e.g. [{shape[0] if shape else 'N'}, 1] for one feature per sample)"
        )
    if not np.issubdtype(a.dtype, np.floating):
        return  # integers and booleans are always finite
    if isinstance(a, LazyRows):
        return  # a streamed image folder: decoded pixels are finite, and a scan would decode all
    start = 0
    for chunk in row_chunks(a):  # a memory-mapped array is read a block at a time
        bad = ~np.isfinite(chunk)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), chunk.shape)
            index = (start + int(index[0]), *(int(i) for i in index[1:]))
            value = chunk[(index[0] - start, *index[1:])]
            raise DataError(
                f"{where}: array {name!r} holds {value} at index {list(index)} (sample "
                f"{index[0]}); inputs must be finite"
            )
        start += len(chunk)


def check_bundle(where: str, bundle: DataBundle) -> None:
    """Refuse a split data set with an empty split or a single class (nothing to tell apart)."""
    sizes = {"train": bundle.train.n, "val": bundle.val.n, "test": bundle.test.n}
    # Each split is drawn per class (stratified): with few samples a class's share rounds to none.
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise DataError(
            f"{where}: too few samples to split ({', '.join(f'{k} {n}' for k, n in sizes.items())}"
            f"): every split needs at least one; give more samples, or --val-data and --test-data"
        )
    y = bundle.train.y
    if y is not None and y.size and len(classes := np.unique(y)) < 2:
        raise DataError(
            f"{where}: every training label is class {classes[0]}; a classifier needs at least "
            "two classes"
        )
