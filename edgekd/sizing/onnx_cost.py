"""What an ONNX graph costs: MACs, FLOPs, parameters, bytes moved and peak activation memory.

Everything here is read from the graph itself (after ONNX shape inference with the batch and any
other symbolic dimensions fixed), never from a run, so it is exact for the graph as written and the
same on every machine. Counting conventions:

* MACs are multiply-accumulates of the matrix ops (Conv, ConvTranspose, Gemm, MatMul and their
  quantized forms); FLOPs = 2 x MACs + bias adds + the elementwise work of every other op (about one
  operation per output element, a small constant more where the op obviously does more).
* Bytes use each tensor's real dtype (int8 = 1 byte, int4 = half a byte). Constants (initializers
  and ``Constant`` nodes) are *weights*; everything else, graph inputs included, is *activation*.
* An op we do not know costs no compute, only the bytes it reads and writes; its type is listed in
  ``GraphCost.unknown_ops`` so nobody mistakes "zero" for "free".

Counting FLOPs from the graph is the baseline latency predictor of HELP (Lee et al., NeurIPS 2021,
https://arxiv.org/abs/2106.08630); ``edgekd.sizing.roofline``
turns these counts into a roofline time.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto, helper, shape_inference

from edgekd.errors import BadInputError

Shape = tuple[int, ...]

# --- dtypes --------------------------------------------------------------------------------------

_BITS = {
    TensorProto.FLOAT: 32, TensorProto.DOUBLE: 64, TensorProto.FLOAT16: 16,
    TensorProto.BFLOAT16: 16, TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16,
    TensorProto.UINT16: 16, TensorProto.INT32: 32, TensorProto.UINT32: 32, TensorProto.INT64: 64,
    TensorProto.UINT64: 64, TensorProto.BOOL: 8, TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128, TensorProto.STRING: 0,
}
for _name, _bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("FLOAT8E4M3FN", 8),
                     ("FLOAT8E4M3FNUZ", 8), ("FLOAT8E5M2", 8), ("FLOAT8E5M2FNUZ", 8)):
    if hasattr(TensorProto, _name):  # newer dtypes, absent from older onnx releases
        _BITS[getattr(TensorProto, _name)] = _bits

_PRECISION = {
    TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16",
    TensorProto.DOUBLE: "fp64", TensorProto.INT8: "int8", TensorProto.UINT8: "int8",
}

# Integer dtypes that hold shapes, indices or flags, never learned weights.
_INDEX_DTYPES = {TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING}


def _nbytes(shape: Shape | None, dtype: int) -> int:
    if shape is None:
        return 0
    return math.ceil(math.prod(shape) * _BITS.get(dtype, 0) / 8)


def _precision(dtype: int) -> str:
    return _PRECISION.get(dtype, TensorProto.DataType.Name(dtype).lower() if dtype else "unknown")


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCost:
    """The cost of one node. ``precision`` is the arithmetic the node runs in (fp32, fp16, int8...);
    bytes are ``input_bytes`` (activations read), ``weight_bytes`` (constants read) and
    ``output_bytes`` (activations written)."""

    name: str
    op_type: str
    macs: int
    flops: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int
    precision: str


@dataclass(frozen=True)
class GraphCost:
    """What one forward pass of a graph costs, at ``batch_size`` and ``input_shapes``.

    ``params`` counts elements of constants that are learned weights (float and int8 weights,
    biases); shape tensors, scales, zero points and BatchNormalization running statistics are not
    parameters (PyTorch keeps the latter as buffers). ``weight_bytes`` is every constant the graph
    stores. ``peak_activation_bytes`` is the most activation memory alive at once when nodes run in
    topological order, each tensor kept from its producer to its last consumer, graph inputs
    included and constants excluded. ``unknown_shapes`` names tensors shape inference could not
    size (their bytes count as 0).
    """

    nodes: tuple[NodeCost, ...]
    macs: int
    flops: int
    params: int
    weight_bytes: int
    peak_activation_bytes: int
    unknown_ops: tuple[str, ...]
    batch_size: int = 1
    input_shapes: tuple[tuple[str, Shape], ...] = ()
    unknown_shapes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shapes"] = {name: list(shape) for name, shape in self.input_shapes}
        return d


# --- op tables -----------------------------------------------------------------------------------

# Matrix ops: op_type -> (activation input slot, weight input slot, bias slot or None).
_CONV_OPS = {"Conv": (0, 1, 2), "ConvInteger": (0, 1, None), "QLinearConv": (0, 3, 8),
             "FusedConv": (0, 1, 2)}
_MATMUL_OPS = {"MatMul": (0, 1, None), "MatMulInteger": (0, 1, None),
               "QLinearMatMul": (0, 3, None), "MatMulIntegerToFloat": (0, 1, 4),
               "DynamicQuantizeMatMul": (0, 1, 4)}
_GEMM_OPS = {"Gemm": (0, 1, 2), "QGemm": (0, 3, 6)}
_CONV_TRANSPOSE_OPS = {"ConvTranspose": (0, 1, 2)}

# Matrix ops that run integer arithmetic whatever their output dtype.
_INT8_OPS = {"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul",
             "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm"}

# Elementwise ops: FLOPs per output element. 1 for one arithmetic op or compare; more where the op
# plainly does several (sigmoid = exp + add + divide + negate, softmax = max, subtract, exp, sum,
# divide; a normalisation = mean, subtract, square, mean, divide, scale, shift, plus a sqrt).
_ELEMENTWISE = {
    **dict.fromkeys(
        ["Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Max", "Min", "Neg", "Abs",
         "Clip", "Sqrt", "Reciprocal", "Pow", "Exp", "Log", "Where", "Equal", "Less", "Greater",
         "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Floor", "Ceil", "Round",
         "Sign", "Mod", "Cast", "Sum", "Mean", "ThresholdedRelu", "IsNaN", "IsInf", "BitShift",
         "QuantizeLinear", "DequantizeLinear"], 1),
    **dict.fromkeys(["HardSigmoid", "Elu", "Selu", "Celu", "Softplus", "Softsign"], 3),
    **dict.fromkeys(["Sigmoid", "Tanh", "HardSwish", "Erf", "Sin", "Cos"], 4),
    **dict.fromkeys(["Softmax", "LogSoftmax", "Hardmax", "Mish", "DynamicQuantizeLinear"], 5),
    "Gelu": 8, "BatchNormalization": 2, "LpNormalization": 3,
    **dict.fromkeys(["LayerNormalization", "InstanceNormalization", "GroupNormalization",
                     "MeanVarianceNormalization", "SimplifiedLayerNormalization"], 8),
}

# Reductions read every input element once.
_REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceSum",
           "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin"}

# Windowed pools: one op per window element per output element.
_WINDOWED = {"MaxPool", "AveragePool", "LpPool"}

# Ops that only move, view or describe data: known, no arithmetic.
_DATA_MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
                  "Slice", "Gather", "GatherElements", "GatherND", "Identity", "Shape", "Size",
                  "Expand", "Pad", "Tile", "Constant", "ConstantOfShape", "Dropout", "Resize",
                  "Upsample", "DepthToSpace", "SpaceToDepth", "ScatterND", "ScatterElements",
                  "Range", "NonZero", "TopK", "CumSum", "Trilu", "OneHot", "EyeLike"}

# Constant inputs that are not learned weights: op_type -> input slots (shapes, axes, scales,
# zero points, and BatchNormalization's running mean/var, which PyTorch keeps as buffers).
_NOT_WEIGHT_SLOTS = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3},
    "Unsqueeze": {1}, "Squeeze": {1}, "Split": {1}, "Resize": {1, 2, 3}, "Upsample": {1},
    "TopK": {1}, "Clip": {1, 2}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "BatchNormalization": {3, 4}, "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
    "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "MatMulIntegerToFloat": {2, 3, 5, 6}, "DynamicQuantizeMatMul": {2, 3},
    "QGemm": {1, 2, 4, 5, 7, 8},
}


# --- loading and shapes --------------------------------------------------------------------------


def _load(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)  # we rewrite shapes; never touch the caller's model
        return model
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: ONNX model not found")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf raises several unrelated types for a corrupt file
        raise BadInputError(f"{path}: not a readable ONNX model ({exc})") from None


def _fix_input_shapes(
    model: onnx.ModelProto, batch_size: int, input_shapes: dict[str, list[int]]
) -> tuple[tuple[str, Shape], ...]:
    """Make every graph input's shape concrete: ``input_shapes`` first, then a symbolic first dim
    becomes ``batch_size``. Any other symbolic dim is an error that says what to pass; so is a
    ``batch_size`` other than 1 for an input whose first dim is fixed to another value."""
    constants = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in constants]
    unknown = set(input_shapes) - {i.name for i in graph_inputs}
    if unknown:
        names = ", ".join(i.name for i in graph_inputs)
        raise BadInputError(f"input_shapes names {sorted(unknown)}, the graph's inputs are {names}")
    fixed = []
    for inp in graph_inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in input_shapes:
            want = [int(d) for d in input_shapes[inp.name]]
            if len(want) != len(dims) or any(d < 1 for d in want):
                raise BadInputError(
                    f"input_shapes[{inp.name!r}] = {want} does not fit the input's rank {len(dims)}"
                )
            for dim, value in zip(dims, want, strict=True):
                if dim.HasField("dim_value") and dim.dim_value not in (0, value):
                    raise BadInputError(
                        f"input {inp.name!r} has a fixed size {dim.dim_value}, "
                        f"input_shapes asks for {value}"
                    )
                dim.dim_value = value
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                # A fixed first dim stays; asking for another batch size than it is an error,
                # but the default batch_size=1 means "as the graph says".
                fixed_batch = axis == 0 and inp.name not in input_shapes and batch_size != 1
                if fixed_batch and dim.dim_value != batch_size:
                    raise BadInputError(
                        f"input {inp.name!r} has a fixed batch size {dim.dim_value}; "
                        f"batch_size={batch_size} cannot apply (export with a dynamic batch axis)"
                    )
                continue
            if axis == 0:
                dim.dim_value = batch_size
            else:
                label = dim.dim_param or "?"
                raise BadInputError(
                    f"input {inp.name!r} dim {axis} is symbolic ({label!r}); "
                    f"pass input_shapes={{{inp.name!r}: [...]}}"
                )
        fixed.append((inp.name, tuple(d.dim_value for d in dims)))
    return tuple(fixed)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    # Shapes recorded at export time still carry the symbolic batch: drop them and infer afresh.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        # data_prop follows Shape -> Gather -> Concat -> Reshape chains, which dynamic-batch
        # exports use for every flatten.
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and, for bad protos, others
        raise BadInputError(f"ONNX shape inference failed: {exc}") from None


def _tensor_types(model: onnx.ModelProto) -> dict[str, tuple[Shape | None, int]]:
    types: dict[str, tuple[Shape | None, int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        shape: Shape | None = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shape = tuple(d.dim_value for d in tt.shape.dim)
        types[vi.name] = (shape, tt.elem_type)
    for init in model.graph.initializer:
        types[init.name] = (tuple(init.dims), init.data_type)
    return types


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors an If/Loop/Scan body reads: the node consumes them too."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for sub in g.node:
                local |= set(sub.output)
            for sub in g.node:
                names |= {n for n in sub.input if n and n not in local}
                names |= _subgraph_inputs(sub) - local
            names |= {o.name for o in g.output if o.name not in local}
    return names


def _topological(nodes: Iterable[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in a topological order, keeping the file's order wherever it is already valid."""
    pending = list(nodes)
    ready = set(available)
    order: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            needs = {n for n in node.input if n} | _subgraph_inputs(node)
            if needs <= ready:
                order.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({n for node in rest for n in node.input if n and n not in ready})
            raise BadInputError(f"graph has a cycle or undefined inputs: {missing[:5]}")
        pending = rest
    return order


