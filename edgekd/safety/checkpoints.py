"""Loading and saving PyTorch weights without running code hidden in the file.

A ``.pt``/``.pth`` file is a pickle, and unpickling can call any Python function. We load with
``torch.load(weights_only=True)``, whose restricted unpickler only rebuilds tensors and plain
containers, and never fall back to a full unpickle on our own: that takes ``trust_checkpoint=True``
(the CLI's ``--trust-checkpoint``). ``.safetensors`` files hold no code at all.

TorchScript and ``torch.export`` files are programs: PyTorch documents that ``torch.jit.load`` can
execute code from crafted data ("there is no safe mode for jit.load", pytorch/pytorch#143403) and
``torch.export.load`` unpickles constants with ``weights_only=False``. They load only when trusted.
"""

from __future__ import annotations

import io
import os
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from edgekd.errors import BadInputError, UnsafeInputError
from edgekd.fileio import atomic_path
from edgekd.safety._files import one_line, require_file

# A pickle's opcode stream is small next to its tensor bytes; read at most this much to classify it.
_PICKLE_SCAN_LIMIT = 64 * 1024 * 1024
# Legacy (non-zip) torch.save files hold a few pickles back to back, then raw storage bytes.
_MAX_PICKLES = 6
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_WRAPPER_KEYS = ("state_dict", "model")


def load_state_dict(
    path: str | os.PathLike[str], *, trust_checkpoint: bool = False
) -> dict[str, torch.Tensor]:
    """Load a state dict (name -> tensor) from ``.safetensors`` or a ``torch.save`` file, on CPU.

    A file that needs arbitrary unpickling raises UnsafeInputError and is not loaded, unless
    ``trust_checkpoint`` is set. A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper (the usual
    training checkpoint) is unwrapped.

    >>> sd = load_state_dict("student.safetensors")  # doctest: +SKIP
    >>> model.load_state_dict(sd)  # doctest: +SKIP
    """
    path, _ = require_file(path, "checkpoint")
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as exc:
            raise BadInputError(f"{path}: not a valid checkpoint ({one_line(exc)})") from None
    if trust_checkpoint:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise BadInputError(f"{path}: not a valid checkpoint ({one_line(exc)})") from None
    else:
        obj = _load_weights_only(path)
    return _as_state_dict(obj, path)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write ``state_dict`` atomically: safetensors for a ``.safetensors`` suffix, else torch.save.

    >>> save_state_dict(model.state_dict(), "runs/a/student.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    tensors = _checked_tensors(state_dict, f"{path}: cannot save")
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            safetensors.torch.save_file(_unshared_contiguous(tensors), str(tmp))
        else:
            torch.save(tensors, tmp)
    return path


def load_module_file(
    path: str | os.PathLike[str], *, trust_checkpoint: bool = False
) -> torch.jit.ScriptModule | torch.export.ExportedProgram:
    """Load a TorchScript module, or a ``torch.export`` program from a ``.pt2`` file.

    Both formats carry code that runs when they load, so without ``trust_checkpoint`` this only
    checks that the file is an archive and then raises UnsafeInputError.

    >>> program = load_module_file("teacher.pt2", trust_checkpoint=True)  # doctest: +SKIP
    """
    path, _ = require_file(path, "TorchScript or torch.export file")
    is_export = path.suffix.lower() == ".pt2"
    kind = "torch.export program" if is_export else "TorchScript module"
    if not zipfile.is_zipfile(path):
        raise BadInputError(f"{path}: not a valid {kind} (not a zip archive)")
    if not trust_checkpoint:
        raise UnsafeInputError(
            f"{path}: a {kind} can run code while it loads; it was NOT loaded. "
            "--trust-checkpoint loads it, but only use it if you trust the file's source"
        )
    try:
        if is_export:
            return torch.export.load(path)
        return torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise BadInputError(f"{path}: not a valid {kind} ({one_line(exc)})") from None


def _load_weights_only(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the user cannot act on that.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        error = exc
    # torch raises the same UnpicklingError for random bytes as for a pickle that imports code,
    # so read the opcodes ourselves (pickletools parses, it never executes) to tell them apart.
    unsafe = _unsafe_globals(path)
    if unsafe:
        shown = ", ".join(sorted(unsafe)[:3]) + (", ..." if len(unsafe) > 3 else "")
        raise UnsafeInputError(
            f"{path}: contains pickled code/objects ({shown}); it was NOT loaded. "
            "--trust-checkpoint loads it, but only use it if you trust the file's source"
        ) from None
    reason = one_line(error)
    if reason.startswith("Weights only load failed"):
        reason = "neither a PyTorch archive nor a pickle of tensors"
    raise BadInputError(f"{path}: not a valid checkpoint ({reason})") from None


def _unsafe_globals(path: Path) -> set[str]:
    """Python objects the file's pickle would import that weights_only does not allow."""
    if zipfile.is_zipfile(path):
        try:
            return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return set()  # a broken archive: the caller reports it as malformed
    with open(path, "rb") as fh:
        stream = io.BytesIO(fh.read(_PICKLE_SCAN_LIMIT))
    return _pickle_globals(stream) - _allowed_globals()


def _pickle_globals(stream: io.BytesIO) -> set[str]:
    """``module.name`` of every global imported by the complete pickles at the start of stream."""
    found: set[str] = set()
    for _ in range(_MAX_PICKLES):
        names: set[str] = set()
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    strings = [*strings[-1:], arg]
                elif op.name in ("GLOBAL", "INST"):
                    names.add(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    # Module and name are the two strings pushed just before (or memo lookups).
                    names.add(".".join(strings) if len(strings) == 2 else "<unknown global>")
        except Exception:
            break  # not (or no longer) a pickle: raw storage bytes, truncation or garbage
        found |= names
    return found


def _allowed_globals() -> set[str]:
    # The allow-list torch.serialization.get_unsafe_globals_in_checkpoint uses. It is private: if a
    # future torch moves it, every import counts as unsafe (refused either way; message differs).
    try:
        from torch import _weights_only_unpickler as wo

        return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())
    except Exception:
        return set()


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):  # a whole pickled model; only reachable when trusted
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping):
                obj = inner
                break
    return _checked_tensors(obj, f"{path}: not a state dict")


def _checked_tensors(obj: Any, prefix: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise BadInputError(
            f"{prefix}: it holds a {type(obj).__name__}, expected a dict of tensors "
            f"(or a dict with a {' or '.join(repr(k) for k in _WRAPPER_KEYS)} entry holding one)"
        )
    if not obj:
        raise BadInputError(f"{prefix}: it holds no tensors")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise BadInputError(
                f"{prefix}: entry {key!r} holds a {type(value).__name__}, not a tensor"
            )
    return dict(obj)


def _unshared_contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights) or are not contiguous.
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(ptr)
        out[name] = tensor.contiguous()
    return out
