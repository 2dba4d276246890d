"""Which student layer is matched with which teacher layer, and how their shapes are bridged.

Feature and relation methods compare a student activation with a teacher activation. By default
each model's ``features`` output is paired: the last feature map before pooling, which every edgekd
family has. ``--pair STUDENT_LAYER:TEACHER_LAYER`` (repeatable) names other pairs by the module
names of ``model.named_modules()`` (``features.2:features.4``). Different widths are bridged by the
method's adapter (FitNets' regressor), different spatial sizes by adaptive average pooling of the
larger map to the smaller one; a mismatch that cannot be bridged is a ``BadInputError`` naming both
layers and both shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import BadInputError
from edgekd.train.taps import capture

DEFAULT_LAYER = "features"


@dataclass(frozen=True)
class LayerPair:
    student: str
    teacher: str

    def __str__(self) -> str:
        return f"{self.student}:{self.teacher}"


DEFAULT_PAIRS = (LayerPair(DEFAULT_LAYER, DEFAULT_LAYER),)


def parse_pair(text: str) -> LayerPair:
    """``"features.2:features.4"`` -> ``LayerPair("features.2", "features.4")``.

    >>> parse_pair("features:features")
    LayerPair(student='features', teacher='features')
    """
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise BadInputError(
            f"--pair {text!r}: expected STUDENT_LAYER:TEACHER_LAYER, e.g. features:features"
        )
    return LayerPair(parts[0].strip(), parts[1].strip())


def parse_pairs(items: Iterable[str | LayerPair] | None) -> tuple[LayerPair, ...]:
    """Pairs from strings or ``LayerPair``s; none given means the default ``features`` pair."""
    pairs = tuple(p if isinstance(p, LayerPair) else parse_pair(p) for p in (items or ()))
    return pairs or DEFAULT_PAIRS


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def probe_shapes(
    model: nn.Module, names: Iterable[str], example: dict[str, np.ndarray], role: str
) -> dict[str, tuple[int, ...]]:
    """Shapes of the named activations on an example batch (eval mode, no gradients)."""
    names = tuple(dict.fromkeys(names))
    known = set(_layer_names(model))
    for name in names:
        if name not in known:
            some = ", ".join(_layer_names(model)[:10])
            raise BadInputError(
                f"{role} layer {name!r} not found in {type(model).__name__} "
                f"(name another with --pair STUDENT_LAYER:TEACHER_LAYER; layers: {some}, ...)"
            )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, names) as feats:
            model(*[torch.from_numpy(np.ascontiguousarray(a)) for a in example.values()])
    finally:
        model.train(was_training)
    return {name: tuple(feats[name].shape) for name in names}


def pair_error(method: str, pair: LayerPair, s_shape, t_shape, why: str) -> BadInputError:
    return BadInputError(
        f"{method}: cannot match student layer {pair.student!r} {tuple(s_shape)} with teacher "
        f"layer {pair.teacher!r} {tuple(t_shape)}: {why}"
    )


def align_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool (B, C, *spatial) maps of equal rank to the smaller size per axis."""
    if s.dim() <= 2 or s.shape[2:] == t.shape[2:]:
        return s, t
    size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:], strict=True))
    pool = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}[s.dim()]
    if tuple(s.shape[2:]) != size:
        s = pool(s, size)
    if tuple(t.shape[2:]) != size:
        t = pool(t, size)
    return s, t


def pooled(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C) by global average pooling: the penultimate embedding of our
    families (their heads pool, flatten, then apply the classifier); (B, D) is returned as is."""
    return feat.flatten(2).mean(-1) if feat.dim() > 2 else feat
