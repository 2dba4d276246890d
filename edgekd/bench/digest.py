"""The content hash that ties figures to a model file: recorded in the report, checked on re-use.

``bench`` records each model file's SHA-256 (``ModelResult.sha256``); a worker checks it before it
opens the file the parent already safety-checked, and the gate checks it before it measures a
stored report's model again, so a file replaced since (a new build at the same path) is never
timed under the old name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The hex SHA-256 of a regular file's bytes; None for anything else (a factory spec)."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
