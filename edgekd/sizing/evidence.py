"""Which student families can learn what the teacher knows: evidence from the teacher and the data.

The array's rank alone is a poor guide: a 1-D signal stored ``[N, 40]`` is a "vector" by rank, yet
a convolutional teacher over it says the order of the 40 values matters, and an MLP student can
then keep little of what the teacher knows. :func:`read_structure` reads what the teacher is
built of, from a PyTorch module's layer types or from an ONNX graph's operators (Conv with 1-D or
2-D kernels, MatMul + Softmax attention, Gather from a table on integer inputs, LSTM/GRU/RNN,
Gemm/MatMul alone), and the per-sample shape that reaches its first convolution.
:func:`plausible_families` joins that with the data's shape and dtype:

* a 1-D convolution (or a recurrent layer) over float data: ``cnn1d`` students, which add the
  channel axis themselves where the data has none (``[N, L]`` is seen as ``[N, 1, L]``);
* a 2-D convolution: ``cnn`` and ``mobilenet``, on the shape the teacher's first convolution
  sees (traced on one sample), else on the data's own image shape, else on a square
  (``[N, 64]`` as ``[N, 1, 8, 8]``) when the length is a perfect square; otherwise nothing tells
  H from W and no image student is offered;
* attention or an embedding table over token ids: ``transformer`` and ``tokenpool``;
* only linear layers: ``mlp`` alone (nothing in the teacher uses the values' order).

An MLP is tried beside the convolutional and recurrent families: it takes any shape, and the
trial (``edgekd.sizing.trial``) keeps it only where it is measurably better. A teacher whose
structure cannot be read (a command, an exported program) leaves the choice to the data's rank,
as before, and the evidence says so. The first family listed is the evidence's own choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import BadInputError

KINDS = ("conv1d", "conv2d", "attention", "embedding", "recurrent", "linear")
_MODULE_KINDS = {
    "Conv1d": "conv1d",
    "Conv2d": "conv2d",
    "MultiheadAttention": "attention",
    "Embedding": "embedding",
    "EmbeddingBag": "embedding",
    "RNN": "recurrent",
    "LSTM": "recurrent",
    "GRU": "recurrent",
    "Linear": "linear",
}


@dataclass(frozen=True)
class TeacherStructure:
    """What a teacher is built of: layer kind -> count, and the per-sample shape reaching its
    first convolution (None: no convolution, or not seen)."""

    source: str  # "pytorch modules", "onnx operators" or "unknown"
    layers: dict[str, int] = field(default_factory=dict)
    first_conv_input: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.layers) - set(KINDS)
        if unknown:
            raise BadInputError(f"teacher structure: unknown layer kinds {sorted(unknown)}")

    @property
    def known(self) -> bool:
        return self.source != "unknown"

    def has(self, kind: str) -> bool:
        return self.layers.get(kind, 0) > 0

    def describe(self) -> str:
        if not self.known:
            return "teacher structure unknown"
        found = ", ".join(f"{n} {k}" for k, n in self.layers.items() if n) or "no known layers"
        seen = ""
        if self.first_conv_input is not None:
            seen = f"; its first convolution sees {list(self.first_conv_input)} per sample"
        return f"teacher ({self.source}): {found}{seen}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layers": dict(self.layers),
            "first_conv_input": None
            if self.first_conv_input is None
            else list(self.first_conv_input),
        }


UNKNOWN = TeacherStructure("unknown")


def structure_of_module(model: Any, example: Sequence[Any] | None = None) -> TeacherStructure:
    """The layer kinds of a PyTorch module (TorchScript modules by their original class names;
    a class named ``...Attention`` counts as attention), and, given ``example`` inputs (a batch
    of one), the per-sample shape its first Conv1d/Conv2d receives."""
    import torch

    layers: dict[str, int] = {}
    first_conv = None
    for module in model.modules():
        name = getattr(module, "original_name", None) or type(module).__name__
        kind = _MODULE_KINDS.get(name) or ("attention" if name.endswith("Attention") else None)
        if kind is None:
            continue
        layers[kind] = layers.get(kind, 0) + 1
        if kind in ("conv1d", "conv2d") and first_conv is None:
            first_conv = module
    if not layers:
        return UNKNOWN  # a graph module or an opaque wrapper: nothing to read
    seen = None
    if (
        first_conv is not None
        and example is not None
        and hasattr(first_conv, "register_forward_hook")
    ):
        shapes: list[tuple[int, ...]] = []
        hook = first_conv.register_forward_hook(
            lambda m, args, out: shapes.append(tuple(args[0].shape[1:])) if not shapes else None
        )
        try:
            with torch.no_grad():
                model.eval()
                model(*example)
        except Exception:  # the structure stands without the traced shape
            pass
        finally:
            hook.remove()
        seen = shapes[0] if shapes else None
    return TeacherStructure("pytorch modules", layers, seen)


def structure_of_onnx(model: Any) -> TeacherStructure:
    """The layer kinds of an ONNX graph (a path or a ``ModelProto``): Conv by its kernel's rank,
    MatMul with Softmax as attention, Gather from an initializer table on an integer graph input
    as an embedding, LSTM/GRU/RNN as recurrent, Gemm/MatMul as linear; and the per-sample shape of
    the first Conv's input where shape inference knows it."""
    import onnx

    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shapes are a bonus; the operators are the evidence
        pass
    graph = proto.graph
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    int_inputs = {
        i.name
        for i in graph.input
        if i.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    }
    ops = [n.op_type for n in graph.node]
    layers: dict[str, int] = {}

    def add(kind: str) -> None:
        layers[kind] = layers.get(kind, 0) + 1

    first_conv = None
    for node in graph.node:
        if node.op_type == "Conv":
            rank = _kernel_rank(node, inits)
            if rank in (1, 2):
                add(f"conv{rank}d")
                first_conv = first_conv or node
        elif node.op_type in ("LSTM", "GRU", "RNN"):
            add("recurrent")
        elif node.op_type == "Gather" and node.input[0] in inits and node.input[1] in int_inputs:
            add("embedding")
        elif node.op_type in ("Gemm", "MatMul"):
            add("linear")
    if "Softmax" in ops and ops.count("MatMul") >= 2:
        layers["attention"] = ops.count("Softmax")  # scores = QK^T, softmax, times V
    return TeacherStructure("onnx operators", layers, _value_shape(graph, first_conv))


