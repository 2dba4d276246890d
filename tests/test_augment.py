"""Augmentations keep shapes, dtypes and (label-preserving ones) labels; mixup drops labels."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import Split
from edgekd.data.augment import POLICIES, make_augmenter, mixup, shift
from edgekd.errors import BadInputError

SAMPLES = {
    "image": {"x": np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)},
    "sequence": {"x": np.random.default_rng(0).random((6, 1, 40), dtype=np.float32)},
    "vector": {"x": np.random.default_rng(0).random((6, 12), dtype=np.float32)},
    "tokens": {
        "input_ids": np.arange(60).reshape(6, 10) + 1,
        "attention_mask": np.ones((6, 10), dtype=np.int64),
    },
}


@pytest.mark.parametrize(("kind", "level"), sorted(POLICIES))
def test_policy_keeps_shapes_dtypes_and_changes_inputs(kind: str, level: str) -> None:
    batch = Split(SAMPLES[kind], np.arange(6))
    out = make_augmenter(kind, level)(batch, np.random.default_rng(1))
    for k, v in batch.inputs.items():
        assert out.inputs[k].shape == v.shape and out.inputs[k].dtype == v.dtype
    assert any(not np.array_equal(out.inputs[k], v) for k, v in batch.inputs.items())
    if "mixup" in make_augmenter(kind, level).name:
        assert out.y is None  # mixed samples have no single hard label
    else:
        assert np.array_equal(out.y, batch.y)


def test_same_rng_same_view_and_none_is_identity() -> None:
    batch = Split(SAMPLES["image"], np.arange(6))
    aug = make_augmenter("image", "strong")
    a, b = aug(batch, np.random.default_rng(5)), aug(batch, np.random.default_rng(5))
    assert np.array_equal(a.inputs["x"], b.inputs["x"])
    assert make_augmenter("image", "none") is None
    with pytest.raises(BadInputError, match="--augment must be one of"):
        make_augmenter("image", "extreme")


def test_shift_moves_content_by_whole_positions_and_zero_fills() -> None:
    x = np.zeros((1, 1, 10), dtype=np.float32)
    x[0, 0, 5] = 1.0
    out = shift(0.1)(Split({"x": x}), np.random.default_rng(3)).inputs["x"]
    assert out.sum() in (0.0, 1.0) and out[0, 0].nonzero()[0].tolist() in ([4], [5], [6])


def test_mixup_is_a_convex_combination() -> None:
    x = np.stack([np.full(4, 0.0), np.full(4, 1.0)]).astype(np.float32)
    out = mixup()(Split({"x": x}, np.array([0, 1])), np.random.default_rng(0)).inputs["x"]
    assert np.all(out >= 0.0) and np.all(out <= 1.0)
    assert np.allclose(out, out[:, :1])  # each row mixes two constant rows: still constant
