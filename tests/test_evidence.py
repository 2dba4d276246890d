"""The teacher-structure reader (PyTorch and ONNX teachers of each kind), the families it makes
plausible, and students that take the user's shape unchanged (issue 16)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekd.export import trace_bytes
from edgekd.sizing.evidence import (
    TeacherStructure,
    plausible_families,
    structure_of_module,
    structure_of_onnx,
)
from edgekd.sizing.trial import augment_kind
from edgekd.students import build_student, student_view
from edgekd.students.checkpoint import load_model, save_model


class Conv1dOverFlat(nn.Module):
    """A 1-D signal classifier that takes ``[N, 40]`` and adds the channel axis itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x.unsqueeze(1)).flatten(1))


class Conv2dOverFlat(nn.Module):
    """An image classifier over flat ``[N, H*W]`` rows that reshapes them to ``(1, h, w)``."""

    def __init__(self, hw: tuple[int, int]) -> None:
        super().__init__()
        self.hw = hw
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x.reshape(-1, 1, *self.hw)).flatten(1))


class Attention(nn.Module):
    """Token ids -> embedding -> one attention block (MatMul, Softmax, MatMul) -> mean -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.qkv = nn.Linear(16, 48)
        self.fc = nn.Linear(16, 2)

    def forward(self, ids):
        h = self.embed(ids)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        attn = (q @ k.transpose(-2, -1) / 4.0).softmax(-1)
        return self.fc((attn @ v).mean(1))


class Pooled(nn.Module):
    """Token ids -> embedding -> mean -> logits: no attention."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, ids):
        return self.fc(self.embed(ids).mean(1))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(1, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        out, _ = self.rnn(x.unsqueeze(-1))
        return self.fc(out[:, -1])


def linear_only() -> nn.Module:
    return nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 10))


# (teacher, example input, data kind, layer kinds it must show, first plausible family)
TEACHERS = {
    "conv1d": (Conv1dOverFlat, np.zeros((1, 40), np.float32), "vector", {"conv1d"}, "cnn1d"),
    "conv2d": (
        lambda: Conv2dOverFlat((8, 8)),
        np.zeros((1, 64), np.float32),
        "vector",
        {"conv2d"},
        "cnn",
    ),
    "attention": (Attention, np.zeros((1, 12), np.int64), "tokens", {"attention"}, "transformer"),
    "embedding": (Pooled, np.zeros((1, 12), np.int64), "tokens", {"embedding"}, "tokenpool"),
    "recurrent": (Recurrent, np.zeros((1, 40), np.float32), "vector", {"recurrent"}, "cnn1d"),
    "linear": (linear_only, np.zeros((1, 40), np.float32), "vector", {"linear"}, "mlp"),
}


def _onnx(model: nn.Module, x: np.ndarray) -> onnx.ModelProto:
    """The teacher as a user would export it (the TorchScript exporter; an LSTM's tracer warning
    is the user's concern, not the reader's)."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.as_tensor(x),), buffer, dynamo=False, input_names=["x"],
            opset_version=17,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def _families(structure: TeacherStructure, x: np.ndarray, kind: str) -> list[str]:
    float_input = np.issubdtype(x.dtype, np.floating)
    found = plausible_families(structure, kind, [x.shape[1:]], float_input)
    assert found.evidence and found.evidence[0] == structure.describe()  # the report names it
    return [p.family for p in found.families]


@pytest.mark.parametrize("name", list(TEACHERS))
def test_pytorch_teacher_structure_and_family(name: str) -> None:
    build, x, kind, layers, first = TEACHERS[name]
    structure = structure_of_module(build(), [torch.as_tensor(x)])
    assert structure.source == "pytorch modules"
    assert layers <= {k for k, n in structure.layers.items() if n}
    assert _families(structure, x, kind)[0] == first


@pytest.mark.parametrize("name", list(TEACHERS))
def test_onnx_teacher_structure_and_family(name: str) -> None:
    build, x, kind, layers, first = TEACHERS[name]
    structure = structure_of_onnx(_onnx(build(), x))
    assert structure.source == "onnx operators"
    assert layers <= {k for k, n in structure.layers.items() if n}, structure.layers
    assert _families(structure, x, kind)[0] == first


def test_only_a_linear_teacher_implies_an_mlp_alone() -> None:
    linear = TeacherStructure("pytorch modules", {"linear": 3})
    assert _families(linear, np.zeros((1, 40), np.float32), "vector") == ["mlp"]
    conv = TeacherStructure("pytorch modules", {"conv1d": 2, "linear": 1})
    assert _families(conv, np.zeros((1, 40), np.float32), "vector") == ["cnn1d", "mlp"]


def test_same_data_in_two_shapes_gives_the_same_family() -> None:
    conv1d = TeacherStructure("pytorch modules", {"conv1d": 2, "linear": 1})
    flat = _families(conv1d, np.zeros((1, 40), np.float32), "vector")
    channels = _families(conv1d, np.zeros((1, 1, 40), np.float32), "sequence")
    assert flat == channels == ["cnn1d", "mlp"]
    conv2d = TeacherStructure("pytorch modules", {"conv2d": 2, "linear": 1})
    flat = _families(conv2d, np.zeros((1, 64), np.float32), "vector")
    image = _families(conv2d, np.zeros((1, 1, 8, 8), np.float32), "image")
    assert flat == image == ["cnn", "mobilenet", "mlp"]
    # ... and the augmentation follows the student's view where it only adds a channel axis.
    assert augment_kind("vector", (40,), (1, 40)) == "sequence"
    assert augment_kind("vector", (64,), (1, 8, 8)) == "vector"  # a flat row is not shifted as 8x8


def test_the_teachers_own_view_of_a_non_square_row() -> None:
    teacher = Conv2dOverFlat((6, 8))
    structure = structure_of_module(teacher, [torch.zeros(1, 48)])
    assert structure.first_conv_input == (1, 6, 8)
    found = plausible_families(structure, "vector", [(48,)], True)
    assert found.families[0].view == (1, 6, 8)
    # Without the teacher's view nothing tells H from W: no image student is offered.
    blind = TeacherStructure("onnx operators", {"conv2d": 1, "linear": 1})
    found = plausible_families(blind, "vector", [(48,)], True)
    assert [p.family for p in found.families] == ["mlp"]
    assert any("cannot know H and W" in line for line in found.evidence)


def test_unknown_teacher_falls_back_to_the_data_shape() -> None:
    found = plausible_families(TeacherStructure("unknown"), "sequence", [(1, 40)], True)
    assert found.families[0].family == "cnn1d"
    assert "teacher structure unknown" in found.evidence[0]


def test_student_takes_the_users_shape_unchanged(tmp_path) -> None:
    assert student_view("cnn1d", (40,)) == (1, 40)
    assert student_view("cnn", (64,)) == (1, 8, 8)
    assert student_view("cnn", (48,)) is None and student_view("mlp", (40,)) is None
    model = build_student("cnn1d", (40,), 10, 0.5, 1)
    x = torch.randn(3, 40)
    assert model(x).shape == (3, 10)
    proto = onnx.load_from_string(trace_bytes(model, {"x": x[:1].numpy()}, 17))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [40]
    assert proto.graph.node[0].op_type in ("Reshape", "Unsqueeze")
    # A view the teacher showed is recorded, so the checkpoint rebuilds the same student.
    given = build_student("cnn", (48,), 10, 0.5, 2, view=(1, 6, 8))
    path = save_model(given, tmp_path / "s.safetensors")
    again = load_model(path)
    y = torch.randn(2, 48)
    assert torch.allclose(given.eval()(y), again(y))
