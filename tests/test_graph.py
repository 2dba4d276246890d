"""edgekd.sizing.onnx_cost: MACs, params, bytes and peak activation memory against hand counts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgekd.errors import BadInputError
from edgekd.sizing.onnx_cost import analyze_onnx

torch.set_num_threads(1)


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.randn(*shape),), path, dynamo=False, input_names=["x"],
            output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return path


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def vi(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def only(cost, op_type: str):
    (node,) = [n for n in cost.nodes if n.op_type == op_type]
    return node


# --- MACs ----------------------------------------------------------------------------------------


def test_conv_macs_match_hand_count(tmp_path):
    cost = analyze_onnx(export(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 8, 8), tmp_path / "c.onnx"))
    # output 1x8x8x8 = 512 elements, each a sum over C_in * kH * kW = 3 * 3 * 3 = 27 products
    assert cost.macs == 8 * 8 * 8 * (3 * 3 * 3) == 13824
    # 2 FLOPs per MAC, plus one bias add per output element
    assert cost.flops == 2 * 13824 + 512
    conv = only(cost, "Conv")
    assert conv.weight_bytes == (8 * 3 * 3 * 3 + 8) * 4
    assert conv.input_bytes == 3 * 8 * 8 * 4 and conv.output_bytes == 8 * 8 * 8 * 4
    assert conv.precision == "fp32"


def test_depthwise_conv_macs(tmp_path):
    model = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    cost = analyze_onnx(export(model, (1, 8, 8, 8), tmp_path / "dw.onnx"))
    # each of the 8*8*8 outputs sees one input channel: C_in / groups = 1, times 3 * 3
    assert cost.macs == 8 * 8 * 8 * (8 // 8) * 3 * 3 == 4608


def test_conv_transpose_macs(tmp_path):
    model = nn.ConvTranspose2d(4, 2, 2, stride=2, bias=False)
    cost = analyze_onnx(export(model, (1, 4, 3, 3), tmp_path / "ct.onnx"))
    # every input element (4*3*3 = 36) is scattered into C_out * kH * kW = 2 * 2 * 2 outputs
    assert cost.macs == 36 * 8 == 288


def test_linear_gemm_macs(tmp_path):
    cost = analyze_onnx(export(nn.Linear(64, 10), (1, 64), tmp_path / "fc.onnx"))
    assert only(cost, "Gemm").macs == 64 * 10 == 640
    assert cost.flops == 2 * 640 + 10


def test_batched_matmul_macs():
    model = make_model(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        [vi("a", TensorProto.FLOAT, [2, 4, 5]), vi("b", TensorProto.FLOAT, [2, 5, 3])],
        [vi("y", TensorProto.FLOAT, [2, 4, 3])],
    )
    cost = analyze_onnx(model)
    # 2 batches of a [4,5] x [5,3] product: 4*3 outputs, each a 5-long dot product
    assert cost.macs == 2 * 4 * 3 * 5 == 120
    assert only(cost, "MatMul").input_bytes == (2 * 4 * 5 + 2 * 5 * 3) * 4


def test_batch_size_scales_macs_and_activations(tmp_path):
    path = export(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 8, 8), tmp_path / "c.onnx")
    one, four = analyze_onnx(path), analyze_onnx(path, batch_size=4)
    assert four.macs == 4 * one.macs == 4 * 13824
    assert four.peak_activation_bytes == 4 * one.peak_activation_bytes
    assert four.params == one.params and four.weight_bytes == one.weight_bytes
    assert dict(four.input_shapes) == {"x": (4, 3, 8, 8)}


def test_model_proto_is_not_modified(tmp_path):
    model = onnx.load(export(nn.Linear(4, 2), (1, 4), tmp_path / "fc.onnx"))
    before = model.SerializeToString()
    analyze_onnx(model, batch_size=3)
    assert model.SerializeToString() == before


# --- params --------------------------------------------------------------------------------------


def test_params_match_torch_for_mlp(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    cost = analyze_onnx(export(model, (1, 64), tmp_path / "mlp.onnx"))
    assert cost.params == sum(p.numel() for p in model.parameters()) == 2410
    assert cost.weight_bytes == 2410 * 4


def test_params_for_cnn_with_folded_batchnorm(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    cost = analyze_onnx(export(model, (1, 3, 8, 8), tmp_path / "cnn.onnx"))
    torch_params = sum(p.numel() for p in model.parameters())
    # The exporter folds each eval-mode BatchNorm into the Conv before it: gamma/beta (2C
    # parameters) vanish into the conv weight and bias. The first conv had no bias, so folding
    # gives it one (C new); the second already had one. Net: -2*8 + 8 - 2*16 = -40.
    assert torch_params == 216 + 16 + 1152 + 16 + 32 + 170
    assert cost.params == torch_params - 2 * 8 + 8 - 2 * 16 == 1562
    assert not any(n.op_type == "BatchNormalization" for n in cost.nodes)
    assert cost.unknown_ops == ()


def test_shape_constants_scalars_and_bn_statistics_are_not_params():
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    half = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")
    bn = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("g", "b", "mu", "var")]
    model = make_model(
        [
            helper.make_node("BatchNormalization", ["x", "g", "b", "mu", "var"], ["n"]),
            helper.make_node("Mul", ["n", "half"], ["m"]),
            helper.make_node("Reshape", ["m", "shape"], ["y"]),
        ],
        [vi("x", TensorProto.FLOAT, ["batch", 4, 2, 2])],
        [vi("y", TensorProto.FLOAT, ["batch", 16])],
        [shape, half, *bn],
    )
    cost = analyze_onnx(model)
    assert cost.params == 4 + 4  # gamma and beta only, as in torch's BatchNorm2d.parameters()
    assert cost.weight_bytes == 2 * 8 + 4 + 4 * 16  # but every constant is stored


# --- peak activation memory ----------------------------------------------------------------------


def test_peak_activation_bytes_hand_built():
    # x[1,100] f32 = 400 B; the bias initializer is a weight and never counts.
    #   n0: a = Add(x, bias)   [1,100] 400 B   live: x, a            =  800
    #   n1: b = Concat(a, x)   [1,200] 800 B   live: x, a, b         = 1600  (x dies after n1)
    #   n2: c = Relu(b)        [1,200] 800 B   live: a, b, c         = 2000  (b dies after n2)
    #   n3: y = Concat(c, a)   [1,300] 1200 B  live: a, c, y         = 2400  <- peak
    bias = numpy_helper.from_array(np.zeros((1, 100), np.float32), "bias")
    model = make_model(
        [
            helper.make_node("Add", ["x", "bias"], ["a"]),
            helper.make_node("Concat", ["a", "x"], ["b"], axis=1),
            helper.make_node("Relu", ["b"], ["c"]),
            helper.make_node("Concat", ["c", "a"], ["y"], axis=1),
        ],
        [vi("x", TensorProto.FLOAT, [1, 100])],
        [vi("y", TensorProto.FLOAT, [1, 300])],
        [bias],
    )
    cost = analyze_onnx(model)
    assert cost.peak_activation_bytes == 400 + 800 + 1200 == 2400
    assert cost.weight_bytes == 400


def test_peak_activation_uses_real_dtype_sizes():
    # int8 input [1,1000] = 1000 B, cast to f32 = 4000 B: both alive while Cast runs.
    model = make_model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        [vi("x", TensorProto.INT8, [1, 1000])],
        [vi("y", TensorProto.FLOAT, [1, 1000])],
    )
    assert analyze_onnx(model).peak_activation_bytes == 1000 + 4000


# --- quantized graphs ----------------------------------------------------------------------------


def test_dynamic_quantized_mlp_counts_int8(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fp32 = export(model, (1, 64), tmp_path / "mlp.onnx")
    int8 = tmp_path / "mlp.int8.onnx"
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    f, q = analyze_onnx(fp32), analyze_onnx(int8)
    matmuls = [n for n in q.nodes if n.op_type == "MatMulInteger"]
    assert len(matmuls) == 2 and all(n.precision == "int8" for n in matmuls)
    assert q.macs == f.macs == 64 * 32 + 32 * 10
    assert q.params == f.params  # int8 weights are still parameters; scales are not
    # weights went from 4 bytes to 1: int8 matrices plus f32 biases plus a few scalar scales
    assert matmuls[0].weight_bytes == 64 * 32 + 1  # int8 matrix + its int8 zero point
    assert q.weight_bytes < f.weight_bytes / 3
    assert q.unknown_ops == ()


def test_qdq_conv_counts_int8_with_int8_bytes():
    w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w_q")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    model = make_model(
        [
            helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x"]),
            helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w"]),
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        ],
        [vi("x_q", TensorProto.INT8, [1, 2, 5, 5])],
        [vi("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [w, s, z],
    )
    cost = analyze_onnx(model)
    conv = only(cost, "Conv")
    assert conv.precision == "int8"
    assert conv.macs == 4 * 5 * 5 * 2 * 3 * 3
    # the fused kernel reads the int8 tensors behind the DequantizeLinear nodes
    assert conv.input_bytes == 2 * 5 * 5 and conv.weight_bytes == 4 * 2 * 3 * 3
    assert cost.params == 4 * 2 * 3 * 3


# --- shapes, unknown ops, serialisation ----------------------------------------------------------


def test_unknown_op_costs_bytes_only():
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Frobnicate", ["x"], ["y"], domain="example.custom")],
            "g",
            [vi("x", TensorProto.FLOAT, [1, 8])],
            [vi("y", TensorProto.FLOAT, [1, 8])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)],
    )
    cost = analyze_onnx(model)
    assert cost.unknown_ops == ("example.custom.Frobnicate",)
    (node,) = cost.nodes
    assert node.flops == 0 and node.macs == 0 and node.input_bytes == 32


def test_other_symbolic_dims_need_input_shapes():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [vi("y", TensorProto.FLOAT, ["batch", "seq", 16])],
    )
    with pytest.raises(BadInputError, match="seq"):
        analyze_onnx(model)
    cost = analyze_onnx(model, input_shapes={"x": [2, 7, 16]})
    assert cost.flops == 2 * 7 * 16
    with pytest.raises(BadInputError, match="input_shapes"):
        analyze_onnx(model, input_shapes={"nope": [1]})


def test_fixed_batch_dim_refuses_other_batch_size():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", TensorProto.FLOAT, [1, 16])],
        [vi("y", TensorProto.FLOAT, [1, 16])],
    )
    assert analyze_onnx(model).flops == 16
    with pytest.raises(BadInputError, match="fixed batch"):
        analyze_onnx(model, batch_size=2)


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        analyze_onnx(tmp_path / "nope.onnx")


def test_view_flatten_through_shape_ops(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return self.fc(y.view(y.size(0), -1))  # exported as Shape -> Gather -> Concat

    cost = analyze_onnx(export(Net(), (1, 1, 6, 6), tmp_path / "v.onnx"), batch_size=2)
    assert cost.unknown_shapes == ()
    assert cost.macs == 2 * (2 * 4 * 4 * 9 + 32 * 3)


def test_to_dict_is_json(tmp_path):
    cost = analyze_onnx(export(nn.Linear(8, 2), (1, 8), tmp_path / "fc.onnx"))
    d = json.loads(json.dumps(cost.to_dict()))
    assert d["macs"] == 16 and d["input_shapes"] == {"x": [1, 8]}
    assert d["nodes"][0]["op_type"] == "Gemm"