def _kernel_rank(node: Any, inits: dict[str, tuple[int, ...]]) -> int | None:
    for attr in node.attribute:
        if attr.name == "kernel_shape":
            return len(attr.ints)
    weight = inits.get(node.input[1]) if len(node.input) > 1 else None
    return None if weight is None else len(weight) - 2


def _value_shape(graph: Any, node: Any) -> tuple[int, ...] | None:
    if node is None:
        return None
    name = node.input[0]
    for info in [*graph.input, *graph.value_info]:
        if info.name == name:
            dims = info.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims[1:]):
                return tuple(d.dim_value for d in dims[1:])
    return None


@dataclass(frozen=True)
class Plausible:
    """One family the evidence allows, the shape it sees (None: the data's own) and why."""

    family: str
    view: tuple[int, ...] | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "view": None if self.view is None else list(self.view),
                "why": self.why}  # fmt: skip


@dataclass(frozen=True)
class FamilyEvidence:
    """The families worth sizing (the evidence's choice first) and the evidence as text."""

    structure: TeacherStructure
    families: tuple[Plausible, ...]
    evidence: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.families:
            raise BadInputError("; ".join(self.evidence) or "no student family fits")

    def to_dict(self) -> dict[str, Any]:
        return {
            "structure": self.structure.to_dict(),
            "families": [p.to_dict() for p in self.families],
            "evidence": list(self.evidence),
        }


