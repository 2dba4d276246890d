"""The safety layer: hostile checkpoints and ONNX files are refused before they can do anything."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import random
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EXIT_BAD_INPUT, BadInputError, UnsafeInputError
from edgekd.safety import (
    check_onnx_file,
    check_onnx_for_ort,
    check_versions,
    load_module_file,
    load_onnx,
    load_state_dict,
    save_state_dict,
)
from edgekd.safety import versions as versions_module

torch.set_num_threads(1)

ONNX_CHECKS = [check_onnx_file, check_onnx_for_ort, load_onnx]


def assert_one_line_about(exc_info: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert path.name in message
    assert exc_info.value.exit_code == EXIT_BAD_INPUT
    return message


# --- checkpoints -----------------------------------------------------------------------------


class WritesMarker:
    """Unpickling this calls open(marker, "w"): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def small_state_dict() -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([1.0, -1.0])}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["torch.save", "pickle.dump"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"fc.weight": torch.ones(2), "hook": WritesMarker(marker)}
    if fmt == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(UnsafeInputError) as exc_info:
        load_state_dict(path)
    message = assert_one_line_about(exc_info, path)
    assert "pickled code/objects" in message and "NOT loaded" in message
    assert "--trust-checkpoint" in message and "io.open" in message
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the payload's open() file is dropped
def test_trusted_pickle_runs_and_is_unwrapped(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "trusted.pt"
    torch.save({"state_dict": small_state_dict(), "hook": WritesMarker(marker)}, path)
    state_dict = load_state_dict(path, trust_checkpoint=True)
    assert marker.exists()  # the user asked for it: the pickle's code ran
    assert_same(state_dict, small_state_dict())


@pytest.mark.parametrize("name", ["student.safetensors", "student.pt"])
def test_state_dict_round_trip(tmp_path: Path, name: str) -> None:
    state_dict = small_state_dict()
    state_dict["tied"] = state_dict["fc.weight"]  # shared storage: safetensors needs a copy
    state_dict["view"] = state_dict["fc.weight"].t()  # not contiguous
    path = save_state_dict(state_dict, tmp_path / name)
    assert_same(load_state_dict(path), state_dict)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left behind


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_training_checkpoint_is_unwrapped(tmp_path: Path, key: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({key: small_state_dict(), "epoch": 3, "best_acc": 0.9}, path)
    assert_same(load_state_dict(path), small_state_dict())


@pytest.mark.parametrize(
    "payload", [[torch.ones(1)], {"fc.weight": [1.0, 2.0]}, {}, {"epoch": 3}], ids=repr
)
def test_not_a_state_dict_is_refused(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(BadInputError) as exc_info:
        load_state_dict(path)
    assert "not a state dict" in assert_one_line_about(exc_info, path)


def _valid_checkpoint_bytes(suffix: str, tmp_path: Path) -> bytes:
    return save_state_dict(small_state_dict(), tmp_path / f"valid{suffix}").read_bytes()


MALFORMED = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "random": lambda good: random.Random(0).randbytes(4096),
    "header only": lambda good: good[:8],
}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_checkpoint_is_bad_input(tmp_path: Path, suffix: str, kind: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(MALFORMED[kind](_valid_checkpoint_bytes(suffix, tmp_path)))
    with pytest.raises(BadInputError) as exc_info:
        load_state_dict(path)
    assert type(exc_info.value) is BadInputError  # malformed, not "unsafe"
    assert "not a valid checkpoint" in assert_one_line_about(exc_info, path)


def test_legacy_format_checkpoint(tmp_path: Path) -> None:
    """Pre-1.6 torch.save files are a few pickles back to back, then raw storage bytes."""
    path = tmp_path / "legacy.pt"
    torch.save(small_state_dict(), path, _use_new_zipfile_serialization=False)
    assert_same(load_state_dict(path), small_state_dict())
    path.write_bytes(path.read_bytes()[:-4])  # its pickles import torch's (allowed) rebuild helpers
    with pytest.raises(BadInputError) as exc_info:
        load_state_dict(path)
    assert type(exc_info.value) is BadInputError
    assert "not a valid checkpoint" in assert_one_line_about(exc_info, path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_not_mistaken_for_code(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "noise.pth"
    path.write_bytes(random.Random(seed).randbytes(1000))
    with pytest.raises(BadInputError) as exc_info:
        load_state_dict(path)
    assert type(exc_info.value) is BadInputError


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(BadInputError) as exc_info:
        load_state_dict(path)
    assert "no such file" in assert_one_line_about(exc_info, path)


def test_torchscript_loads_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "teacher.ts"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))
    with pytest.raises(UnsafeInputError) as exc_info:
        load_module_file(path)
    assert "NOT loaded" in assert_one_line_about(exc_info, path)
    module = load_module_file(path, trust_checkpoint=True)
    assert module(torch.ones(1, 3)).shape == (1, 2)


def test_export_program_loads_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt2"
    model = torch.nn.Linear(3, 2)
    torch.export.save(torch.export.export(model, (torch.ones(1, 3),)), path)
    with pytest.raises(UnsafeInputError) as exc_info:
        load_module_file(path)
    assert "torch.export program" in assert_one_line_about(exc_info, path)
    program = load_module_file(path, trust_checkpoint=True)
    assert isinstance(program, torch.export.ExportedProgram)
    torch.testing.assert_close(program.module()(torch.ones(1, 3)), model(torch.ones(1, 3)))


@pytest.mark.parametrize("name", ["teacher.pt2", "teacher.ts"])
@pytest.mark.parametrize("trust", [False, True])
def test_malformed_module_file_is_bad_input(tmp_path: Path, name: str, trust: bool) -> None:
    path = tmp_path / name
    path.write_bytes(random.Random(1).randbytes(512))
    with pytest.raises(BadInputError) as exc_info:
        load_module_file(path, trust_checkpoint=trust)
    assert type(exc_info.value) is BadInputError
    assert_one_line_about(exc_info, path)


# --- ONNX ------------------------------------------------------------------------------------

WEIGHTS = np.arange(64, dtype=np.float32).reshape(8, 8)


def matmul_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """tmp/model/m.onnx with W in tmp/model/weights.bin, and a secret file outside the folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        matmul_model(),
        folder / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(b"s" * 256)
    return folder


def point_weights_at(model_path: Path, location: str, offset=None, length=None) -> None:
    """Rewrite W's external_data entries in place (without touching any external file)."""
    model = onnx.load(model_path, load_external_data=False)
    tensor = model.graph.initializer[0]
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    model_path.write_bytes(model.SerializeToString())


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path opened through Python from here on; onnx's external-data loaders must not run."""
    seen: list[Path] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike):
            seen.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    def spy_os_open(file, *args, **kwargs):
        seen.append(Path(file).resolve())
        return real_os_open(file, *args, **kwargs)

    def must_not_load(*args, **kwargs):
        raise AssertionError("external data was loaded before the checks refused it")

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    for name in ("load_external_data_for_model", "load_external_data_for_tensor"):
        monkeypatch.setattr(onnx.external_data_helper, name, must_not_load)
    monkeypatch.setattr(onnx, "load_external_data_for_model", must_not_load)
    # Where onnx >= 1.21 opens external files (in C++, unseen by the open() spies above).
    monkeypatch.setattr(
        onnx.external_data_helper, "_open_external_data_fd", must_not_load, raising=False
    )
    return seen


def test_read_spies_work(model_dir: Path, opened: list[Path]) -> None:
    """Control for the tests below: reading external data through us or onnx is noticed."""
    with pytest.raises(BadInputError, match="external data was loaded"):
        load_onnx(model_dir / "m.onnx")  # load_onnx wraps the loader's error into one line
    with pytest.raises(AssertionError, match="external data was loaded"):
        onnx.load(model_dir / "m.onnx")
    (model_dir / "weights.bin").read_bytes()
    assert (model_dir / "weights.bin").resolve() in opened


def _absolute(folder: Path) -> str:
    return str(folder.parent / "outside" / "secret.bin")


def _parent(folder: Path) -> str:
    (folder.parent / "outside.bin").write_bytes(b"x" * 256)
    return "../outside.bin"


def _nested_parent(folder: Path) -> str:
    (folder / "a").mkdir()
    (folder.parent / "x.bin").write_bytes(b"x" * 256)
    return "a/../../x.bin"


def _backslash_parent(folder: Path) -> str:
    return "..\\outside\\secret.bin"


def _symlink_file(folder: Path) -> str:
    (folder / "link.bin").symlink_to(folder.parent / "outside" / "secret.bin")
    return "link.bin"


def _symlink_folder(folder: Path) -> str:
    (folder / "sub").symlink_to(folder.parent / "outside", target_is_directory=True)
    return "sub/secret.bin"


def _hard_link(folder: Path) -> str:
    os.link(folder.parent / "outside" / "secret.bin", folder / "hard.bin")
    return "hard.bin"


def _ort_memory_marker(folder: Path) -> str:
    # Even when a file of that name exists, ONNX Runtime would read "offset" as a memory address.
    (folder / "*" / "_ORT_MEM_ADDR_").mkdir(parents=True)
    (folder / "*" / "_ORT_MEM_ADDR_" / "*").write_bytes(b"x" * 256)
    return "*/_ORT_MEM_ADDR_/*"


def _missing(folder: Path) -> str:
    return "nothing.bin"


ESCAPES = {
    "absolute": (_absolute, {}, "absolute path"),
    "parent": (_parent, {}, "escapes the model's folder"),
    "nested parent": (_nested_parent, {}, "escapes the model's folder"),
    "backslash parent": (_backslash_parent, {}, "escapes the model's folder"),
    "symlink to file": (_symlink_file, {}, "symbolic link"),
    "symlink in folder": (_symlink_folder, {}, "symbolic link"),
    "hard link": (_hard_link, {}, "hard link"),
    "ort memory marker": (_ort_memory_marker, {}, "memory address"),
    "missing file": (_missing, {}, "does not exist"),
    "offset beyond end": (lambda f: "weights.bin", {"offset": 257, "length": 0}, "beyond the end"),
    "length beyond end": (lambda f: "weights.bin", {"offset": 0, "length": 257}, "past the end"),
    "offset+length past end": (
        lambda f: "weights.bin", {"offset": 200, "length": 100}, "past the end"
    ),
    "shape past end": (lambda f: "weights.bin", {"offset": 8}, "past the end"),
    "malformed offset": (lambda f: "weights.bin", {"offset": "-1"}, "malformed offset"),
}


@pytest.mark.parametrize("check", ONNX_CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", ESCAPES)
def test_external_data_escape_refused_before_any_read(
    model_dir: Path, case: str, check, request: pytest.FixtureRequest
) -> None:
    make_location, extra, reason = ESCAPES[case]
    model_path = model_dir / "m.onnx"
    location = make_location(model_dir)
    point_weights_at(model_path, location, **extra)
    opened = request.getfixturevalue("opened")
    with pytest.raises(UnsafeInputError) as exc_info:
        check(model_path)
    message = assert_one_line_about(exc_info, model_path)
    assert "'W'" in message and repr(location) in message and reason in message
    assert set(opened) <= {model_path.resolve()}  # only the .onnx itself was ever opened


def test_sparse_initializer_external_data_is_checked(model_dir: Path, opened) -> None:
    # onnx's own tensor walker skips sparse tensors, but ONNX Runtime reads their external data.
    model = matmul_model()
    values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "S")
    onnx.external_data_helper.set_external_data(values, location="../outside/secret.bin")
    values.ClearField("raw_data")
    indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "S_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    path = model_dir / "sparse.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsafeInputError) as exc_info:
        check_onnx_for_ort(path)
    assert "sparse initializer 'S'" in assert_one_line_about(exc_info, path)
    assert set(opened) <= {path.resolve()}


def test_subgraph_attribute_tensor_is_checked(model_dir: Path, opened) -> None:
    constant = numpy_helper.from_array(np.ones(2, dtype=np.float32), "C")
    onnx.external_data_helper.set_external_data(constant, location="../outside/secret.bin")
    constant.ClearField("raw_data")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], name="const", value=constant)],
        "then_branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    model = matmul_model()
    model.graph.node.append(
        helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)
    )
    path = model_dir / "subgraph.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsafeInputError) as exc_info:
        load_onnx(path)
    message = assert_one_line_about(exc_info, path)
    assert "attribute 'value' of node 'const'" in message and "then_branch" in message
    assert set(opened) <= {path.resolve()}


