"""Taps: named activations collected with forward hooks, so losses never reach into models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from edgekd.errors import BadInputError


@contextlib.contextmanager
def capture(model: nn.Module, names: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        if name not in modules:
            raise BadInputError(
                f"layer {name!r} not found in {type(model).__name__} "
                f"(some layers: {', '.join(list(modules)[1:8])})"
            )

        def hook(_m, _inp, output, name=name):
            out[name] = output[0] if isinstance(output, tuple) else output

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
