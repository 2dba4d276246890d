"""Checking an ONNX file, and every external-data reference in it, before anything reads them.

An ONNX tensor may keep its bytes in another file named by ``external_data.location``, and both
``onnx.load`` and ONNX Runtime open that file relative to the model's folder. A crafted model can
name ``/etc/passwd``, ``../../secret``, a symbolic or hard link to a file elsewhere, or an offset
past the end of the file (onnx CVE-2024-27318, CVE-2026-27489, CVE-2026-34446). We refuse all of
these from the model's protobuf and ``lstat`` alone, before any external byte is read.

We walk the model ourselves, from protobuf's wire format (``edgekd.safety.onnx_wire``: no
``onnx`` import, which alone cost a benchmark most of its start-up), instead of using
``onnx.external_data_helper._get_all_tensors``: that helper is private, and it skips sparse
tensors, whose external data ONNX Runtime does read. A tensor counts as external when its
data_location says so or when it carries external_data entries at all.

Limit: a file swapped between this check and the load (a race) is not caught here; onnx >= 1.21
re-checks links when it opens the file, and we never re-read the model file itself.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, NoReturn

from edgekd.errors import BadInputError, UnsafeInputError
from edgekd.safety._files import one_line, require_file
from edgekd.safety.onnx_wire import (
    Message,
    WireError,
    WireInput,
    WireTensor,
    graph_inputs,
    model_tensors,
    wire_tensor,
)

if TYPE_CHECKING:
    from onnx import ModelProto

# ONNX Runtime reads "offset" as a raw memory address for this location (its in-memory
# initializers); a model file must never carry it.
_ORT_MEMORY_MARKER = "_ORT_MEM_ADDR_"

# Bytes per element by TensorProto.DataType (FLOAT = 1, UINT8 = 2, ...), to bound what a reader
# that trusts the shape (not "length") would read.
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8,
               15: 16, 16: 2}  # fmt: skip


@dataclass(frozen=True)
class OnnxFacts:
    """What a checked ONNX file says about itself, read without the ``onnx`` package: the graph's
    inputs, its initializers (top-level graph), its top-level operator types, and the files its
    external data lives in (checked to stay inside the model's folder)."""

    inputs: tuple[WireInput, ...]
    initializers: tuple[WireTensor, ...]
    op_types: tuple[str, ...]
    external_files: tuple[str, ...]


def check_onnx_file(path: str | os.PathLike[str]) -> None:
    """Raise BadInputError for a malformed ONNX file, UnsafeInputError for unsafe external data.

    >>> check_onnx_file("student.onnx")  # doctest: +SKIP
    """
    _checked_bytes(path)


def check_onnx_for_ort(path: str | os.PathLike[str]) -> None:
    """The same checks, for callers about to run ``onnxruntime.InferenceSession(path)``.

    ONNX Runtime opens external data files itself, so this must run first.

    >>> check_onnx_for_ort(path)  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession(path)  # doctest: +SKIP
    """
    _checked_bytes(path)


def read_onnx_facts(path: str | os.PathLike[str]) -> OnnxFacts:
    """``check_onnx_file``, and then the facts a benchmark needs, from the same parse.

    >>> read_onnx_facts("student.onnx").inputs[0].name  # doctest: +SKIP
    'x'
    """
    _, model, external = _checked(path)
    graph = model.message(7) or Message(b"")
    return OnnxFacts(
        inputs=tuple(graph_inputs(graph)),
        initializers=tuple(wire_tensor(t) for t in graph.messages(5)),
        op_types=tuple(node.string(4) for node in graph.messages(1)),
        external_files=tuple(sorted(external)),
    )


def load_onnx(path: str | os.PathLike[str]) -> ModelProto:
    """Check ``path`` and then load it with its external data.

    The checked bytes are the ones parsed and the external data is read into that protobuf, so
    the model file is read once and cannot change between the check and the load.

    >>> model = load_onnx("student.onnx")  # doctest: +SKIP
    """
    import onnx
    import onnx.external_data_helper

    data = _checked_bytes(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise BadInputError(f"{path}: not a valid ONNX model ({one_line(exc)})") from None
    base_dir = str(Path(path).parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, base_dir)
    except Exception as exc:
        raise BadInputError(f"{path}: cannot read its external data ({one_line(exc)})") from None
    return model


def _checked_bytes(path: str | os.PathLike[str]) -> bytes:
    return _checked(path)[0]


def _checked(path: str | os.PathLike[str]) -> tuple[bytes, Message, set[str]]:
    """The file's bytes, its parsed model, and the external files it names, once every external
    reference has passed ``_check_external``."""
    path, _ = require_file(path, "ONNX model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ONNX model ({exc.strerror})") from None
    try:
        model = Message(data)
        ir_version = model.last_int(1)
        tensors = list(model_tensors(model))
    except (WireError, RecursionError) as exc:
        raise BadInputError(f"{path}: not a valid ONNX model ({one_line(exc)})") from None
    # Protobuf parses some garbage without complaint; a real model has a graph and an IR version.
    if not model.has(7) or not ir_version or ir_version <= 0:
        raise BadInputError(f"{path}: not a valid ONNX model (no graph or IR version)")
    stats: dict[str, os.stat_result] = {}
    for where, tensor in tensors:
        if tensor.external:
            _check_external(path, where, tensor, stats)
    return data, model, set(stats)


def _check_external(
    model_path: Path, where: str, tensor: WireTensor, stats: dict[str, os.stat_result]
) -> None:
    entries: dict[str, str] = {}
    for key, value in tensor.entries:
        if key in entries and key in ("location", "offset", "length"):
            _refuse(model_path, where, entries.get("location", ""), f"repeats {key!r}")
        entries[key] = value
    location = entries.get("location", "")
    if location not in stats:
        stats[location] = _check_location(model_path, where, location)
    st = stats[location]
    offset = _non_negative(model_path, where, location, entries, "offset")
    length = _non_negative(model_path, where, location, entries, "length")
    if offset is not None and offset > st.st_size:
        why = f"offset {offset} lies beyond the end of the {st.st_size}-byte file"
        _refuse(model_path, where, location, why)
    span = max(length or 0, _expected_bytes(tensor) or 0)
    if (offset or 0) + span > st.st_size:
        start = offset or 0
        why = f"{span} bytes from offset {start} run past the end of the {st.st_size}-byte file"
        _refuse(model_path, where, location, why)


def _check_location(model_path: Path, where: str, location: str) -> os.stat_result:
    """Walk ``location`` one component at a time from the model's folder, following no links."""

    def refuse(why: str) -> NoReturn:
        _refuse(model_path, where, location, why)

    if not location:
        refuse("has no location")
    if _ORT_MEMORY_MARKER in location:
        refuse("is ONNX Runtime's in-memory marker, whose offset is a raw memory address")
    if "\0" in location:
        refuse("contains a NUL byte")
    # Windows readers treat "\" as a separator and "C:" as a drive, so judge the path as they would.
    unified = location.replace("\\", "/")
    if unified.startswith("/") or PureWindowsPath(location).drive:
        refuse("is an absolute path")
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            refuse("escapes the model's folder")
    base = model_path.parent
    current = base
    st = None
    for part in parts:
        # Links are refused at every step, so ".." here is the lexical parent, as the OS sees it.
        current = current.parent if part == ".." else current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            refuse("does not exist")
        except OSError as exc:
            refuse(f"cannot be inspected ({exc.strerror})")
        if stat.S_ISLNK(st.st_mode):
            refuse(f"goes through the symbolic link {str(current)!r}")
    if st is None or not stat.S_ISREG(st.st_mode):
        refuse("is not a regular file")
    if st.st_nlink > 1:
        refuse(f"is a hard link ({st.st_nlink} names for one file, which may live elsewhere)")
    if not current.resolve().is_relative_to(base.resolve()):
        refuse("resolves outside the model's folder")
    return st


def _non_negative(
    model_path: Path, where: str, location: str, entries: dict[str, str], key: str
) -> int | None:
    value = entries.get(key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        _refuse(model_path, where, location, f"has a malformed {key} {value!r}")
    return int(value)


def _expected_bytes(tensor: WireTensor) -> int | None:
    item = _ITEM_BYTES.get(tensor.data_type)
    if item is None or any(d < 0 for d in tensor.dims):
        return None
    count = 1
    for d in tensor.dims:
        count *= d
    return count * item


def _refuse(model_path: Path, where: str, location: str, why: str) -> NoReturn:
    raise UnsafeInputError(
        f"{model_path}: refusing external data of {where} at location {location!r}: {why}"
    )
