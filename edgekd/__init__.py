"""edgekd: distil a large PyTorch model into a small one that meets an edge device's budget.

The public verbs, imported lazily so that ``import edgekd`` (and ``edgekd --help``) stays cheap:

    >>> import edgekd
    >>> target = edgekd.load_target("mobile")
    >>> report = edgekd.distill(edgekd.DistillConfig(target="mobile"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load_target": "edgekd.targets",
    "DistillConfig": "edgekd.pipeline",
    "distill": "edgekd.pipeline",
    "export_onnx": "edgekd.export",
    "quantize": "edgekd.quantize",
    "load_data": "edgekd.data",
    "benchmark": "edgekd.bench.suite",
    "gate": "edgekd.bench.gate",
    "size_student_to_budget": "edgekd.sizing",
}

__all__ = sorted(_VERBS)


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
