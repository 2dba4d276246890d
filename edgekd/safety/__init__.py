"""The safety layer: load checkpoints and ONNX files that users downloaded, refusing what is unsafe.

- ``checkpoints``: state dicts via ``torch.load(weights_only=True)`` or safetensors; pickled code,
  TorchScript and ``torch.export`` files load only with ``trust_checkpoint=True``.
- ``onnx_files``: ONNX models whose external data stays inside the model's folder, checked before
  any external byte is read.
- ``versions``: warnings for installed torch / onnx releases with known model-loading advisories.

Malformed files raise ``BadInputError``; refused files raise ``UnsafeInputError``.

The names are imported on first use so that ``import edgekd.safety`` (and ``edgekd --help``) does
not pull in torch or onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekd.safety.checkpoints import load_module_file, load_state_dict, save_state_dict
    from edgekd.safety.onnx_files import (
        check_onnx_file,
        check_onnx_for_ort,
        load_onnx,
        read_onnx_facts,
    )
    from edgekd.safety.versions import check_versions

_EXPORTS = {
    "load_state_dict": "checkpoints",
    "save_state_dict": "checkpoints",
    "load_module_file": "checkpoints",
    "check_onnx_file": "onnx_files",
    "check_onnx_for_ort": "onnx_files",
    "load_onnx": "onnx_files",
    "read_onnx_facts": "onnx_files",
    "check_versions": "versions",
}

__all__ = [
    "check_onnx_file",
    "check_onnx_for_ort",
    "check_versions",
    "load_module_file",
    "load_onnx",
    "load_state_dict",
    "read_onnx_facts",
    "save_state_dict",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