# --- per-node counting ---------------------------------------------------------------------------


@dataclass
class _Ctx:
    types: dict[str, tuple[Shape | None, int]]
    producers: dict[str, onnx.NodeProto]

    def shape(self, node: onnx.NodeProto, slot: int) -> Shape | None:
        if slot >= len(node.input) or not node.input[slot]:
            return None
        return self.types.get(node.input[slot], (None, 0))[0]

    def out_shape(self, node: onnx.NodeProto) -> Shape | None:
        return self.types.get(node.output[0], (None, 0))[0] if node.output else None

    def has(self, node: onnx.NodeProto, slot: int | None) -> bool:
        return slot is not None and slot < len(node.input) and bool(node.input[slot])


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv_macs(node: onnx.NodeProto, ctx: _Ctx, slots: tuple[int, int, int | None]) -> int | None:
    # weight [M, C_in/groups, kH, kW, ...]: each output element sums C_in/groups * kH * kW products,
    # which covers grouped and depthwise convolutions with no special case.
    w, out = ctx.shape(node, slots[1]), ctx.out_shape(node)
    if w is None or out is None:
        return None
    return math.prod(out) * math.prod(w[1:])


def _conv_transpose_macs(
    node: onnx.NodeProto, ctx: _Ctx, slots: tuple[int, int, int | None]
) -> int | None:
    # weight [C_in, M/groups, kH, kW]: every input element is scattered into M/groups * kH * kW
    # outputs, one multiply-accumulate each.
    x, w = ctx.shape(node, slots[0]), ctx.shape(node, slots[1])
    if x is None or w is None:
        return None
    return math.prod(x) * math.prod(w[1:])


