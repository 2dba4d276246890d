"""Plug-in discovery shared by every registry (methods, strategies, students, runtimes, commands).

A variant is one module in its package that registers itself when imported; importing every
public module of the package is how a registry fills, so there is no hand-kept list to drift.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (at ``path``) whose name does not start with ``_``."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
