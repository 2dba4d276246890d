"""Input normalisation stored with the model (``--normalize``): ``(x - mean) / std`` per channel,
computed from a seeded sample of the training data or given by the user, run by the student
itself as its first operation, so that the exported ONNX model starts with ``Sub`` and ``Div``
and a device feeds it raw pixels (the data, the teacher and every benchmark keep the raw inputs).

``--normalize`` takes ``none`` (the default: inputs as they are, as before), ``auto`` (mean and
standard deviation of each channel over :data:`AUTO_SAMPLES` training samples drawn with the
run's seed), or ``MEAN:STD`` where each side is one number for every channel or a comma list
with one number per channel (``0.485,0.456,0.406:0.229,0.224,0.225``); ``MEAN,STD`` (two
numbers) is the same as ``MEAN:STD``. The channel axis is the one after the batch: an image's
``C`` of ``[N,C,H,W]``, a sequence's ``C`` of ``[N,C,L]``, a vector's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.errors import BadInputError, DataError

AUTO_SAMPLES = 1000  # enough for a mean and std to 2-3 digits, cheap even when decoded
MIN_STD = 1e-6  # a constant channel is left unscaled (only centred): dividing by ~0 blows up


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` (one value each: every channel alike) and how they were
    chosen (``auto``: from the data; ``given``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    how: str = "given"

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise BadInputError(
                f"--normalize: {len(self.mean)} mean(s) but {len(self.std)} std(s); give one "
                "of each per channel, or one of each for all"
            )
        if any(not np.isfinite(v) for v in (*self.mean, *self.std)):
            raise BadInputError("--normalize: means and stds must be finite numbers")
        if any(s <= 0 for s in self.std):
            raise BadInputError(f"--normalize: stds must be > 0, got {list(self.std)}")

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "how": self.how}

    def describe(self) -> str:
        def nums(v):
            return ", ".join(f"{x:.4g}" for x in v)

        src = f"from {AUTO_SAMPLES} training samples" if self.how == "auto" else "given"
        return f"(x - [{nums(self.mean)}]) / [{nums(self.std)}] per channel ({src}), in the model"


def parse_normalize(text: str) -> Normalization | str:
    """``none``/``auto`` as they are, or the given :class:`Normalization` (see the module)."""
    text = text.strip()
    if text.lower() in ("none", "auto"):
        return text.lower()
    if ":" in text:
        mean_text, _, std_text = text.partition(":")
    elif text.count(",") == 1:
        mean_text, _, std_text = text.partition(",")
    else:
        raise BadInputError(
            f"--normalize {text!r}: expected auto, none, MEAN:STD or per-channel lists "
            "M1,M2,M3:S1,S2,S3"
        )
    try:
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise BadInputError(f"--normalize {text!r}: means and stds must be numbers") from None
    return Normalization(mean, std, "given")


def normalization_for(spec: str, train, seed: int) -> Normalization | None:
    """``--normalize``'s :class:`Normalization` for the training split ``train`` (None for
    ``none``), checked against its input: one float input whose channel count it fits."""
    chosen = parse_normalize(spec)
    if chosen == "none":
        return None
    if len(train.inputs) != 1:
        raise DataError(f"--normalize applies to data with one input, not {list(train.inputs)}")
    ((name, x),) = train.inputs.items()
    if not np.issubdtype(x.dtype, np.floating) or x.ndim < 2:
        raise DataError(f"--normalize: input {name!r} is {x.dtype} {list(x.shape[1:])}, not floats")
    channels = x.shape[1]
    if chosen == "auto":
        return _from_sample(x, seed)
    if len(chosen.mean) not in (1, channels):
        raise DataError(
            f"--normalize: {len(chosen.mean)} means for input {name!r} with {channels} channels "
            f"(shape {list(x.shape[1:])}); give 1 or {channels}"
        )
    return chosen


def _from_sample(x, seed: int) -> Normalization:
    n = len(x)
    pick = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, AUTO_SAMPLES)])
    sample = np.asarray(x[pick], dtype=np.float64)
    axes = (0, *range(2, sample.ndim))
    mean, std = sample.mean(axis=axes), sample.std(axis=axes)
    std = np.where(std < MIN_STD, 1.0, std)
    return Normalization(tuple(map(float, mean)), tuple(map(float, std)), "auto")


class _Normalize:
    """A forward pre-hook: the model's first input becomes ``(x - mean) / std`` (traced into
    the ONNX graph as its first ``Sub`` and ``Div``)."""

    def __init__(self, norm: Normalization, ndim: int) -> None:
        import torch

        shape = (-1, *([1] * (ndim - 2)))  # broadcast over the dims after the channel
        self.mean = torch.tensor(norm.mean, dtype=torch.float32).reshape(shape)
        self.std = torch.tensor(norm.std, dtype=torch.float32).reshape(shape)

    def __call__(self, _module, args):
        x, *rest = args
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return ((x - mean) / std, *rest)


def attach_normalization(model, norm: Normalization | dict | None, sample_ndim: int | None = None):
    """``model`` normalising its first input (see :class:`_Normalize`) and recording it in its
    ``edgekd_arch`` (so that a checkpoint rebuilds it); ``model`` unchanged for None. The hook
    adds no parameter or buffer: the state dict, and initialising from the teacher, are as
    without it."""
    if norm is None:
        return model
    if isinstance(norm, dict):
        norm = Normalization(tuple(norm["mean"]), tuple(norm["std"]), norm.get("how", "given"))
    arch = getattr(model, "edgekd_arch", None)
    if sample_ndim is None:
        sample_ndim = len(arch["sample_shape"]) if arch else 3
    model.register_forward_pre_hook(_Normalize(norm, 1 + sample_ndim))
    if arch is not None:
        model.edgekd_arch = {**arch, "normalize": norm.to_dict()}
    return model
