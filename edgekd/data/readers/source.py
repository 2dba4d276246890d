"""What every reader returns: a :class:`Source`, the training split and what came with it."""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.data.split import Split


@dataclass(frozen=True)
class Source:
    name: str
    train: Split
    class_names: tuple[str, ...] = ()
    val: Split | None = None  # only a factory can hand over ready-made splits
    test: Split | None = None
