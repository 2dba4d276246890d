"""edgekd: distil a large PyTorch model into a small one that meets an edge device's budget.

The public verbs, imported lazily so that ``import edgekd`` (and ``edgekd --help``) stays cheap:

    >>> import edgekd
    >>> target = edgekd.load_target("mobile")
    >>> report = edgekd.distill(edgekd.DistillConfig(target="mobile"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load_target": "edgekd.targets",
    "DistillConfig": "edgekd.config",
    "distill": "edgekd.pipeline",
    "export_onnx": "edgekd.export",
    "quantize": "edgekd.quantize",
    "load_data": "edgekd.data",
    "benchmark": "edgekd.bench.suite",
    "gate": "edgekd.gate",
    "size_student_to_budget": "edgekd.sizing",
}

__all__ = sorted(_VERBS)


class _Package(types.ModuleType):
    """``edgekd.distill``, ``edgekd.quantize`` and ``edgekd.gate`` are both verbs and stage
    packages. Importing a subpackage sets it as an attribute of its parent, which would hide the
    verb of the same name; the verbs win here, and ``import edgekd.gate.checks`` still works
    because imports go through ``sys.modules``, not attributes."""

    def __getattribute__(self, name: str) -> Any:
        if name in _VERBS:
            return getattr(importlib.import_module(_VERBS[name]), name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