def _matmul_macs(node: onnx.NodeProto, ctx: _Ctx, slots: tuple[int, int, int | None]) -> int | None:
    # numpy matmul semantics: output [..., M, N], each element a K-long dot product.
    a, out = ctx.shape(node, slots[0]), ctx.out_shape(node)
    if a is None or out is None or not a:
        return None
    return math.prod(out) * a[-1]


def _gemm_macs(node: onnx.NodeProto, ctx: _Ctx, slots: tuple[int, int, int | None]) -> int | None:
    a, out = ctx.shape(node, slots[0]), ctx.out_shape(node)
    if a is None or out is None:
        return None
    k = a[0] if _attr(node, "transA", 0) else a[1]
    return math.prod(out) * k


_MAC_RULES: dict[str, tuple[Callable[..., int | None], tuple[int, int, int | None]]] = {}
for _table, _rule in ((_CONV_OPS, _conv_macs), (_MATMUL_OPS, _matmul_macs),
                      (_GEMM_OPS, _gemm_macs), (_CONV_TRANSPOSE_OPS, _conv_transpose_macs)):
    for _op, _slots in _table.items():
        _MAC_RULES[_op] = (_rule, _slots)


def _is_qdq(node: onnx.NodeProto, ctx: _Ctx, slots: tuple[int, int, int | None]) -> bool:
    """QDQ format: both operands of a float matrix op come out of DequantizeLinear, which tells the
    runtime to fuse DQ -> op -> Q into one int8 kernel."""
    producers = [ctx.producers.get(node.input[s]) for s in slots[:2] if ctx.has(node, s)]
    return bool(producers) and all(p is not None and p.op_type == "DequantizeLinear"
                                   for p in producers)


