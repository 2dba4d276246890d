"""Export: checker + shape inference, dynamic batch, integer multi-input models, simplification,
parity failures that leave no file, and export errors that name the module and operator."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInputError, DataError, ExportError, ParityError
from edgekd.export import ParityThresholds, export_onnx
from edgekd.students import build_student
from edgekd.students.checkpoint import save_model

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 8)).astype(np.float32)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_checks_stores_shapes_and_has_a_dynamic_batch(tmp_path):
    model, path = _mlp(), tmp_path / "m.onnx"
    result = export_onnx(model, path, {"x": X[:1]}, 17, {"x": X}, simplify=False)
    graph = onnx.load(str(path)).graph
    assert graph.value_info, "shape inference results are stored in the graph"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 5):
        got = _session(path).run(None, {"x": X[:n]})[0]
        want = model(torch.from_numpy(X[:n])).detach().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert result.max_abs_diff <= 1e-3 and result.top1_agreement == 1.0
    assert result.parity_samples == 64 and result.opset == 17


@pytest.mark.parametrize("simplify", [True, False])
def test_simplification_is_optional_and_keeps_parity(tmp_path, simplify):
    path = tmp_path / "m.onnx"
    result = export_onnx(_mlp(), path, {"x": X[:1]}, 17, {"x": X}, simplify=simplify)
    assert result.simplified is simplify
    assert ("onnxslim" in result.simplify_note) is simplify
    assert result.nodes == len(onnx.load(str(path)).graph.node)


class TinyTextClassifier(nn.Module):
    """Token ids + attention mask -> masked mean of embeddings -> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def test_multi_input_model_with_integer_token_ids(tmp_path):
    torch.manual_seed(0)
    ids = RNG.integers(0, 50, (32, 6)).astype(np.int64)
    mask = (RNG.random((32, 6)) > 0.3).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": mask}
    path = tmp_path / "text.onnx"
    result = export_onnx(
        TinyTextClassifier(), path, {k: v[:1] for k, v in inputs.items()}, 17, inputs
    )
    assert result.input_names == ("input_ids", "attention_mask")
    assert result.input_dtypes == ("int64", "int64")
    sess = _session(path)
    assert [i.type for i in sess.get_inputs()] == ["tensor(int64)", "tensor(int64)"]
    assert sess.run(None, {k: v[:7] for k, v in inputs.items()})[0].shape == (7, 3)


class DiffersWhenExported(nn.Module):
    def forward(self, x):
        return x + 1.0 if torch.onnx.is_in_onnx_export() else x


def test_parity_failure_is_an_error_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="no file written"):
        export_onnx(nn.Sequential(_mlp(), DiffersWhenExported()), path, {"x": X[:1]}, 17)
    assert list(tmp_path.iterdir()) == []


def test_thresholds_are_configurable_and_checked(tmp_path):
    # The +1 offset breaks the default 1e-3 bound but not a loose one (top-1 is unchanged).
    loose = ParityThresholds(max_abs_diff=1.5, min_top1_agreement=1.0)
    model = nn.Sequential(_mlp(), DiffersWhenExported())
    result = export_onnx(model, tmp_path / "m.onnx", {"x": X[:1]}, 17, {"x": X}, loose)
    assert result.max_abs_diff == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(BadInputError, match="max_abs_diff"):
        ParityThresholds(max_abs_diff=-1.0)
    with pytest.raises(BadInputError, match="min_top1_agreement"):
        ParityThresholds(min_top1_agreement=1.5)


class Bessel(nn.Module):
    def forward(self, x):
        return torch.special.i0(x)  # no ONNX symbolic in the TorchScript exporter


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent Python control flow
            return x * 2
        return x


class Net(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.body = nn.Sequential(nn.ReLU(), inner)

    def forward(self, x):
        return self.body(self.fc(x))


def test_unsupported_operator_error_names_operator_and_module(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(Net(Bessel()), tmp_path / "m.onnx", {"x": X[:1]}, 17, {"x": X})
    message = str(info.value)
    assert "aten::i0" in message and "'body.1' (Bessel)" in message and "hint" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_control_flow_error_names_module_and_line(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(Net(Gate()), tmp_path / "m.onnx", {"x": X[:1]}, 17, {"x": X})
    message = str(info.value)
    assert "control flow" in message and "'body.1' (Gate)" in message
    assert "test_export.py:" in message and "torch.where" in message


def test_parity_inputs_must_match_model_inputs(tmp_path):
    with pytest.raises(DataError, match="do not match"):
        export_onnx(_mlp(), tmp_path / "m.onnx", {"x": X[:1]}, 17, {"y": X})


@pytest.mark.parametrize(
    ("family", "shape"), [("cnn", (1, 8, 8)), ("mobilenet", (1, 8, 8)), ("cnn1d", (1, 40))]
)
def test_student_families_export_without_tracer_notes(tmp_path, family, shape):
    model = build_student(family, shape, 10, 0.5, 2)
    x = RNG.random((16, *shape)).astype(np.float32)
    result = export_onnx(model, tmp_path / "s.onnx", {"x": x[:1]}, 17, {"x": x})
    assert result.notes == ()


def test_cli_export_checkpoint(tmp_path):
    ckpt = tmp_path / "student.safetensors"
    save_model(build_student("cnn", (1, 8, 8), 10, 0.5, 1), ckpt)
    out = tmp_path / "student.onnx"
    res = CliRunner().invoke(
        app, ["export", str(ckpt), "--target", "mobile", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert out.is_file() and result["opset"] == 17 and result["parity_samples"] > 100


def test_cli_export_refuses_missing_checkpoint_and_wrong_data(tmp_path):
    res = CliRunner().invoke(app, ["export", str(tmp_path / "nope.safetensors")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    ckpt = tmp_path / "mlp.safetensors"
    save_model(build_student("mlp", (40,), 10, 0.5, 1), ckpt)
    res = CliRunner().invoke(app, ["export", str(ckpt)])  # digits are 1x8x8, not 40
    assert res.exit_code == 2 and "shape" in res.output
    assert not (tmp_path / "mlp.onnx").exists()
