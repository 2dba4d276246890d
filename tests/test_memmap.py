"""Data that does not fit in memory: teacher outputs cached as memory-mapped ``.npy`` files, and
memory-mapped inputs (a ``.npy`` file or folder, an uncompressed ``.npz``), giving the same
student as the same arrays held in memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from edgekd.data import load_data, mapped
from edgekd.data.readers import read_data
from edgekd.distill.methods import make_method
from edgekd.students import build_student
from edgekd.teacher.outputs import module_outputs
from edgekd.train.loop import cached_teacher, train_student
from tests.toydata import FAST, tiny_student, toy_bundle, toy_split, toy_teacher


def _kd_student(data, logits) -> dict[str, torch.Tensor]:
    student = tiny_student()
    train_student(student, data.train, data.val, FAST, make_method("kd"), cached_teacher(logits))
    return student.state_dict()


def test_teacher_outputs_cached_memory_mapped_give_the_same_student(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))  # other tests may have cached these outputs
    data = toy_bundle()
    teacher = toy_teacher(data)
    fresh, status = module_outputs(teacher, data.train)
    again, status_again = module_outputs(teacher, data.train)
    assert (status, status_again) == ("cache miss", "cache hit")
    # written batch by batch into the cache file and read back mapped, never all in memory
    assert isinstance(fresh, np.memmap) and isinstance(again, np.memmap)
    in_memory, _ = module_outputs(teacher, data.train, use_cache=False)
    assert not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(np.asarray(fresh), in_memory)
    mapped, held = _kd_student(data, again), _kd_student(data, in_memory)
    assert mapped.keys() == held.keys()
    for name in held:
        assert torch.equal(mapped[name], held[name]), name


def _write_both(tmp_path, n: int = 120):
    """The same toy data as an uncompressed ``.npz`` and as a folder of ``.npy`` files."""
    split = toy_split(n, 0)
    np.savez(tmp_path / "toy.npz", x=split.inputs["x"], y=split.y)
    folder = tmp_path / "toy"
    folder.mkdir()
    np.save(folder / "x.npy", split.inputs["x"])
    np.save(folder / "y.npy", split.y)
    return tmp_path / "toy.npz", folder


def _supervised_student(bundle) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    student = build_student("cnn", (1, 8, 8), 3, width=0.5, depth=2)
    train_student(student, bundle.train, bundle.val, FAST)
    return student.state_dict()


def test_npy_folder_and_mapped_npz_give_the_same_student(tmp_path, monkeypatch) -> None:
    npz, folder = _write_both(tmp_path)
    held = load_data(str(npz), seed=3)
    assert not isinstance(held.train.inputs["x"], np.memmap)  # small: read whole, as before
    monkeypatch.setattr(mapped, "MAP_MIN_BYTES", 0)  # map everything, however small
    results = [held]
    for spec in (npz, folder):
        bundle = load_data(str(spec), seed=3)
        # the splits are written to disk and mapped, not copied into memory
        assert all(isinstance(s.inputs["x"], np.memmap) for s in (bundle.train, bundle.val))
        results.append(bundle)
    for bundle in results[1:]:
        assert bundle.split_note == held.split_note
        for name in ("train", "val", "test"):
            a, b = getattr(held, name), getattr(bundle, name)
            assert a.fingerprint() == b.fingerprint()
            np.testing.assert_array_equal(a.y, b.y)
    students = [_supervised_student(b) for b in results]
    for other in students[1:]:
        for name, value in students[0].items():
            assert torch.equal(value, other[name]), name


def test_compressed_npz_and_single_npy_files_are_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mapped, "MAP_MIN_BYTES", 0)
    split = toy_split(30, 0)
    np.savez_compressed(tmp_path / "c.npz", x=split.inputs["x"], y=split.y)
    whole = read_data(str(tmp_path / "c.npz")).train  # members of a zip's deflate: read whole
    assert not isinstance(whole.inputs["x"], np.memmap)
    assert whole.fingerprint() == split.fingerprint()
    np.save(tmp_path / "x.npy", split.inputs["x"])
    single = read_data(str(tmp_path / "x.npy")).train
    assert isinstance(single.inputs["x"], np.memmap) and single.y is None
    np.testing.assert_array_equal(single.inputs["x"], split.inputs["x"])


RSS_PROBE = """
import resource, sys
import numpy as np
from edgekd.data import load_data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
bundle = load_data(sys.argv[1], seed=0)
bundle.train.fingerprint()  # a whole pass over the training split
for _ in bundle.train.batches(256, np.random.default_rng(0)):  # an epoch's shuffled batches
    pass
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, bundle.train.n, type(bundle.train.inputs["x"]).__name__)
"""


def test_loading_a_large_mapped_array_keeps_memory_low(tmp_path) -> None:
    n, shape = 64_000, (1, 32, 32)  # 262 MB of float32
    folder = tmp_path / "big"
    folder.mkdir()
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (n, *shape))
    for start in range(0, n, 8000):
        x[start : start + 8000] = np.random.default_rng(start).random((8000, *shape))
    x.flush()
    del x
    np.save(folder / "y.npy", np.arange(n) % 10)
    size = n * int(np.prod(shape)) * 4
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(folder)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    grew, train_n, kind = out.stdout.split()
    assert kind == "memmap" and int(train_n) == round(0.7 * n)
    # split, written to disk, hashed and batched: peak memory grows by chunks, not by the data
    assert int(grew) < size / 4, f"peak RSS grew by {int(grew) / 2**20:.0f} MiB"
