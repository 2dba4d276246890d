"""The on-disk cache for trained default teachers and teacher outputs.

``$EDGEKD_CACHE`` if set, else ``~/.cache/edgekd``. Entries are keyed by a hash of everything that
determines them (data fingerprint, architecture, training settings, library versions).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    root = Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
