"""Model checkpoints as safetensors with the architecture in the header: no pickle, ever.

A checkpoint written here can be rebuilt anywhere (a fresh benchmark process, ``edgekd export``)
from the student family registry and the recorded knobs, without executing code from the file.

The same weights give the same bytes: safetensors writes its metadata in hash order (different
from one process to the next), so the header is written again with its keys sorted, and a
checksum in CI sees a change only when the weights or the architecture changed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from torch import nn

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_path


def save_model(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write weights + ``edgekd_arch`` metadata atomically to a ``.safetensors`` file."""
    from safetensors.torch import save

    arch = getattr(model, "edgekd_arch", None)
    meta = {"format": "pt", **(extra or {})}
    if arch is not None:
        meta["edgekd_arch"] = json.dumps(arch)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    data = canonical_header(save(state, metadata=meta))
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def canonical_header(data: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted (the tensor data is laid out
    in a fixed order already). Format: u64 little-endian header length, the header (JSON, padded
    with spaces to a multiple of 8 bytes), the data."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise BadInputError(f"{path}: not a valid safetensors checkpoint ({exc})") from None


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (architecture from metadata) in eval mode."""
    from safetensors.torch import load_file

    from edgekd.students import build_student

    path = Path(path)
    meta = read_metadata(path)
    if "edgekd_arch" not in meta:
        raise BadInputError(
            f"{path}: checkpoint has no 'edgekd_arch' metadata; give its architecture as a factory "
            "(pkg.module:factory) instead"
        )
    arch = json.loads(meta["edgekd_arch"])
    model = build_student(
        arch["family"],
        tuple(arch["sample_shape"]),
        arch["num_classes"],
        arch["width"],
        arch["depth"],
        view=arch.get("view"),
        **arch.get("options", {}),
    )
    if arch.get("normalize"):  # --normalize: the student runs (x - mean) / std first
        from edgekd.data.normalize import attach_normalization

        attach_normalization(model, arch["normalize"])
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BadInputError(
            f"{path}: weights do not match the recorded architecture ({first})"
        ) from None
    return model.eval()
