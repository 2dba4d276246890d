"""Users' own teachers and data: every --teacher and --data form, input checks, output choice."""

from __future__ import annotations

import json
import textwrap
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data import Split, load_data, load_eval_data
from edgekd.data.inputs import InputSpec, check_inputs
from edgekd.errors import BadInputError, DataError, UnsafeInputError
from edgekd.teacher.prepare import conform
from edgekd.teacher.user import load_teacher, probe_teacher, select_output

runner = CliRunner()

TOKEN_TEACHER = """
import torch
from torch import nn


class Encoder(nn.Module):
    # Two inputs (integer token ids and an attention mask) and a dict of outputs.
    def __init__(self, vocab=40, dim=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, 16))

    def forward(self, input_ids, attention_mask):
        e = self.embed(input_ids)
        m = attention_mask.unsqueeze(-1).to(e.dtype)
        pooled = (e * m).sum(1) / m.sum(1).clamp(min=1)
        return {"embedding": self.mlp(pooled), "pooled": pooled}


def make():
    return Encoder()
"""


def _tokens(n: int = 240, length: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    # Stored in the "wrong" order on purpose: inputs are matched by name, not position.
    return {"attention_mask": mask, "input_ids": rng.integers(1, 40, size=(n, length)) * mask}


@pytest.fixture()
def token_files(tmp_path):
    (tmp_path / "token_teacher.py").write_text(TOKEN_TEACHER)
    np.savez(tmp_path / "tokens.npz", **_tokens())
    return tmp_path


def test_token_teacher_in_a_file_distils_exports_and_benchmarks_end_to_end(token_files) -> None:
    out = token_files / "run"
    args = ["distill", "--teacher", f"{token_files / 'token_teacher.py'}:make"]
    args += ["--teacher-output", "embedding", "--task", "embedding"]
    args += ["--data", str(token_files / "tokens.npz"), "--epochs", "2"]
    args += ["--bench-seconds", "0.02", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["task"] == "embedding" and report["training"]["method"] == "embed"
    assert report["teacher"]["kind"] == "factory" and report["teacher"]["output"] == "embedding"
    assert report["data"]["inputs"] == {
        "input_ids": "int64[N,12]",
        "attention_mask": "int64[N,12]",
    }
    assert report["data"]["labels"] is False and "random" in report["data"]["split_note"]
    models = {m["name"]: m for m in report["models"]}
    assert {"teacher-torch", "teacher-onnx", "student-onnx", "student-int8"} <= set(models)
    assert models["student-onnx"]["params"] < models["teacher-torch"]["params"]
    for name in ("student-onnx", "student-int8"):
        m = models[name]
        assert m["accuracy"] is None
        assert -1.0 <= m["cosine_to_teacher"] <= 1.0 and 0.0 <= m["agreement_with_teacher"] <= 1.0
    assert models["teacher-torch"]["cosine_to_teacher"] == pytest.approx(1.0)
    # The exported student takes the same named integer inputs as the teacher.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [
        ("input_ids", "tensor(int64)"),
        ("attention_mask", "tensor(int64)"),
    ]
    assert sess.run(None, {k: v[:3] for k, v in _tokens(3).items()})[0].shape == (3, 16)


def test_output_choice_from_tuples_and_dicts() -> None:
    a, b = torch.zeros(2, 3), torch.ones(2, 5)
    assert select_output((a, b), "1") is b
    assert select_output({"logits": a, "emb": b}, "emb") is b
    assert select_output({"logits": a, "emb": b}, "0") is a  # a dict output by position
    assert select_output({"logits": a, "loss": None}, None) is a  # None entries are not outputs
    assert select_output(a, None) is a
    with pytest.raises(BadInputError) as err:
        select_output((a, b), None)
    assert str(err.value) == (
        "the teacher returns 2 outputs (0: float32[N,3], 1: float32[N,5]); name the one to "
        "distil with --teacher-output 1"
    )
    with pytest.raises(BadInputError, match=r"--teacher-output 'x': not among .*logits: float32"):
        select_output({"logits": a}, "x")
    with pytest.raises(BadInputError, match="returns a single tensor"):
        select_output(a, "logits")


def test_shape_mismatch_names_the_input_with_the_exact_message() -> None:
    spec = [InputSpec("x", "float32", (1, 8, 8))]
    with pytest.raises(DataError) as err:
        check_inputs(spec, Split({"x": np.zeros((4, 64))}))
    assert str(err.value) == "input 'x': expected float32[N,1,8,8], got float64[N,64]"
    # Same shape: float64 becomes float32; a single array fits a single input whatever its name.
    fitted = check_inputs(
        [InputSpec("image", "float32", (1, 8, 8))], Split({"x": np.zeros((4, 1, 8, 8))})
    )
    assert list(fitted.inputs) == ["image"] and fitted.inputs["image"].dtype == np.float32


def test_input_checks_order_cast_and_refuse() -> None:
    spec = [InputSpec("ids", "int64", (None,)), InputSpec("mask", "float32", (None,))]
    data = Split({"mask": np.ones((2, 5), np.int32), "ids": np.ones((2, 5), np.int32)})
    fitted = check_inputs(spec, data)
    assert list(fitted.inputs) == ["ids", "mask"]  # the model's order
    assert fitted.inputs["ids"].dtype == np.int64 and fitted.inputs["mask"].dtype == np.float32
    with pytest.raises(DataError, match="input 'ids': expected int64\\[N,\\?\\], got float32"):
        check_inputs(spec, Split({"ids": np.ones((2, 5), np.float32), "mask": np.ones((2, 5))}))
    with pytest.raises(DataError, match="input 'mask': missing from the data"):
        check_inputs(spec, Split({"ids": np.ones((2, 5), np.int64), "x": np.ones((2, 5))}))
    with pytest.raises(DataError, match="data array 'extra' is not an input of the model"):
        check_inputs(spec, Split({"ids": np.ones((2, 5), np.int64), "mask": np.ones((2, 5)),
                                  "extra": np.ones((2, 1))}))  # fmt: skip
    with pytest.raises(DataError, match="do not fit the model's int8"):
        check_inputs([InputSpec("ids", "int8", (None,))], Split({"ids": np.full((2, 3), 300)}))


def test_npz_csv_image_folder_and_factory_data(tmp_path) -> None:
    # .npz with two inputs and no labels: a transfer set, split at random (seeded).
    np.savez(tmp_path / "multi.npz", **_tokens(50))
    multi = load_data(str(tmp_path / "multi.npz"), seed=3)
    assert multi.input_kind == "tokens" and multi.train.y is None
    assert multi.train.n + multi.val.n + multi.test.n == 50 and "seed 3" in multi.split_note
    assert multi.train.inputs["input_ids"].dtype == np.int64  # ids stay integers

    # CSV with text labels; the held-out file uses the training file's class numbering.
    (tmp_path / "train.csv").write_text(
        "a,b,kind\n" + "".join(f"{i},{i * 2},{'cat' if i % 2 else 'dog'}\n" for i in range(20))
    )
    (tmp_path / "test.csv").write_text("a,b,kind\n1,2,dog\n3,4,cat\n")
    table = load_data(str(tmp_path / "train.csv"), test_data=str(tmp_path / "test.csv"),
                      label_column="kind")  # fmt: skip
    assert table.class_names == ("cat", "dog") and table.num_classes == 2
    assert table.test.y.tolist() == [1, 0] and table.sample_shapes == {"x": (2,)}
    assert "given test data" in table.split_note
    assert load_eval_data(str(tmp_path / "test.csv"), label_column="kind").n == 2
    (tmp_path / "bad.csv").write_text("a,label\n1,0\nx,1\n")
    with pytest.raises(DataError, match=r"bad.csv line 3, column 'a': 'x' is not a number"):
        load_data(str(tmp_path / "bad.csv"))

    # A folder of PNG images in class sub-folders.
    import matplotlib.image

    rng = np.random.default_rng(0)
    for cls in ("circle", "square"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(6):
            matplotlib.image.imsave(tmp_path / "images" / cls / f"{i}.png", rng.random((8, 8)),
                                    cmap="gray")  # fmt: skip
    images = load_data(str(tmp_path / "images"))
    assert images.sample_shapes == {"x": (3, 8, 8)} and images.class_names == ("circle", "square")
    assert images.input_kind == "image" and images.train.inputs["x"].max() <= 1.0
    matplotlib.image.imsave(tmp_path / "images" / "square" / "big.png", rng.random((9, 9)))
    with pytest.raises(DataError, match="big.png: image is 9x9 with 3 channels, but 8x8"):
        load_data(str(tmp_path / "images"))

    # A factory returning ready-made splits.
    (tmp_path / "my_data.py").write_text(
        textwrap.dedent("""
        import numpy as np

        def make():
            x = np.arange(40, dtype=np.float32).reshape(20, 2)
            return {"train": (x, np.arange(20) % 2), "test": {"x": x[:4], "y": np.zeros(4, int)}}
    """)
    )
    made = load_data(f"{tmp_path / 'my_data.py'}:make", seed=0)
    assert made.test.n == 4 and made.train.n + made.val.n == 20 and made.num_classes == 2


def _export_image_teacher(path, outputs: int = 1) -> torch.nn.Module:
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            logits = self.fc(x.flatten(1))
            return logits if outputs == 1 else (logits, logits * 2)

    torch.manual_seed(0)
    model = Net().eval()
    names = ["logits"] if outputs == 1 else ["logits", "double"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["x"], output_names=names,
                          dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    return model


def test_onnx_teacher_is_a_black_box_with_known_inputs(tmp_path) -> None:
    model = _export_image_teacher(tmp_path / "t.onnx")
    teacher = load_teacher(str(tmp_path / "t.onnx"))
    assert teacher.kind == "onnx" and teacher.params == 650
    assert [s.describe() for s in teacher.inputs] == ["float32[N,1,8,8]"]
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    assert probe_teacher(teacher, Split({"x": x}), "classification") == 10
    with torch.no_grad():
        got = teacher.module(torch.from_numpy(x))
        np.testing.assert_allclose(got.numpy(), model(torch.from_numpy(x)).numpy(), atol=1e-5)
    _export_image_teacher(tmp_path / "two.onnx", outputs=2)
    two = load_teacher(str(tmp_path / "two.onnx"))
    with pytest.raises(BadInputError, match="returns 2 outputs .*logits: float32\\[N,10\\]"):
        probe_teacher(two, Split({"x": x}), "classification")
    chosen = load_teacher(str(tmp_path / "two.onnx"), output="double")
    assert probe_teacher(chosen, Split({"x": x}), "classification") == 10


def test_cli_refuses_data_that_does_not_fit_the_teacher_before_training(tmp_path) -> None:
    _export_image_teacher(tmp_path / "t.onnx")
    rng = np.random.default_rng(0)
    # 100 samples: every class keeps a sample in each of train/val/test (checked first)
    np.savez(tmp_path / "flat.npz", x=rng.random((100, 64)), y=np.arange(100) % 10)
    out = tmp_path / "run"
    result = runner.invoke(app, ["distill", "--teacher", str(tmp_path / "t.onnx"), "--data",
                                 str(tmp_path / "flat.npz"), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"edgekd: error: {tmp_path / 'flat.npz'}: input 'x': expected float32[N,1,8,8], "
        "got float64[N,64]"
    )
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def _bad_files(tmp_path):
    import safetensors.torch

    real = tmp_path / "real.safetensors"
    safetensors.torch.save_file({"w": torch.ones(64, 64)}, str(real))
    _export_image_teacher(tmp_path / "real.onnx")
    torch.save({"w": torch.ones(64, 64)}, tmp_path / "real.pt")
    random = np.random.default_rng(0).bytes(4096)
    files = {}
    for suffix in (".onnx", ".pt", ".safetensors"):
        data = (tmp_path / f"real{suffix}").read_bytes()
        for kind, content in (
            ("empty", b""),
            ("random", random),
            ("truncated", data[: len(data) // 2]),
        ):
            path = tmp_path / f"{kind}{suffix}"
            path.write_bytes(content)
            files[f"{kind}{suffix}"] = path
    return files


BAD = [
    f"{k}{s}" for s in (".onnx", ".pt", ".safetensors") for k in ("empty", "random", "truncated")
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", BAD)
def test_cli_bad_teacher_files_are_one_line_and_exit_2(bad_files, tmp_path, name) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["distill", "--teacher", str(bad_files[name]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and name in err, err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still used
def test_programs_load_only_when_trusted_and_weights_need_an_architecture(tmp_path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted.save(str(tmp_path / "t.pt"))
    with pytest.raises(UnsafeInputError, match="t.pt: a TorchScript module can run code"):
        load_teacher(str(tmp_path / "t.pt"))
    trusted = load_teacher(str(tmp_path / "t.pt"), trust_checkpoint=True)
    assert trusted.kind == "torchscript" and trusted.trusted and trusted.params == 15
    assert trusted.to_dict()["trust_checkpoint"] is True
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BadInputError, match="holds weights only .*--teacher-weights"):
        load_teacher(str(tmp_path / "weights.pt"))


def test_export_program_teacher_has_typed_inputs(tmp_path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(torch.nn.Linear(4, 3), (torch.zeros(2, 4),),
                                  dynamic_shapes=({0: batch},))  # fmt: skip
    torch.export.save(program, str(tmp_path / "t.pt2"))
    with pytest.raises(UnsafeInputError):
        load_teacher(str(tmp_path / "t.pt2"))
    teacher = load_teacher(str(tmp_path / "t.pt2"), trust_checkpoint=True)
    assert [s.describe() for s in teacher.inputs] == ["float32[N,4]"]
    assert probe_teacher(teacher, Split({"x": np.ones((3, 4), np.float32)}), "embedding") == 3


def test_factory_teacher_with_weights_and_a_mismatch(tmp_path) -> None:
    import safetensors.torch

    (tmp_path / "nets.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n"
    )
    weights = torch.nn.Linear(4, 3).state_dict()
    safetensors.torch.save_file(weights, str(tmp_path / "w.safetensors"))
    spec = f"{tmp_path / 'nets.py'}:make"
    teacher = load_teacher(spec, weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(teacher.module.inner.weight, weights["weight"])
    assert [s.name for s in teacher.inputs] == ["input"]  # from forward's signature
    safetensors.torch.save_file({"weight": torch.ones(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(BadInputError, match="bad.safetensors: does not fit the model"):
        load_teacher(spec, weights=str(tmp_path / "bad.safetensors"))
    with pytest.raises(BadInputError, match="has no attribute 'nope'"):
        load_teacher(f"{tmp_path / 'nets.py'}:nope")
    with pytest.raises(BadInputError, match="cannot import module 'no_such_pkg_xyz.models'"):
        load_teacher("no_such_pkg_xyz.models:make")


def test_hugging_face_folder_without_transformers_names_the_extra(tmp_path, monkeypatch) -> None:
    import sys

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(BadInputError, match=r"pip install 'edgekd\[hf\]'"):
        load_teacher(str(tmp_path))


def test_config_file_reports_every_problem_with_its_line(tmp_path) -> None:
    (tmp_path / "run.toml").write_text(
        'target = "mobile"\nepochs = 0\nlrr = 0.1\nalpha = "high"\ntrust_checkpoint = true\n'
    )
    result = runner.invoke(app, ["distill", "--config", str(tmp_path / "run.toml")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"edgekd: error: {tmp_path / 'run.toml'}: 4 problems: line 3 'lrr': unknown key "
        "(did you mean 'lr'?); line 4 'alpha': expected a number, got a string 'high'; "
        "line 5 'trust_checkpoint': may only be given on the command line; "
        "line 2 'epochs': must be >= 1, got 0"
    )
    # The file's values are used, and options typed on the command line win over them.
    (tmp_path / "ok.toml").write_text(f'data = "{tmp_path / "from_file.npz"}"\nepochs = 1\n')
    result = runner.invoke(app, ["distill", "--config", str(tmp_path / "ok.toml")])
    assert result.exit_code == 2 and "from_file.npz: data file not found" in result.stderr
    result = runner.invoke(app, ["distill", "--config", str(tmp_path / "ok.toml"), "--data",
                                 str(tmp_path / "from_cli.npz")])  # fmt: skip
    assert result.exit_code == 2 and "from_cli.npz: data file not found" in result.stderr


def test_declared_inputs_of_a_factory_teacher_are_checked_before_training(tmp_path) -> None:
    (tmp_path / "declared.py").write_text(
        textwrap.dedent("""
        import torch

        def make():
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
            model.edgekd_inputs = {"x": ("float32", (1, 8, 8))}
            return model
    """)
    )
    teacher = load_teacher(f"{tmp_path / 'declared.py'}:make")
    np.savez(tmp_path / "flat.npz", x=np.zeros((100, 64)), y=np.arange(100) % 10)
    data = load_data(str(tmp_path / "flat.npz"))
    with pytest.raises(DataError) as err:
        conform(data, teacher.inputs, {"train": "flat.npz", "val": "flat.npz", "test": "flat.npz"})
    assert str(err.value) == "flat.npz: input 'x': expected float32[N,1,8,8], got float64[N,64]"


def test_hugging_face_folder_loads_safetensors_only_and_no_remote_code(tmp_path, monkeypatch):
    import sys
    import types

    calls = {}

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(30, 8)

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            h = self.embed(input_ids)
            return {"last_hidden_state": h, "pooler_output": h.mean(1)}

    class Auto:
        @staticmethod
        def from_pretrained(path, **kwargs):
            calls["config"] = kwargs
            return types.SimpleNamespace(architectures=["TinyModel"])

    class AutoModel:
        @staticmethod
        def from_pretrained(path, **kwargs):
            calls["model"] = kwargs
            return Encoder()

    fake = types.SimpleNamespace(
        AutoConfig=Auto, AutoModel=AutoModel, AutoModelForSequenceClassification=AutoModel
    )
    monkeypatch.setitem(sys.modules, "transformers", fake)
    (tmp_path / "config.json").write_text("{}")
    teacher = load_teacher(str(tmp_path), output="pooler_output", task="embedding")
    assert calls["config"] == {"local_files_only": True, "trust_remote_code": False}
    assert calls["model"] == {
        "local_files_only": True,
        "trust_remote_code": False,
        "use_safetensors": True,
    }
    assert [(s.name, s.optional) for s in teacher.inputs] == [
        ("input_ids", False),
        ("attention_mask", True),
        ("token_type_ids", True),
    ]
    data = Split({"input_ids": np.ones((4, 5), np.int64), "attention_mask": np.ones((4, 5), int)})
    fitted = check_inputs(teacher.inputs, data)
    teacher.bind(tuple(fitted.inputs))
    assert probe_teacher(teacher, fitted, "embedding") == 8


def _mixed_size_images(root) -> None:
    """Two classes of PNGs of different sizes: dark left and right edges, a bright centre."""
    import matplotlib.image

    for c, cls in enumerate(("dim", "lit")):
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate([(8, 8), (10, 16), (12, 9)] * 4):
            img = np.zeros((h, w))
            img[:, (w - min(h, w)) // 2 : (w + min(h, w)) // 2] = 0.5 + 0.4 * c + 0.01 * i
            matplotlib.image.imsave(root / cls / f"{i}.png", img, cmap="gray", vmin=0, vmax=1)


def test_image_size_resizes_and_crops_mixed_sizes(tmp_path) -> None:
    _mixed_size_images(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"image is 16x10 .* pass --image-size N"):
        load_data(str(tmp_path / "imgs"))
    data = load_data(str(tmp_path / "imgs"), image_size=6)
    assert data.sample_shapes == {"x": (3, 6, 6)} and data.train.n + data.val.n + data.test.n == 24
    # the centre square of each image is kept: no dark edge survives the crop
    assert min(s.inputs["x"].min() for s in (data.train, data.val, data.test)) > 0.45
    with pytest.raises(DataError, match="--image-size applies to a folder of images only"):
        load_data(str(tmp_path / "none.npz"), image_size=6)


def test_distill_trains_on_mixed_sizes_with_image_size(tmp_path) -> None:
    _mixed_size_images(tmp_path / "imgs")
    common = ["distill", "--data", str(tmp_path / "imgs"), "--epochs", "1", "--teacher-epochs",
              "1", "--bench-seconds", "0.02", "--bench-processes", "1", "--json"]  # fmt: skip
    refused = runner.invoke(app, [*common, "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "pass --image-size N" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, [*common, "--image-size", "8", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["inputs"]["x"] == "float32[N,3,8,8]"
    assert report["data"]["image_transform"].startswith("short side resized to 8 px")
