"""Distillation losses as plain functions over tensors, batch-averaged: ``edgekd.losses.kd`` etc.

Each function lives in its paper's file, above the method that trains with it
(``edgekd/distill/methods/<name>.py``, one paper per file), and is published here from the method
registry: a method that names its function in ``loss_function`` adds it to this module, so a new
method is one new file and this one has no list to keep.

Teacher inputs are detached: gradients reach the student only. Shape mismatches raise
``edgekd.errors.BadInputError`` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.distill.methods import all_methods


def _published() -> dict[str, Callable]:
    """Every method's ``loss_function`` by its name (``mse_logits`` for the method ``mse``)."""
    functions: dict[str, Callable] = {}
    for method in all_methods().values():
        fn = method.loss_function
        if fn is None:
            continue
        if functions.get(fn.__name__, fn) is not fn:
            raise ImportError(f"two methods publish different loss functions named {fn.__name__!r}")
        functions[fn.__name__] = fn
    return functions


_FUNCTIONS = _published()
globals().update(_FUNCTIONS)
__all__ = sorted(_FUNCTIONS)