def plausible_families(
    structure: TeacherStructure,
    input_kind: str,
    shapes: Sequence[tuple[int, ...]],
    float_input: bool,
) -> FamilyEvidence:
    """The families a teacher of ``structure`` over this data makes plausible (see the module
    docstring). ``shapes``: each input's per-sample shape; ``float_input``: a single float input.

    >>> conv = TeacherStructure("pytorch modules", {"conv1d": 3, "linear": 1})
    >>> [p.family for p in plausible_families(conv, "vector", [(40,)], True).families]
    ['cnn1d', 'mlp']
    """
    from edgekd.students import families_for

    said = [structure.describe()]
    if not structure.known or input_kind in ("tokens", "multi") or not float_input:
        rank = [
            Plausible(f.name, None, f"takes {input_kind} inputs") for f in families_for(input_kind)
        ]
        if input_kind == "tokens":
            rank = _token_order(structure, rank, said)
        else:
            said.append(f"families chosen by the data's shape ({input_kind} inputs)")
        return FamilyEvidence(structure, tuple(rank), tuple(said))
    (shape,) = shapes
    found: list[Plausible] = []
    if structure.has("conv2d"):
        found += _image_families(structure, shape, said)
    if structure.has("conv1d") or structure.has("recurrent"):
        found += _sequence_families(structure, shape, said)
    if found:
        found.append(Plausible("mlp", None, "takes any shape; tried beside the evidence's choice"))
        return FamilyEvidence(structure, tuple(found), tuple(said))
    if structure.has("linear") and not structure.has("attention"):
        said.append("only linear layers: an MLP keeps everything the teacher uses")
        return FamilyEvidence(
            structure, (Plausible("mlp", None, "linear-only teacher"),), tuple(said)
        )
    rank = [Plausible(f.name, None, f"takes {input_kind} inputs") for f in families_for(input_kind)]
    said.append(
        f"no layer that implies a family; families chosen by the data's shape ({input_kind})"
    )
    return FamilyEvidence(structure, tuple(rank), tuple(said))


def _image_families(
    structure: TeacherStructure, shape: tuple[int, ...], said: list[str]
) -> list[Plausible]:
    import math

    from edgekd.students import student_view

    seen = structure.first_conv_input
    if len(shape) == 3:
        view, how = None, f"the data is already an image {list(shape)}"
    elif seen is not None and len(seen) == 3 and math.prod(seen) == math.prod(shape):
        view, how = tuple(seen), f"the teacher reshapes {list(shape)} to {list(seen)}"
    else:
        view = student_view("cnn", shape)
        how = f"{list(shape)} read as a square image {list(view)}" if view else ""
    if len(shape) != 3 and view is None:
        said.append(
            f"2-D convolutions, but {list(shape)} is not a square and the teacher's own view was "
            "not seen: image students cannot know H and W"
        )
        return []
    said.append(f"2-D convolutions: image students ({how})")
    return [Plausible(f, view, f"2-D conv teacher; {how}") for f in ("cnn", "mobilenet")]


def _sequence_families(
    structure: TeacherStructure, shape: tuple[int, ...], said: list[str]
) -> list[Plausible]:
    from edgekd.students import student_view

    what = "1-D convolutions" if structure.has("conv1d") else "recurrent layers"
    if len(shape) == 2:
        view, how = None, f"the data is already channels x length {list(shape)}"
    elif len(shape) == 1:
        view = student_view("cnn1d", shape)
        how = f"the student adds the channel axis itself ({list(shape)} as {list(view)})"
    else:
        said.append(f"{what}, but the data is {list(shape)}: no 1-D student over it")
        return []
    said.append(f"{what}: 1-D conv students ({how})")
    return [Plausible("cnn1d", view, f"{what} in the teacher; {how}")]


def _token_order(
    structure: TeacherStructure, rank: list[Plausible], said: list[str]
) -> list[Plausible]:
    if structure.has("attention"):
        said.append("attention over token ids: a transformer student first")
        first = "transformer"
    elif structure.has("embedding") or structure.has("recurrent"):
        said.append("an embedding table without attention: a pooled-embedding student first")
        first = "tokenpool"
    else:
        said.append("token ids: families for tokens")
        return rank
    return sorted(rank, key=lambda p: p.family != first)
