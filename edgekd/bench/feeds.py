"""Benchmark inputs: the test split mapped onto a model's inputs, or random inputs of its shape.

The timed feed is the first ``batch_size`` test samples (or random values when there is no data);
the larger-batch throughput feed repeats the test samples up to its size. A model with a fixed batch
axis gets only that batch size; a mismatch with the target's is bad input, said once, up front.
"""

from __future__ import annotations

import numpy as np

from edgekd.bench.sources import InputSpec
from edgekd.errors import BadInputError, DataError


def _fmt_shape(batch: int | None, sample: tuple[int | None, ...]) -> str:
    dims = ["batch" if batch is None else str(batch)] + [
        "?" if d is None else str(d) for d in sample
    ]
    return "(" + ", ".join(dims) + ")"


def map_data(
    model: str, inputs: tuple[InputSpec, ...], data: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``data`` (name -> samples-first array) renamed, checked and cast for the model's inputs.

    One input on each side is matched whatever the names; otherwise names must match. A static
    dimension of the model must equal the data's; the dtype is cast within its kind (float/int).
    """
    if not inputs:  # a torch model of unknown shape: feed the data as it is, in order
        return dict(data)
    if len(inputs) == 1 and len(data) == 1:
        pairs = [(inputs[0], next(iter(data.values())))]
    else:
        missing = [i.name for i in inputs if i.name not in data]
        if missing:
            raise DataError(
                f"{model}: the data has no array for input(s) {', '.join(missing)} "
                f"(it has {', '.join(data)})"
            )
        pairs = [(i, data[i.name]) for i in inputs]
    out = {}
    for spec, array in pairs:
        sample = array.shape[1:]
        fits = len(sample) == len(spec.sample_shape) and all(
            d is None or d == s for d, s in zip(spec.sample_shape, sample, strict=True)
        )
        if not fits:
            raise DataError(
                f"{model}: input '{spec.name}' expects shape "
                f"{_fmt_shape(spec.batch, spec.sample_shape)} but the data gives "
                f"{_fmt_shape(None, tuple(sample))}"
            )
        want = np.dtype(spec.dtype)
        if array.dtype != want:
            if np.issubdtype(array.dtype, np.floating) != np.issubdtype(want, np.floating):
                raise DataError(
                    f"{model}: input '{spec.name}' expects {want.name} but the data holds "
                    f"{array.dtype.name}"
                )
            array = array.astype(want)
        out[spec.name] = array
    return out


def random_inputs(
    model: str, inputs: tuple[InputSpec, ...], batch_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Standard-normal floats (zeros for integer inputs) of the model's input shapes."""
    if not inputs:
        raise BadInputError(
            f"{model}: its input shape is unknown (a factory without edgekd_arch); give --data"
        )
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        if any(d is None for d in spec.sample_shape):
            raise BadInputError(
                f"{model}: input '{spec.name}' has a dynamic dimension "
                f"{_fmt_shape(spec.batch, spec.sample_shape)}; give --data so its shape is known"
            )
        shape = (batch_size, *spec.sample_shape)
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:  # token ids and the like: 0 is a valid id for any vocabulary
            out[spec.name] = np.zeros(shape, dtype=dtype)
    return out


def fixed_batch(inputs: tuple[InputSpec, ...]) -> int | None:
    """The batch size the model's graph fixes, or None when the batch axis is dynamic."""
    fixed = {i.batch for i in inputs if i.batch is not None}
    return fixed.pop() if len(fixed) == 1 else None


def take_batch(samples: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` samples, repeating the set when it holds fewer."""
    out = {}
    for name, array in samples.items():
        reps = -(-n // len(array))
        repeated = np.concatenate([array] * reps) if reps > 1 else array
        out[name] = np.ascontiguousarray(repeated[:n])
    return out
