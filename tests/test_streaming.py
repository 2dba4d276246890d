"""Image folders streamed (decoded batch by batch by DataLoader workers, never all in memory)
giving the same student as the same folder decoded whole, and the reader's safety: regular files
only, no symlink out of the data folder, no empty class folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from edgekd.data import load_data
from edgekd.data.readers import image_folder
from edgekd.data.stream import LazyRows
from edgekd.distill.methods import make_method
from edgekd.errors import DataError
from edgekd.students import build_student
from edgekd.teacher.outputs import module_outputs
from edgekd.train.loop import TrainConfig, cached_teacher, train_student
from tests.toydata import PATCHES


def _toy_folder(root, n: int = 60, sizes=((8, 8),)) -> None:
    """Three classes of grayscale PNGs: a bright 4x4 patch in one of three places plus noise
    (``tests.toydata``'s images), saved as 8-bit pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % 3
        h, w = sizes[i % len(sizes)]
        img = rng.uniform(0.0, 0.3, (h, w))
        rows, cols = PATCHES[c]
        img[rows, cols] += 0.6
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).astype(np.uint8), "L").save(root / f"c{c}" / f"{i:03}.png")


def _student(data, workers_logits=None) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    student = build_student("cnn", (1, 8, 8), 3, width=0.25, depth=1)
    config = TrainConfig(epochs=2, lr=3e-2, batch_size=8)
    teacher = None if workers_logits is None else cached_teacher(workers_logits)
    method = None if teacher is None else make_method("kd")
    train_student(student, data.train, data.val, config, method, teacher)
    return student.state_dict()


def test_streamed_folder_trains_the_same_student_as_in_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    _toy_folder(tmp_path / "imgs")
    held = load_data(str(tmp_path / "imgs"), seed=0)
    assert isinstance(held.train.inputs["x"], np.ndarray)
    monkeypatch.setattr(image_folder, "STREAM_MIN_BYTES", 0)  # stream even this small folder
    streamed = load_data(str(tmp_path / "imgs"), seed=0, data_workers=2)
    rows = streamed.train.inputs["x"]
    assert isinstance(rows, LazyRows) and streamed.train.streamed and rows.workers == 2
    assert streamed.sample_shapes == held.sample_shapes == {"x": (1, 8, 8)}
    np.testing.assert_array_equal(rows[np.arange(5)], held.train.inputs["x"][:5])
    assert streamed.train.fingerprint() == streamed.train.fingerprint()
    # the teacher's outputs, computed through the DataLoader, are the in-memory ones
    torch.manual_seed(0)
    teacher = build_student("cnn", (1, 8, 8), 3, width=0.5, depth=1)
    logits, _ = module_outputs(teacher, streamed.train, use_cache=False)
    expected, _ = module_outputs(teacher, held.train, use_cache=False)
    np.testing.assert_array_equal(np.asarray(logits), expected)
    # same seed, same batches, same bytes: the same weights, with workers and without
    a, b = _student(held, expected), _student(streamed, expected)
    zero = load_data(str(tmp_path / "imgs"), seed=0, data_workers=0)
    c = _student(zero)
    d = _student(held)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        torch.testing.assert_close(c[k], d[k], rtol=0, atol=0)


def test_streamed_folder_of_mixed_sizes_is_refused_from_the_headers(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(image_folder, "STREAM_MIN_BYTES", 0)
    _toy_folder(tmp_path / "imgs", n=9, sizes=((8, 8), (8, 8), (10, 12)))
    with pytest.raises(DataError, match=r"002\.png: image is 12x10, but 8x8 .*--image-size N"):
        load_data(str(tmp_path / "imgs"))
    data = load_data(str(tmp_path / "imgs"), image_size=6)
    assert data.sample_shapes == {"x": (1, 6, 6)}
    assert data.train.take(np.arange(2)).inputs["x"].shape == (2, 1, 6, 6)


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path) -> None:
    _toy_folder(tmp_path / "imgs", n=6)
    os.mkfifo(tmp_path / "imgs" / "c1" / "x.png")
    with pytest.raises(DataError, match=r"c1/x\.png: not a regular file"):
        load_data(str(tmp_path / "imgs"))


def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path) -> None:
    _toy_folder(tmp_path / "imgs", n=6)
    _toy_folder(tmp_path / "other", n=3)
    inside = tmp_path / "imgs" / "c0" / "again.png"
    inside.symlink_to(tmp_path / "imgs" / "c0" / "000.png")  # inside the folder: fine
    assert load_data(str(tmp_path / "imgs")).train.n > 0
    (tmp_path / "imgs" / "c2" / "out.png").symlink_to(tmp_path / "other" / "c0" / "000.png")
    with pytest.raises(DataError, match=r"c2/out\.png: a symlink to .*outside the data folder"):
        load_data(str(tmp_path / "imgs"))
    (tmp_path / "imgs" / "c2" / "out.png").unlink()
    (tmp_path / "imgs" / "c3").symlink_to(tmp_path / "other" / "c1")  # a class folder out
    with pytest.raises(DataError, match=r"imgs/c3: a symlink to"):
        load_data(str(tmp_path / "imgs"))


def test_an_empty_class_folder_is_refused_naming_it(tmp_path) -> None:
    _toy_folder(tmp_path / "imgs", n=6)
    (tmp_path / "imgs" / "empty").mkdir()
    (tmp_path / "imgs" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"imgs/empty: class folder has no images"):
        load_data(str(tmp_path / "imgs"))


def test_bench_reads_an_image_folder_with_image_size(tmp_path) -> None:
    from edgekd.bench.suite import _test_data

    _toy_folder(tmp_path / "imgs", n=30, sizes=((8, 8), (10, 12)))
    with pytest.raises(DataError, match="pass --image-size N"):
        _test_data(str(tmp_path / "imgs"), 0, None)
    test, info = _test_data(str(tmp_path / "imgs"), 0, 8)
    assert test.inputs["x"].shape[1:] == (1, 8, 8)
    assert info["image_transform"].startswith("short side resized to 8 px")


@pytest.mark.slow
def test_distill_runs_end_to_end_on_a_streamed_folder_normalised(tmp_path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from edgekd.cli import app

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(image_folder, "STREAM_MIN_BYTES", 0)
    _toy_folder(tmp_path / "imgs", n=90)
    result = CliRunner().invoke(app, [
        "distill", "--data", str(tmp_path / "imgs"), "--epochs", "2", "--teacher-epochs", "2",
        "--data-workers", "1", "--normalize", "auto", "--bench-seconds", "0.02",
        "--bench-processes", "1", "--json", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["inputs"]["x"] == "float32[N,1,8,8]" and report["data"]["test"] == 18
    # --normalize auto: recorded, and run by the student: its ONNX starts with Sub and Div
    norm = report["data"]["normalization"]
    assert norm["how"] == "auto" and len(norm["mean"]) == len(norm["std"]) == 1
    assert "**Normalisation (auto):**" in (tmp_path / "run" / "report.md").read_text()
    import onnx

    graph = onnx.load(str(tmp_path / "run" / "student.onnx")).graph
    assert [n.op_type for n in graph.node[:2]] == ["Sub", "Div"]
