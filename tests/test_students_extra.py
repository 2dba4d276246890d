"""The transformer family, teacher-initialised students, and students the user brings."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch

from edgekd.data import load_npz
from edgekd.errors import BadInputError, DataError
from edgekd.export import export_onnx
from edgekd.sizing import size_student_to_budget
from edgekd.sizing.onnx_cost import analyze_onnx
from edgekd.students import build_student, count_params
from edgekd.students.checkpoint import load_model, save_model
from edgekd.students.factory import load_student_factory
from edgekd.students.teacher_init import init_from_teacher, select_layers
from edgekd.targets import load_target

FAST = {"widths": (0.25, 0.5, 1.0), "measure_host": False, "baseline_mb": 56.0}


def token_batch(n: int = 24, seq: int = 12, vocab: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, seq)).astype(np.int64)
    lengths = rng.integers(3, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask  # id 0 = padding


# --- transformer -----------------------------------------------------------------------------


def test_transformer_exports_with_two_inputs_and_matches_torch(tmp_path) -> None:
    ids, mask = token_batch()
    model = build_student("transformer", (12,), 3, width=0.5, depth=2, vocab_size=40)
    assert hasattr(model, "features") and hasattr(model, "head")
    path = tmp_path / "t.onnx"
    result = export_onnx(
        model,
        path,
        {"input_ids": ids[:1], "attention_mask": mask[:1]},
        17,
        parity_inputs={"input_ids": ids, "attention_mask": mask},
    )
    assert result.max_abs_diff < 1e-4 and result.top1_agreement == 1.0
    graph = onnx.load(path).graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [
        ("input_ids", onnx.TensorProto.INT64),
        ("attention_mask", onnx.TensorProto.INT64),
    ]
    # d_model 32, 2 heads of 16, 12 tokens, ff 64: per layer qkv 12*32*96 + scores 2*12*12*16
    # + values 2*12*12*16 + out 12*32*32 + ff 2*12*32*64; head 32*3.
    per_layer = 12 * 32 * 96 + 2 * (2 * 12 * 12 * 16) + 12 * 32 * 32 + 2 * 12 * 32 * 64
    assert analyze_onnx(path).macs == 2 * per_layer + 32 * 3


def test_transformer_ignores_padding_tokens() -> None:
    ids, mask = token_batch()
    model = build_student("transformer", (12,), 3, width=0.5, depth=2, vocab_size=40).eval()
    other = np.where(mask == 1, ids, 7)  # change only the padded positions
    with torch.no_grad():
        a = model(torch.from_numpy(ids), torch.from_numpy(mask))
        b = model(torch.from_numpy(other), torch.from_numpy(mask))
    assert torch.allclose(a, b, atol=1e-6)


def test_transformer_checkpoint_keeps_the_vocabulary(tmp_path) -> None:
    model = build_student("transformer", (12,), 3, width=0.5, depth=1, vocab_size=40)
    save_model(model, tmp_path / "t.safetensors")
    back = load_model(tmp_path / "t.safetensors")
    assert back.edgekd_arch["options"] == {"vocab_size": 40}
    ids, mask = token_batch()
    with torch.no_grad():
        assert torch.equal(
            model.eval()(torch.from_numpy(ids), torch.from_numpy(mask)),
            back(torch.from_numpy(ids), torch.from_numpy(mask)),
        )


def test_token_data_is_sized_with_the_transformer(tmp_path) -> None:
    ids, mask = token_batch(n=60)
    np.savez(tmp_path / "tok.npz", input_ids=ids, attention_mask=mask, y=np.arange(60) % 3)
    data = load_npz(tmp_path / "tok.npz")
    assert data.input_kind == "tokens"
    result = size_student_to_budget(load_target("iot"), data, None, depths=(1, 2), **FAST)
    assert result.chosen.family == "transformer" and result.chosen.fits
    assert any("teacher size unknown" in n for n in result.notes)
    np.savez(tmp_path / "swapped.npz", attention_mask=mask, input_ids=ids, y=np.arange(60) % 3)
    with pytest.raises(DataError, match="must give 'input_ids' first"):
        size_student_to_budget(load_target("iot"), load_npz(tmp_path / "swapped.npz"), None, **FAST)


# --- teacher initialisation ------------------------------------------------------------------


def test_layer_selection_matches_distilbert() -> None:
    # Embeddings + 12 layers -> embeddings + 6 layers: BERT layers 0, 2, ..., 10 (units 1..11).
    assert select_layers(7, 13) == [0, 1, 3, 5, 7, 9, 11]
    assert select_layers(3, 5, "first") == [0, 1, 2]
    with pytest.raises(BadInputError, match="layer selection"):
        select_layers(3, 5, "random")


@pytest.mark.parametrize(
    ("family", "shape", "options"),
    [
        ("cnn", (1, 8, 8), {}),
        ("mlp", (1, 8, 8), {}),
        ("cnn1d", (1, 40), {}),
        ("transformer", (12,), {"vocab_size": 40}),
    ],
)
def test_same_size_student_becomes_the_teacher(family, shape, options) -> None:
    teacher = build_student(family, shape, 10, 1.0, 2, **options).eval()
    student = build_student(family, shape, 10, 1.0, 2, **options).eval()
    summary = init_from_teacher(student, teacher)
    assert summary.share == 1.0
    x = torch.from_numpy(token_batch()[0]) if family == "transformer" else torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(student(x), teacher(x))


def test_smaller_student_gets_leading_slices_of_every_other_block() -> None:
    teacher = build_student("cnn", (1, 8, 8), 10, 2.0, 4)
    student = build_student("cnn", (1, 8, 8), 10, 0.5, 2)
    summary = init_from_teacher(student, teacher)
    assert summary.share == 1.0
    # stem -> stem, block 0 -> block 0, block 1 -> block 2 (every other), head -> head.
    assert summary.layers == (
        ("features.0", "features.0"),
        ("features.3", "features.3"),
        ("features.4", "features.5"),
        ("head", "head"),
    )
    s_w, t_w = student.features[4].conv.weight, teacher.features[5].conv.weight
    assert torch.equal(s_w, t_w[: s_w.shape[0], : s_w.shape[1]])
    assert torch.equal(student.head[2].weight, teacher.head[2].weight[:, :16])


def test_init_from_teacher_needs_the_same_family() -> None:
    teacher = build_student("cnn", (1, 8, 8), 10, 2.0, 4)
    student = build_student("mobilenet", (1, 8, 8), 10, 0.5, 2)
    with pytest.raises(BadInputError, match="teacher is 'cnn', the student 'mobilenet'"):
        init_from_teacher(student, teacher)


# --- a student the user brings ----------------------------------------------------------------

USER_MODULE = textwrap.dedent(
    """
    from torch import nn

    def scalable(sample_shape, num_classes, width=1.0, depth=1.0):
        hidden = max(4, round(32 * width))
        layers = [nn.Flatten(), nn.Linear(64, hidden), nn.ReLU()]
        for _ in range(max(0, round(depth)) ):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(hidden, num_classes))

    def fixed():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def huge():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 4096), nn.Linear(4096, 10))

    INSTANCE = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    NOT_A_MODEL = 3
    """
)


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_students.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_students"
    sys.modules.pop("my_students", None)


def test_factory_with_knobs_is_searched(user_module) -> None:
    from edgekd.data import load_data

    data = load_data("digits")
    factory = load_student_factory(f"{user_module}:scalable")
    assert factory.searchable and factory.takes_width and factory.takes_depth
    result = size_student_to_budget(
        load_target("iot"), data, 140_458, f"{user_module}:scalable", **FAST
    )
    assert len(result.candidates) == 9  # 3 widths x 3 depth multipliers
    assert result.chosen.family == f"{user_module}:scalable" and result.chosen.fits
    assert result.chosen.params == max(c.params for c in result.candidates if c.fits)


def test_fixed_student_is_measured_against_the_budget(user_module) -> None:
    from edgekd.data import load_data

    data = load_data("digits")
    for spec in (f"{user_module}:fixed", f"{user_module}:INSTANCE"):
        result = size_student_to_budget(load_target("iot"), data, 140_458, spec, **FAST)
        assert len(result.candidates) == 1 and result.chosen.params == 650
    with pytest.raises(BadInputError) as err:
        size_student_to_budget(load_target("iot"), data, 140_458, f"{user_module}:huge", **FAST)
    assert str(err.value).startswith(
        f"student {user_module}:huge does not fit target 'iot': 307,210 parameters > 60,000"
    )


def test_bad_factory_specs_are_one_clear_line(user_module) -> None:
    with pytest.raises(BadInputError, match="cannot import module 'no_such_module_xyz'"):
        load_student_factory("no_such_module_xyz:make")
    with pytest.raises(BadInputError, match="has no attribute 'missing'"):
        load_student_factory(f"{user_module}:missing")
    with pytest.raises(BadInputError, match="neither a callable nor an nn.Module"):
        load_student_factory(f"{user_module}:NOT_A_MODEL")
    assert count_params(load_student_factory(f"{user_module}:INSTANCE").build((1, 8, 8), 10)) == 650
