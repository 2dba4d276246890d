"""The one registry of the project: variants (KD methods, strategies, student families, runtimes)
register themselves by name, and a registry fills by importing its package's modules.

A variant is one module in its package that registers itself when imported; importing every
public module of the package on first use is how a registry fills, so there is no hand-kept list
to drift (timm's ``register_model`` / ``list_models``, one generic class instead of a copy per
package).

    FAMILIES: Registry[StudentFamily] = Registry("student family", __name__)
    FAMILIES.register("mlp", family)
    FAMILIES.get("mlp")     # BadInputError "unknown student family 'x' (known: cnn, mlp, ...)"
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterable
from typing import Generic, TypeVar

from edgekd.errors import BadInputError

T = TypeVar("T")


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (at ``path``) whose name does not start with ``_``."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order.

    ``kind`` names the entries in errors ("unknown runtime 'x' (known: ...)"); ``package`` is the
    package whose public submodules register the entries, imported on the first lookup.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: T) -> T:
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if self._loaded:
            return
        # Set only once every module imported: a module that looks a name up while it is being
        # imported triggers another (cheap) pass instead of seeing a half-filled registry for good.
        import_submodules(self.package, sys.modules[self.package].__path__)
        self._loaded = True

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise BadInputError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._entries[name]

    def all(self) -> dict[str, T]:
        """Every entry by name, in registration order (a copy)."""
        self._load()
        return dict(self._entries)

    def names(self) -> list[str]:
        return sorted(self.all())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries
