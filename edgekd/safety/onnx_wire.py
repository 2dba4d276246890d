"""The few fields of an ONNX file that the safety check and the benchmark read, parsed straight
from protobuf's wire format, without the ``onnx`` package.

Importing ``onnx`` loads ``ml_dtypes``: 0.5 s on an idle core, several seconds on a busy one, and
until this module most of an ONNX-only ``edgekd bench``'s start-up. The check needs only tensor
names, types, dims and external-data entries, the graph's inputs and its operator types.

Wire format: https://protobuf.dev/programming-guides/encoding/. Where the rules decide what a
conforming parser (ONNX Runtime's C++ one) would see, we follow them: a field counts only with its
declared wire type (otherwise it is an unknown field, skipped); a singular message that occurs more
than once is the merge of its occurrences, which on the wire is their concatenation, parsed as
one; a singular scalar keeps its last value; repeated integers may be packed or not. Groups
(deprecated wire types 3 and 4), bad wire types and anything truncated are refused as malformed.
Field numbers are onnx.proto's (onnx 1.17-1.23).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) for each field: an int, or the bytes of a LEN field."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > len(buf):
                raise WireError("truncated fixed-size field")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise WireError("a length runs past the end")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise WireError(f"wire type {wire} (groups and unknown types are not read)")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class Message:
    """One parsed message: its fields by number, values in the order they came."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._fields: dict[int, list[tuple[int, int | memoryview]]] = {}
        for number, wire, value in _fields(memoryview(data)):
            self._fields.setdefault(number, []).append((wire, value))

    def _values(self, number: int, wire: int) -> list:
        return [v for w, v in self._fields.get(number, ()) if w == wire]

    def has(self, number: int) -> bool:
        return bool(self._values(number, LEN))

    def messages(self, number: int) -> list[Message]:
        """A repeated message field: one ``Message`` per occurrence."""
        return [Message(v) for v in self._values(number, LEN)]

    def message(self, number: int) -> Message | None:
        """A singular message field: every occurrence merged (None when absent)."""
        parts = self._values(number, LEN)
        if not parts:
            return None
        return Message(parts[0] if len(parts) == 1 else b"".join(bytes(p) for p in parts))

    def last_int(self, number: int, allowed: frozenset[int] | None = None) -> int | None:
        """A singular integer: its last value (for a closed enum, the last value it knows)."""
        values = [_int64(v) for v in self._values(number, VARINT)]
        if allowed is not None:
            values = [v for v in values if v in allowed]
        return values[-1] if values else None

    def ints(self, number: int) -> list[int]:
        """A repeated int64, packed or not, in wire order."""
        out: list[int] = []
        for wire, value in self._fields.get(number, ()):
            if wire == VARINT:
                out.append(_int64(value))  # type: ignore[arg-type]
            elif wire == LEN:
                pos = 0
                while pos < len(value):  # type: ignore[arg-type]
                    v, pos = _varint(value, pos)  # type: ignore[arg-type]
                    out.append(_int64(v))
        return out

    def string(self, number: int) -> str:
        """A singular string (last value; "" when absent). Bytes that are not UTF-8 are kept as
        surrogates, so a path built from them names the same bytes on a POSIX system."""
        values = self._values(number, LEN)
        return bytes(values[-1]).decode("utf-8", "surrogateescape") if values else ""


# TensorProto.DataType values that onnx 1.23 defines (a closed enum: others are unknown fields).
_DATA_TYPES = frozenset(range(0, 27))
_LOCATIONS = frozenset({0, 1})


@dataclass(frozen=True)
class WireTensor:
    """A TensorProto as far as its external data goes. ``external``: its data_location is
    EXTERNAL, or it has external_data entries at all (a reader may honour either)."""

    name: str
    data_type: int | None
    dims: tuple[int, ...]
    external: bool
    entries: tuple[tuple[str, str], ...]


def wire_tensor(msg: Message) -> WireTensor:
    entries = tuple((e.string(1), e.string(2)) for e in msg.messages(13))
    location = msg.last_int(14, _LOCATIONS)
    return WireTensor(
        name=msg.string(8),
        data_type=msg.last_int(2, _DATA_TYPES),
        dims=tuple(msg.ints(1)),
        external=location == _EXTERNAL or bool(entries),
        entries=entries,
    )


@dataclass(frozen=True)
class WireInput:
    """A graph input: name, element type (TensorProto.DataType) and dims (None: symbolic)."""

    name: str
    elem_type: int | None
    dims: tuple[int | None, ...]


def graph_inputs(graph: Message) -> list[WireInput]:
    out = []
    for vi in graph.messages(11):
        tensor = (vi.message(2) or Message(b"")).message(1) or Message(b"")
        shape = tensor.message(2)
        dims: list[int | None] = []
        for d in shape.messages(1) if shape is not None else []:
            value = d.last_int(1)
            dims.append(value if value is not None and value > 0 else None)
        out.append(WireInput(vi.string(1), tensor.last_int(1), tuple(dims)))
    return out


def model_tensors(model: Message) -> Iterator[tuple[str, WireTensor]]:
    """Every tensor that a loader might fill from external data, with a description of where."""
    graph = model.message(7)
    if graph is not None:
        yield from _graph_tensors(graph)
    for function in model.messages(25):
        scope = f"function {function.string(1)!r}"
        yield from _node_tensors(function.messages(7), scope)
        # A function's default attribute values may hold tensors too.
        for attr in function.messages(11):
            yield from _attribute_tensors(attr, f"attribute {attr.string(1)!r} of {scope}")
    for info in model.messages(20):
        for number in (1, 2):  # initialization, algorithm
            part = info.message(number)
            if part is not None:
                yield from _graph_tensors(part)


def _graph_tensors(graph: Message) -> Iterator[tuple[str, WireTensor]]:
    scope = f"graph {graph.string(2)!r}"
    for tensor in graph.messages(5):
        t = wire_tensor(tensor)
        yield f"initializer {t.name!r} in {scope}", t
    for sparse in graph.messages(15):
        values = wire_tensor(sparse.message(1) or Message(b""))
        yield from _sparse_parts(sparse, f"sparse initializer {values.name!r} in {scope}")
    yield from _node_tensors(graph.messages(1), scope)


def _node_tensors(nodes: list[Message], scope: str) -> Iterator[tuple[str, WireTensor]]:
    for node in nodes:
        label = node.string(3) or node.string(4)
        for attr in node.messages(5):
            where = f"attribute {attr.string(1)!r} of node {label!r} in {scope}"
            yield from _attribute_tensors(attr, where)


def _attribute_tensors(attr: Message, where: str) -> Iterator[tuple[str, WireTensor]]:
    # Every field is visited whatever the attribute's type says: a reader may not check the type.
    t = attr.message(5)
    if t is not None:
        yield where, wire_tensor(t)
    for tensor in attr.messages(10):
        yield where, wire_tensor(tensor)
    sparse = attr.message(22)
    if sparse is not None:
        yield from _sparse_parts(sparse, where)
    for sparse in attr.messages(23):
        yield from _sparse_parts(sparse, where)
    g = attr.message(6)
    if g is not None:
        yield from _graph_tensors(g)
    for graph in attr.messages(11):
        yield from _graph_tensors(graph)


def _sparse_parts(sparse: Message, where: str) -> Iterator[tuple[str, WireTensor]]:
    yield f"{where} (values)", wire_tensor(sparse.message(1) or Message(b""))
    yield f"{where} (indices)", wire_tensor(sparse.message(2) or Message(b""))