def _node_cost(
    node: onnx.NodeProto, ctx: _Ctx, constants: set[str], unknown: set[str]
) -> NodeCost:
    op = node.op_type
    out_shape = ctx.out_shape(node)
    out_elems = math.prod(out_shape) if out_shape is not None else 0
    macs, flops = 0, 0
    inputs = list(node.input)
    first_dtype = ctx.types.get(node.output[0], (None, 0))[1] if node.output else 0
    precision = _precision(first_dtype or (ctx.types.get(inputs[0], (None, 0))[1] if inputs else 0))

    if op in _MAC_RULES:
        rule, slots = _MAC_RULES[op]
        macs = rule(node, ctx, slots) or 0
        bias = out_elems if ctx.has(node, slots[2]) else 0
        flops = 2 * macs + bias
        x_dtype = ctx.types.get(inputs[slots[0]], (None, 0))[1]
        if op in _INT8_OPS:
            precision = "int8"
        elif _is_qdq(node, ctx, slots):
            precision = "int8"
            # Count the bytes the fused int8 kernel moves: the DequantizeLinear inputs, not its
            # float outputs (a weight behind DQ is a constant again).
            for s in slots[:2]:
                if ctx.has(node, s):
                    inputs[s] = ctx.producers[node.input[s]].input[0]
        else:
            precision = _precision(x_dtype)
    elif op in _ELEMENTWISE:
        flops = _ELEMENTWISE[op] * out_elems
    elif op in _REDUCE:
        x = ctx.shape(node, 0)
        flops = math.prod(x) if x is not None else 0
    elif op in _WINDOWED:
        flops = out_elems * math.prod(_attr(node, "kernel_shape", [1]))
    elif op not in _DATA_MOVEMENT:
        unknown.add(op if not node.domain or node.domain == "ai.onnx" else f"{node.domain}.{op}")

    weight_bytes = input_bytes = 0
    for name in inputs:
        if not name:
            continue
        nbytes = _nbytes(*ctx.types.get(name, (None, 0)))
        if name in constants:
            weight_bytes += nbytes
        else:
            input_bytes += nbytes
    output_bytes = sum(_nbytes(*ctx.types.get(o, (None, 0))) for o in node.output if o)
    return NodeCost(
        name=node.name or f"{op}_{node.output[0] if node.output else ''}",
        op_type=op,
        macs=macs,
        flops=flops,
        weight_bytes=weight_bytes,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        precision=precision,
    )


