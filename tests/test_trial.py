"""The short trial between plausible student families and augmentation levels (issue 16): its
step budget holds (steps counted), ``--student`` skips the family trial, a run too short for a
trial keeps the evidence's choice, and the report names the evidence."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch
from toydata import toy_bundle, toy_teacher

from edgekd.config import DistillConfig
from edgekd.data import Split
from edgekd.report.sizing_table import sizing_markdown
from edgekd.sizing import trial as trial_mod
from edgekd.sizing.candidate import SizingRequest
from edgekd.sizing.trial import TRIAL_SHARE, TRIAL_STEPS, choose_student
from edgekd.students import View
from edgekd.targets import load_target
from edgekd.teacher.prepare import Teaching
from edgekd.train.loop import predict_logits

CLAIMED_TEACHER_PARAMS = 1_000_000  # only bounds the share-of-teacher line


def _flat(split: Split) -> Split:
    return Split({"x": split.inputs["x"].reshape(split.n, -1)}, split.y)


@pytest.fixture(scope="module")
def teaching() -> Teaching:
    """The toy images stored flat, ``[N, 64]``, and a conv teacher that reshapes them to 8x8."""
    images = toy_bundle()
    teacher = torch.nn.Sequential(View((1, 8, 8)), toy_teacher(images)).eval()
    data = dataclasses.replace(
        images,
        train=_flat(images.train),
        val=_flat(images.val),
        test=_flat(images.test),
        input_kind="vector",
    )
    outputs = {k: predict_logits(teacher, getattr(data, k)) for k in ("train", "val")}
    return Teaching(teacher, {}, data, 3, CLAIMED_TEACHER_PARAMS, outputs["train"], outputs["val"])


@pytest.fixture(autouse=True)
def _small_search(monkeypatch):
    """Two widths and two depths per family, no host timing: the trial is under test here."""
    small = functools.partial(
        SizingRequest, widths=(0.25, 0.5), depths=(1, 2), measure_host=False, baseline_mb=56.0
    )
    monkeypatch.setattr(trial_mod, "SizingRequest", small)
    torch.set_num_threads(1)


def _choose(teaching: Teaching, **config):
    settings = {"batch_size": 8, "lr": 3e-2, "epochs": 100, **config}
    return choose_student(
        DistillConfig(**settings), load_target("iot"), teaching, teaching.data, "kd", "offline"
    )


def test_trial_between_families_keeps_its_step_budget(teaching: Teaching) -> None:
    result = _choose(teaching)
    trial = result.trial
    families = [r for r in trial.rows if r.stage == "family"]
    assert [r.family for r in families] == ["cnn", "mobilenet", "mlp"]
    assert families[0].view == (1, 8, 8)  # the teacher's own view of the flat rows
    assert result.chosen.family in {r.family for r in families}
    # The budget holds: steps counted per run, every run together within the share of the run.
    run_steps = 100 * int(np.ceil(teaching.data.train.n / 8))
    assert 0 < trial.steps_per_run <= TRIAL_STEPS
    assert all(0 < r.steps <= trial.steps_per_run for r in trial.rows)
    assert sum(r.steps for r in trial.rows) <= TRIAL_SHARE * run_steps
    levels = {r.augment for r in trial.rows if r.family == result.chosen.family}
    assert {"none", "light"} <= levels  # the augmentation trial ran for the chosen family
    assert trial.augment in levels and "tried" in trial.augment_why
    # The chosen student takes the user's flat rows.
    assert result.chosen.params > 0 and result.augment_kind == "vector"


def test_student_flag_overrides_the_family_trial(teaching: Teaching) -> None:
    result = _choose(teaching, student="mlp")
    assert result.chosen.family == "mlp"
    assert not [r for r in result.trial.rows if r.stage == "family"]
    assert "--student mlp" in result.trial.family_why


def test_a_run_too_short_for_a_trial_keeps_the_evidences_choice(teaching: Teaching) -> None:
    result = _choose(teaching, epochs=2)
    assert result.trial.rows == ()
    assert result.chosen.family == "cnn"  # the 2-D conv teacher's first family
    assert "no trial" in result.trial.family_why


def test_report_names_the_evidence(teaching: Teaching) -> None:
    stored = json.loads(json.dumps(_choose(teaching, augment="none").to_dict()))
    assert "conv2d" in stored["evidence"]["structure"]["layers"]
    assert any("2-D convolutions" in line for line in stored["evidence"]["evidence"])
    assert stored["trial"]["augment_why"] == "--augment given: no augmentation trial"
    text = sizing_markdown(stored)
    assert "evidence: teacher (pytorch modules)" in text
    assert "| stage | candidate | sees |" in text and "[1,8,8]" in text
