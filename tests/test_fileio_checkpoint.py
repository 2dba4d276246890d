"""Atomic writes leave either the complete artifact or nothing; checkpoints never unpickle."""

from __future__ import annotations

import pytest
import torch

from edgekd.errors import BadInputError
from edgekd.fileio import atomic_dir, atomic_path
from edgekd.students import build_student
from edgekd.students.checkpoint import load_model, save_model


def test_atomic_path_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_removes_partial_folder_and_refuses_existing(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError), atomic_dir(out) as work:
        (work / "report.json").write_text("{}")
        raise ValueError("bad input found late")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as work:
        (work / "report.json").write_text("{}")
    assert (out / "report.json").is_file()
    with pytest.raises(BadInputError, match="already exists"), atomic_dir(out):
        pass


def test_checkpoint_round_trip_rebuilds_architecture(tmp_path) -> None:
    model = build_student("cnn", (1, 8, 8), 10, 0.5, 2).eval()
    path = save_model(model, tmp_path / "s.safetensors")
    again = load_model(path)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), again(x))


def test_checkpoint_errors_are_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 5)
    with pytest.raises(BadInputError, match="bad.safetensors: not a valid safetensors"):
        load_model(bad)
    with pytest.raises(BadInputError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
