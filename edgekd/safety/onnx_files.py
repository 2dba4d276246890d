"""Checking an ONNX file, and every external-data reference in it, before anything reads them.

An ONNX tensor may keep its bytes in another file named by ``external_data.location``, and both
``onnx.load`` and ONNX Runtime open that file relative to the model's folder. A crafted model can
name ``/etc/passwd``, ``../../secret``, a symbolic or hard link to a file elsewhere, or an offset
past the end of the file (onnx CVE-2024-27318, CVE-2026-27489, CVE-2026-34446). We refuse all of
these from the model's protobuf and ``lstat`` alone, before any external byte is read.

We walk the model ourselves instead of using ``onnx.external_data_helper._get_all_tensors``: that
helper is private, and it skips sparse tensors, whose external data ONNX Runtime does read.

Limit: a file swapped between this check and the load (a race) is not caught here; onnx >= 1.21
re-checks links when it opens the file, and we never re-read the model file itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath
from typing import NoReturn

import onnx
import onnx.external_data_helper
from onnx import GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto

from edgekd.errors import BadInputError, UnsafeInputError
from edgekd.safety._files import one_line, require_file

# ONNX Runtime reads "offset" as a raw memory address for this location (its in-memory
# initializers); a model file must never carry it.
_ORT_MEMORY_MARKER = "_ORT_MEM_ADDR_"

# Bytes per element, to bound what a reader that trusts the shape (not "length") would read.
_ITEM_BYTES = {
    TensorProto.FLOAT: 4, TensorProto.UINT8: 1, TensorProto.INT8: 1, TensorProto.UINT16: 2,
    TensorProto.INT16: 2, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1,
    TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.UINT32: 4, TensorProto.UINT64: 8,
    TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16, TensorProto.BFLOAT16: 2,
}  # fmt: skip


def check_onnx_file(path: str | os.PathLike[str]) -> None:
    """Raise BadInputError for a malformed ONNX file, UnsafeInputError for unsafe external data.

    >>> check_onnx_file("student.onnx")  # doctest: +SKIP
    """
    _checked_model(path)


def check_onnx_for_ort(path: str | os.PathLike[str]) -> None:
    """The same checks, for callers about to run ``onnxruntime.InferenceSession(path)``.

    ONNX Runtime opens external data files itself, so this must run first.

    >>> check_onnx_for_ort(path)  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession(path)  # doctest: +SKIP
    """
    _checked_model(path)


def load_onnx(path: str | os.PathLike[str]) -> ModelProto:
    """Check ``path`` and then load it with its external data.

    The external data is read into the same protobuf that was checked, so the model file is parsed
    once and cannot change between the check and the load.

    >>> model = load_onnx("student.onnx")  # doctest: +SKIP
    """
    model = _checked_model(path)
    base_dir = str(Path(path).parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, base_dir)
    except Exception as exc:
        raise BadInputError(f"{path}: cannot read its external data ({one_line(exc)})") from None
    return model


def _checked_model(path: str | os.PathLike[str]) -> ModelProto:
    path, _ = require_file(path, "ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadInputError(f"{path}: not a valid ONNX model ({one_line(exc)})") from None
    # Protobuf parses some garbage without complaint; a real model has a graph and an IR version.
    if not model.HasField("graph") or model.ir_version <= 0:
        raise BadInputError(f"{path}: not a valid ONNX model (no graph or IR version)")
    stats: dict[str, os.stat_result] = {}
    for where, tensor in _model_tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            _check_external(path, where, tensor, stats)
    return model


def _check_external(
    model_path: Path, where: str, tensor: TensorProto, stats: dict[str, os.stat_result]
) -> None:
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key in entries and entry.key in ("location", "offset", "length"):
            _refuse(model_path, where, entries.get("location", ""), f"repeats {entry.key!r}")
        entries[entry.key] = entry.value
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


def _expected_bytes(tensor: TensorProto) -> int | None:
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


def _model_tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor that a loader might fill from external data, with a description of where."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node, f"function {function.name!r}")
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def _graph_tensors(graph: GraphProto) -> Iterator[tuple[str, TensorProto]]:
    scope = f"graph {graph.name!r}"
    for tensor in graph.initializer:
        yield f"initializer {tensor.name!r} in {scope}", tensor
    for sparse in graph.sparse_initializer:
        yield from _sparse_parts(sparse, f"sparse initializer {sparse.values.name!r} in {scope}")
    yield from _node_tensors(graph.node, scope)


def _node_tensors(nodes: list[NodeProto], scope: str) -> Iterator[tuple[str, TensorProto]]:
    for node in nodes:
        for attr in node.attribute:
            where = f"attribute {attr.name!r} of node {node.name or node.op_type!r} in {scope}"
            # Every field is visited whatever attr.type says: a reader may not check the type.
            if attr.HasField("t"):
                yield where, attr.t
            for tensor in attr.tensors:
                yield where, tensor
            if attr.HasField("sparse_tensor"):
                yield from _sparse_parts(attr.sparse_tensor, where)
            for sparse in attr.sparse_tensors:
                yield from _sparse_parts(sparse, where)
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for graph in attr.graphs:
                yield from _graph_tensors(graph)


def _sparse_parts(sparse: SparseTensorProto, where: str) -> Iterator[tuple[str, TensorProto]]:
    yield f"{where} (values)", sparse.values
    yield f"{where} (indices)", sparse.indices
