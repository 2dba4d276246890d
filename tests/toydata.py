"""Toy data, teacher and student shared by the method and strategy tests (small enough that a
strategy runs in a fraction of a second on one thread).

Three classes of 1x8x8 images: a bright 4x4 patch in one of three places, plus noise. The command
teacher in ``fixtures/toy_teacher.py`` scores the same patches.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekd.data import DataBundle, Split
from edgekd.students import build_student
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student

PATCHES = ((slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(2, 6)))
# Few steps on tiny data need a high learning rate and small batches to get anywhere.
FAST = TrainConfig(epochs=3, lr=3e-2, batch_size=8)


def toy_split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        rows, cols = PATCHES[c]
        x[i, 0, rows, cols] += 1.0
    return Split({"x": x}, y.astype(np.int64))


def toy_bundle() -> DataBundle:
    return DataBundle("toy", toy_split(96, 0), toy_split(30, 1), toy_split(60, 2), 3, "image")


def toy_teacher(data: DataBundle) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_student("cnn", (1, 8, 8), 3, width=0.5, depth=2)
    train_student(model, data.train, data.val, TrainConfig(epochs=6, lr=1e-2, batch_size=16))
    assert test_accuracy(model, data) > 0.9
    return model


def tiny_student(family: str = "cnn", seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_student(family, (1, 8, 8), 3, width=0.25, depth=1)


def test_accuracy(model: torch.nn.Module, data: DataBundle) -> float:
    return accuracy(predict_logits(model, data.test), data.test.y)


test_accuracy.__test__ = False  # a helper, not a test