def _len_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, encoded by hand (tag, varint length, bytes)."""
    out, value = bytearray(), len(payload)
    for v in (number << 3 | 2,):
        while v > 0x7F:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out) + payload


def test_a_tensor_split_over_two_occurrences_is_checked_as_merged(model_dir: Path, opened) -> None:
    """Protobuf merges a singular field that occurs twice: a Constant's tensor whose data_location
    comes in one occurrence of the attribute and its external entries in another, inside a second
    occurrence of the (singular) graph, is one external tensor to onnx and ONNX Runtime; the check
    reads the wire format and must see it the same way."""
    located = TensorProto(name="C", data_type=TensorProto.FLOAT, dims=[2])
    located.data_location = TensorProto.EXTERNAL
    entries = TensorProto()
    entry = entries.external_data.add()
    entry.key, entry.value = "location", "../outside/secret.bin"
    attrs = (
        onnx.AttributeProto(name="value", type=onnx.AttributeProto.TENSOR, t=located)
        .SerializeToString()
        + onnx.AttributeProto(t=entries).SerializeToString()
    )
    node = helper.make_node("Constant", [], ["c"], name="const").SerializeToString()
    node += _len_field(5, attrs)
    data = matmul_model().SerializeToString() + _len_field(7, _len_field(1, node))
    parsed = onnx.load_model_from_string(data)  # control: onnx sees one external tensor
    constant = parsed.graph.node[-1].attribute[0].t
    assert onnx.external_data_helper.uses_external_data(constant)
    assert constant.external_data[0].value == "../outside/secret.bin"
    path = model_dir / "merged.onnx"
    path.write_bytes(data)
    for check in ONNX_CHECKS:
        with pytest.raises(UnsafeInputError) as exc_info:
            check(path)
        assert "escapes the model's folder" in assert_one_line_about(exc_info, path)
    assert set(opened) <= {path.resolve()}


def test_onnx_facts_match_onnx(tmp_path: Path) -> None:
    """What the bench reads without onnx (inputs, initializers, operators) is what onnx reads."""
    from edgekd.safety import read_onnx_facts

    model = matmul_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    facts = read_onnx_facts(path)
    assert [(i.name, i.elem_type, i.dims) for i in facts.inputs] == [("X", 1, (None, 8))]
    assert [(t.name, t.data_type, t.dims, t.external) for t in facts.initializers] == [
        ("W", TensorProto.FLOAT, (8, 8), False)
    ]
    assert facts.op_types == ("MatMul",) and facts.external_files == ()


@pytest.mark.parametrize("location", ["weights.bin", "data/weights.bin"])
def test_well_formed_external_data_loads(tmp_path: Path, location: str) -> None:
    path = tmp_path / "m.onnx"
    (tmp_path / location).parent.mkdir(exist_ok=True)
    onnx.save_model(
        matmul_model(), path, save_as_external_data=True, location=location, size_threshold=0
    )
    check_onnx_file(path)
    check_onnx_for_ort(path)
    model = load_onnx(path)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), WEIGHTS)

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.ones((1, 8), dtype=np.float32)
    np.testing.assert_allclose(session.run(None, {"X": x})[0], x @ WEIGHTS)


@pytest.mark.parametrize("check", ONNX_CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_onnx_is_bad_input(tmp_path: Path, kind: str, check) -> None:
    good = matmul_model().SerializeToString()
    path = tmp_path / "broken.onnx"
    path.write_bytes(MALFORMED[kind](good))
    with pytest.raises(BadInputError) as exc_info:
        check(path)
    assert type(exc_info.value) is BadInputError
    assert "ONNX model" in assert_one_line_about(exc_info, path)


# --- versions --------------------------------------------------------------------------------


def test_installed_versions_have_no_warnings() -> None:
    assert check_versions() == []


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"torch": "2.5.1"}, ["CVE-2025-32434", "CVE-2026-24747"]),
        ({"torch": "2.6.0rc1"}, ["CVE-2025-32434", "CVE-2026-24747"]),
        ({"torch": "2.9.1+cu128"}, ["CVE-2026-24747"]),
        ({"torch": "2.13.0+cpu"}, []),
        ({"onnx": "1.15.0"}, ["CVE-2024-27318", "CVE-2026-27489"]),
        ({"onnx": "1.17.0"}, ["CVE-2026-27489"]),
        ({"onnx": "1.21.0"}, []),
        ({"torch": "weird"}, ["cannot read this version"]),
    ],
)
def test_old_versions_are_named(
    monkeypatch: pytest.MonkeyPatch, installed: dict[str, str], expected: list[str]
) -> None:
    monkeypatch.setattr(versions_module, "_installed_version", installed.get)
    messages = check_versions()
    assert len(messages) == len(expected)
    for message, advisory in zip(messages, expected, strict=True):
        assert advisory in message and "\n" not in message