# --- graph totals --------------------------------------------------------------------------------


def _param_tensors(
    nodes: list[onnx.NodeProto], types: dict[str, tuple[Shape | None, int]], constants: set[str]
) -> set[str]:
    """Constants that are learned weights: read by some node in a weight slot, not an index dtype,
    not a scalar (exporters write scalar literals, like the 0.5 of ``x * 0.5``, as rank-0)."""
    weights = set()
    for node in nodes:
        skip = _NOT_WEIGHT_SLOTS.get(node.op_type, set())
        for slot, name in enumerate(node.input):
            if name not in constants or slot in skip:
                continue
            shape, dtype = types.get(name, (None, 0))
            if shape and dtype not in _INDEX_DTYPES:
                weights.add(name)
    return weights


def _peak_activation_bytes(
    order: list[onnx.NodeProto],
    graph_inputs: list[str],
    graph_outputs: list[str],
    sizes: dict[str, int],
) -> int:
    """Walk nodes in order; a tensor lives from its producer (step -1 for graph inputs) to its last
    consumer (to the end for graph outputs). Peak over steps of the live bytes, where a node's
    inputs and outputs are alive together while it runs."""
    end = len(order)
    born = dict.fromkeys(graph_inputs, -1)
    last_use = dict.fromkeys(graph_inputs, -1)
    for step, node in enumerate(order):
        for name in [*node.input, *_subgraph_inputs(node)]:
            if name in sizes:
                last_use[name] = step
        for name in node.output:
            if name in sizes:
                born[name] = step
                last_use.setdefault(name, step)  # an unused output still gets written
    for name in graph_outputs:
        if name in born:
            last_use[name] = end
    # Sweep: +bytes at birth, -bytes after last use.
    delta = [0] * (end + 3)
    for name, b in born.items():
        delta[b + 1] += sizes[name]
        delta[last_use[name] + 2] -= sizes[name]
    peak = live = 0
    for d in delta[: end + 1]:
        live += d
        peak = max(peak, live)
    return peak


def analyze_onnx(
    model_or_path: onnx.ModelProto | str | os.PathLike[str],
    batch_size: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
) -> GraphCost:
    """Count what one forward pass of an ONNX graph costs, exactly, from the graph alone.

    The first symbolic dimension of every input becomes ``batch_size``; any other symbolic
    dimension must be given in ``input_shapes`` (full shapes, by input name).

    >>> cost = analyze_onnx("student.onnx", batch_size=4)  # doctest: +SKIP
    >>> cost.macs, cost.params, cost.peak_activation_bytes  # doctest: +SKIP
    (1327104, 23466, 73728)
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    model = _load(model_or_path)
    fixed = _fix_input_shapes(model, batch_size, dict(input_shapes or {}))
    model = _infer(model)
    graph = model.graph
    types = _tensor_types(model)

    constants = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
    graph_inputs = [name for name, _ in fixed]
    order = _topological(graph.node, constants | set(graph_inputs))
    producers = {o: n for n in order for o in n.output}
    ctx = _Ctx(types=types, producers=producers)

    unknown: set[str] = set()
    nodes = tuple(_node_cost(n, ctx, constants, unknown) for n in order)

    activations = set(graph_inputs) | ({o for n in order for o in n.output if o} - constants)
    sizes = {name: _nbytes(*types.get(name, (None, 0))) for name in activations}
    unsized = sorted(name for name in activations if types.get(name, (None, 0))[0] is None)
    params = _param_tensors(order, types, constants)
    return GraphCost(
        nodes=nodes,
        macs=sum(n.macs for n in nodes),
        flops=sum(n.flops for n in nodes),
        params=sum(math.prod(types[name][0] or ()) for name in params),
        weight_bytes=sum(_nbytes(*types.get(name, (None, 0))) for name in constants),
        peak_activation_bytes=_peak_activation_bytes(
            order, graph_inputs, [o.name for o in graph.output], sizes
        ),
        unknown_ops=tuple(sorted(unknown)),
        batch_size=batch_size,
        input_shapes=fixed,
        unknown_shapes=tuple(unsized),
    )
