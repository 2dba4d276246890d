"""Transfer-set augmentation per input kind, for consistent teaching ("function matching").

Knowledge distillation: A good teacher is patient and consistent (Beyer et al., CVPR 2022),
https://arxiv.org/abs/2106.05237 - the teacher must see exactly the student's augmented view, so
an augmenter is applied once per batch and both models are run on its output.

Levels: ``none``, ``light`` (label-preserving jitter), ``strong`` (jitter plus mixup; a mixed
batch has no hard labels, so only the teacher's outputs teach it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekd.data import Split
from edgekd.errors import BadInputError

LEVELS = ("none", "light", "strong")


@dataclass(frozen=True)
class Augmenter:
    """``augmenter(batch, rng) -> batch`` plus a description for the report."""

    name: str
    ops: tuple[Callable[[Split, np.random.Generator], Split], ...]

    def __call__(self, batch: Split, rng: np.random.Generator) -> Split:
        for op in self.ops:
            batch = op(batch, rng)
        return batch


def _map_float_inputs(batch: Split, fn) -> Split:
    inputs = {
        k: (fn(v) if np.issubdtype(v.dtype, np.floating) else v) for k, v in batch.inputs.items()
    }
    return Split(inputs, batch.y)


def shift(max_frac: float) -> Callable[[Split, np.random.Generator], Split]:
    """Shift each sample along its last axis (sequences) or last two axes (images) by up to
    ``max_frac`` of the length, filling with zeros (a random crop of a zero-padded input)."""

    def op(batch: Split, rng: np.random.Generator) -> Split:
        def apply(x: np.ndarray) -> np.ndarray:
            out = np.zeros_like(x)
            axes = (-2, -1) if x.ndim >= 4 else (-1,)
            for i in range(len(x)):
                shifts = [
                    int(rng.integers(-m, m + 1))
                    for m in (max(1, round(x.shape[a] * max_frac)) for a in axes)
                ]
                out[i] = _shift_fill(x[i], shifts, axes)
            return out

        return _map_float_inputs(batch, apply)

    return op


def _shift_fill(x: np.ndarray, shifts: list[int], axes: tuple[int, ...]) -> np.ndarray:
    out = np.zeros_like(x)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    for s, a in zip(shifts, axes, strict=True):
        n = x.shape[a]
        if s >= 0:
            src[a], dst[a] = slice(0, n - s), slice(s, n)
        else:
            src[a], dst[a] = slice(-s, n), slice(0, n + s)
    out[tuple(dst)] = x[tuple(src)]
    return out


def noise(rel_std: float) -> Callable[[Split, np.random.Generator], Split]:
    """Gaussian noise with ``rel_std`` times the batch's per-feature standard deviation."""

    def op(batch: Split, rng: np.random.Generator) -> Split:
        def apply(x: np.ndarray) -> np.ndarray:
            scale = x.std(axis=0, keepdims=True) * rel_std
            return (x + rng.standard_normal(x.shape).astype(x.dtype) * scale).astype(x.dtype)

        return _map_float_inputs(batch, apply)

    return op


def hflip(p: float = 0.5) -> Callable[[Split, np.random.Generator], Split]:
    def op(batch: Split, rng: np.random.Generator) -> Split:
        flip = rng.random(batch.n) < p

        def apply(x: np.ndarray) -> np.ndarray:
            out = x.copy()
            out[flip] = out[flip][..., ::-1]
            return out

        return _map_float_inputs(batch, apply)

    return op


def mixup(alpha: float = 0.4) -> Callable[[Split, np.random.Generator], Split]:
    """Mix each sample with a random partner (Zhang et al. 2018); labels no longer apply."""

    def op(batch: Split, rng: np.random.Generator) -> Split:
        lam = rng.beta(alpha, alpha, size=batch.n).astype(np.float32)
        partner = rng.permutation(batch.n)

        def apply(x: np.ndarray) -> np.ndarray:
            w = lam.reshape((-1,) + (1,) * (x.ndim - 1))
            return (w * x + (1 - w) * x[partner]).astype(x.dtype)

        mixed = _map_float_inputs(batch, apply)
        return Split(mixed.inputs, None)

    return op


def token_mask(p: float = 0.1, mask_id: int = 0) -> Callable[[Split, np.random.Generator], Split]:
    """Replace a share ``p`` of integer tokens with ``mask_id`` (attention masks untouched)."""

    def op(batch: Split, rng: np.random.Generator) -> Split:
        inputs = {}
        for k, v in batch.inputs.items():
            if np.issubdtype(v.dtype, np.integer) and "mask" not in k:
                v = np.where(rng.random(v.shape) < p, mask_id, v).astype(v.dtype)
            inputs[k] = v
        return Split(inputs, batch.y)

    return op


POLICIES: dict[tuple[str, str], tuple[str, tuple]] = {
    ("image", "light"): ("shift 1/8 (random crop)", (shift(0.125),)),
    ("image", "strong"): ("shift 1/8 + noise 0.1 + mixup", (shift(0.125), noise(0.1), mixup())),
    ("sequence", "light"): ("shift 1/10 + noise 0.05", (shift(0.1), noise(0.05))),
    ("sequence", "strong"): ("shift 1/10 + noise 0.1 + mixup", (shift(0.1), noise(0.1), mixup())),
    ("vector", "light"): ("noise 0.05", (noise(0.05),)),
    ("vector", "strong"): ("noise 0.1 + mixup", (noise(0.1), mixup())),
    ("tokens", "light"): ("mask 10% of tokens", (token_mask(0.1),)),
    ("tokens", "strong"): ("mask 20% of tokens", (token_mask(0.2),)),
}


def make_augmenter(input_kind: str, level: str) -> Augmenter | None:
    """The policy for this input kind at this level; ``None`` for ``none``."""
    if level not in LEVELS:
        raise BadInputError(f"--augment must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "none":
        return None
    if (input_kind, level) not in POLICIES:
        raise BadInputError(f"no augmentation policy for {input_kind} inputs")
    name, ops = POLICIES[(input_kind, level)]
    return Augmenter(f"{level}: {name}", ops)
