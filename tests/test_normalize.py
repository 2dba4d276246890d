"""``--normalize``: the syntax, per-channel statistics checked against values worked by hand,
and the normalisation stored with the model (a checkpoint rebuilds it; the ONNX graph starts with
Sub and Div, so ONNX Runtime on raw inputs gives what PyTorch gives)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgekd.data import Split
from edgekd.data.normalize import (
    Normalization,
    attach_normalization,
    normalization_for,
    parse_normalize,
)
from edgekd.errors import BadInputError, DataError
from edgekd.export import export_onnx
from edgekd.students.checkpoint import load_model, save_model
from tests.toydata import tiny_student, toy_split


def test_the_syntax() -> None:
    assert parse_normalize("none") == "none" and parse_normalize(" AUTO ") == "auto"
    assert parse_normalize("0.5:0.25") == Normalization((0.5,), (0.25,))
    assert parse_normalize("0.5,0.25") == Normalization((0.5,), (0.25,))
    three = parse_normalize("0.485,0.456,0.406:0.229,0.224,0.225")
    assert three.mean == (0.485, 0.456, 0.406) and three.std == (0.229, 0.224, 0.225)
    for bad, why in [("1,2,3", "expected auto"), ("0.5:0", "stds must be > 0"),
                     ("a:b", "must be numbers"), ("1,2:3", "2 mean")]:  # fmt: skip
        with pytest.raises(BadInputError, match=why):
            parse_normalize(bad)


def test_auto_takes_each_channels_mean_and_std() -> None:
    # channel 0 is 2.0 everywhere (std 0: left unscaled, std 1); channel 1 is 0 or 1 in equal
    # numbers of pixels (mean 0.5, population std 0.5); fewer than 1,000 samples: all are used
    x = np.zeros((10, 2, 2, 2), np.float32)
    x[:, 0] = 2.0
    x[:, 1, 0] = 1.0
    norm = normalization_for("auto", Split({"x": x}), seed=0)
    assert norm.how == "auto"
    np.testing.assert_allclose(norm.mean, (2.0, 0.5))
    np.testing.assert_allclose(norm.std, (1.0, 0.5))
    with pytest.raises(DataError, match="2 means for input 'x' with 1 channels"):
        normalization_for("0.1,0.2:0.3,0.4", toy_split(6, 0), seed=0)
    assert normalization_for("none", toy_split(6, 0), seed=0) is None


def test_normalisation_is_stored_in_the_checkpoint_and_baked_into_onnx(tmp_path) -> None:
    x = toy_split(16, 0).inputs["x"] * 255.0  # raw pixels
    plain = tiny_student().eval()
    normed = attach_normalization(tiny_student().eval(), Normalization((127.5,), (64.0,)))
    with torch.no_grad():
        expected = plain(torch.from_numpy((x - 127.5) / 64.0)).numpy()
        np.testing.assert_allclose(normed(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    assert normed.edgekd_arch["normalize"] == {"mean": [127.5], "std": [64.0], "how": "given"}
    # the state dict is unchanged: no parameter or buffer added
    assert normed.state_dict().keys() == plain.state_dict().keys()
    save_model(normed, tmp_path / "s.safetensors")
    again = load_model(tmp_path / "s.safetensors")
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    export_onnx(normed, tmp_path / "s.onnx", {"x": x[:1]}, parity_inputs={"x": x})
    graph = onnx.load(str(tmp_path / "s.onnx")).graph
    first, second = graph.node[0], graph.node[1]
    assert (first.op_type, second.op_type) == ("Sub", "Div")
    assert first.input[0] == graph.input[0].name and second.input[0] == first.output[0]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {graph.input[0].name: x})
    np.testing.assert_allclose(got, expected, atol=1e-4)
