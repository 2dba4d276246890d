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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgekd.data import Split
from edgekd.errors import DataError


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
