"""The default data set's splits, .npz loading, and every registered student family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.data import load_data, load_npz, stratified_split
from edgekd.errors import DataError
from edgekd.students import all_families, build_student, count_params


def test_digits_split_is_stratified_disjoint_and_reproducible() -> None:
    a, b = load_data(None, seed=0), load_data("digits", seed=0)
    assert a.train.n + a.val.n + a.test.n == 1797
    assert a.sample_shapes == {"x": (1, 8, 8)} and a.num_classes == 10
    assert np.array_equal(a.test.y, b.test.y) and np.array_equal(
        a.test.inputs["x"], b.test.inputs["x"]
    )
    # Every class appears in every split, in about the same share.
    for split in (a.train, a.val, a.test):
        counts = np.bincount(split.y, minlength=10)
        assert counts.min() > 0 and counts.max() / counts.min() < 1.5
    assert "seed 0" in a.split_note
    c = load_data(None, seed=1)
    assert not np.array_equal(a.test.inputs["x"], c.test.inputs["x"])


def test_stratified_split_partitions_indices() -> None:
    y = np.repeat(np.arange(3), 10)
    parts = stratified_split(y, (0.7, 0.1, 0.2), seed=0)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(30))
    assert [len(p) for p in parts] == [21, 3, 6]


def test_npz_loading_and_errors(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(60, 5))
    y = np.arange(60) % 3
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    bundle = load_npz(tmp_path / "ok.npz")
    assert bundle.input_kind == "vector" and bundle.num_classes == 3
    # The stored dtype is kept; edgekd.data.inputs.check_inputs casts it to what the model takes.
    assert bundle.train.inputs["x"].dtype == np.float64
    np.savez(tmp_path / "nolabels.npz", x=x)
    unlabelled = load_npz(tmp_path / "nolabels.npz")  # a transfer set: labels are optional
    assert unlabelled.train.y is None and "random" in unlabelled.split_note
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "absent.npz")


SHAPES = {"image": (1, 8, 8), "sequence": (1, 40), "vector": (12,)}
CASES = [(f.name, kind) for f in all_families() for kind in f.input_kinds if kind in SHAPES]


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_family_builds_runs_and_grows_with_width(family: str, kind: str) -> None:
    shape = SHAPES[kind]
    small = build_student(family, shape, 10, width=0.5, depth=2)
    large = build_student(family, shape, 10, width=2.0, depth=2)
    out = small(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert count_params(large) > count_params(small)
    # Feature-based methods tap `features`; the head turns it into logits.
    assert hasattr(small, "features") and hasattr(small, "head")
    assert small.edgekd_arch["family"] == family


def test_data_types_are_one_class_wherever_imported_from():
    """``Split``/``DataBundle`` live in edgekd.data.split (the readers use them without importing
    the loaders); ``from edgekd.data import Split`` keeps working."""
    import edgekd.data
    import edgekd.data.readers
    import edgekd.data.readers.source
    import edgekd.data.split

    assert edgekd.data.Split is edgekd.data.split.Split
    assert edgekd.data.DataBundle is edgekd.data.split.DataBundle
    assert edgekd.data.readers.Source is edgekd.data.readers.source.Source
