"""A schedule sized to the data: the default step budget (more epochs for small sets, fewer for
large ones, today's epochs for the shipped sets), ``--time-budget`` (a deterministic stop for a
given clock, resumed exactly) and the progress bar's time left."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from edgekd.config import DistillConfig
from edgekd.data import Split, load_data
from edgekd.distill.job import (
    MIN_EPOCHS,
    PATIENT_EPOCHS,
    PLAIN_EPOCHS,
    default_epochs,
    epochs_choice,
    step_budget,
)
from edgekd.distill.methods import make_method
from edgekd.distill.views import resolve_augment
from edgekd.errors import BadInputError, Interrupted
from edgekd.students import build_student
from edgekd.train.loop import TrainConfig, cached_teacher, train_student
from edgekd.train.resume import TimeBudget, load_training_state

BATCH = DistillConfig().batch_size
STEPS_PER_EPOCH = 6  # 96 samples, batches of 16


@pytest.mark.parametrize("name", ["mnist1d", "digits"])
def test_the_shipped_sets_keep_their_epochs_in_every_mode(name) -> None:
    data = load_data(name, seed=0)
    default = resolve_augment(None, data.input_kind)
    expected = PLAIN_EPOCHS if default == "none" else PATIENT_EPOCHS
    assert default_epochs(default, data.train.n, BATCH) == expected == default_epochs(default)
    for level in ("none", "light", "strong"):
        assert default_epochs(level, data.train.n, BATCH) == default_epochs(level)


@pytest.mark.parametrize("level", ["none", "strong"])
def test_the_step_budget_gives_small_sets_more_epochs_than_large_ones(level) -> None:
    small, large, huge = 500, 60_000, 10_000_000
    assert default_epochs(level, small, BATCH) == default_epochs(level)  # the most
    assert default_epochs(level, large, BATCH) < default_epochs(level, small, BATCH)
    assert default_epochs(level, large, BATCH) == math.ceil(
        step_budget(level, large) / math.ceil(large / BATCH)
    )
    assert (default_epochs("strong", large, BATCH), default_epochs("none", large, BATCH)) == (5, 2)
    # more data, fewer steps: by the square root of how much larger than MNIST-1D (hand-worked:
    # 5,700 x sqrt(3,601 / 14,404) = 5,700 / 2 = 2,850)
    assert step_budget(level, 500) == step_budget(level, 3_601) == step_budget(level)
    assert step_budget(level, 14_404) == step_budget(level) // 2
    assert default_epochs(level, huge, BATCH) == MIN_EPOCHS
    # a larger batch takes fewer steps an epoch: as many epochs or more
    assert default_epochs(level, large, 4 * BATCH) >= default_epochs(level, large, BATCH)


def test_the_report_says_how_the_epochs_were_chosen() -> None:
    assert epochs_choice(DistillConfig(), "strong") == {
        "epochs_from": "step budget",
        "step_budget": step_budget("strong"),
    }
    assert epochs_choice(DistillConfig(), "none", 14_404)["step_budget"] == 2_850
    assert epochs_choice(DistillConfig(epochs=5), "none") == {
        "epochs_from": "--epochs",
        "step_budget": None,
    }


def test_a_time_budget_must_be_positive() -> None:
    with pytest.raises(BadInputError, match="time_budget must be > 0"):
        DistillConfig(time_budget=0)
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(time_budget=-1.0)
    assert DistillConfig(time_budget=600).time_budget == 600
    # not a setting a checkpoint must match, nor part of the default teacher's cache key
    assert "time_budget" not in TrainConfig(time_budget=5.0).settings()
    assert repr(TrainConfig(time_budget=5.0)) == repr(TrainConfig())


@pytest.fixture
def step_seconds(monkeypatch):
    """A fake clock for the time budget: one second passes per training step."""
    now = [0.0]
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: now[0]))
    return now


def _train(now, budget, checkpoint=None, resume=False, on_step=None, epochs=5, max_steps=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    train = Split({"x": x}, (x[:, 0] > 0).astype(np.int64))
    val = Split({"x": x[:32]}, train.y[:32])
    cached = cached_teacher(rng.normal(size=(96, 2)))
    torch.manual_seed(0)
    student = build_student("mlp", (6,), 2, width=0.25, depth=1)
    calls = [0]

    def teacher(index, batch):
        now[0] += 1.0
        calls[0] += 1
        if on_step is not None:
            on_step(calls[0])
        return cached(index, batch)

    config = TrainConfig(
        epochs=epochs, lr=1e-2, batch_size=16, time_budget=budget, max_steps=max_steps
    )
    history = train_student(
        student, train, val, config, make_method("kd"), teacher, checkpoint=checkpoint,
        resume=resume,
    )  # fmt: skip
    return student, history


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_time_budget_stops_at_the_first_epoch_end_after_it(step_seconds, capsys) -> None:
    # 6 seconds an epoch: 15 s are spent during the third epoch, which is finished
    student, history = _train(step_seconds, 15.0)
    assert len(history.loss) == 3
    best = history.best_epoch + 1
    assert history.stopped == (
        f"time budget of 15 s spent after epoch 3 of 5; kept the best epoch ({best})"
    )
    assert capsys.readouterr().err.strip().endswith(f"distill: {history.stopped}")  # one line
    assert len(_train(step_seconds, 1e-3)[1].loss) == 1  # at least one epoch is trained
    unlimited = _train(step_seconds, None)[1]
    assert len(unlimited.loss) == 5 and unlimited.stopped is None
    again, _ = _train(step_seconds, 15.0)
    assert _same_weights(student, again)  # deterministic for a given clock


def test_a_resumed_run_counts_the_seconds_spent_before(step_seconds, tmp_path) -> None:
    reference, ref_history = _train(step_seconds, 15.0)
    ckpt = tmp_path / "checkpoint.pt"

    def send(n):
        if n == STEPS_PER_EPOCH + 2:  # epoch 2, second step
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        _train(step_seconds, 15.0, ckpt, on_step=send)
    assert load_training_state(ckpt)["spent_s"] == STEPS_PER_EPOCH + 2
    step_seconds[0] += 1000.0  # time while the run was stopped does not count
    student, history = _train(step_seconds, 15.0, ckpt, resume=True)
    assert _same_weights(student, reference)
    assert history.to_dict() == ref_history.to_dict() and len(history.loss) == 3
    assert history.stopped == ref_history.stopped


def test_a_step_budget_stops_mid_epoch_and_validates_there(step_seconds) -> None:
    # 6 steps an epoch: 14 steps are two epochs and two steps of the third
    student, history = _train(step_seconds, None, epochs=3, max_steps=14)
    assert step_seconds[0] == 14  # one teacher call per step
    assert len(history.loss) == len(history.val_accuracy) == 3
    assert TrainConfig(epochs=3, max_steps=14).total_steps(6) == 14  # the one-cycle schedule's
    assert [TrainConfig(epochs=3, max_steps=14).steps_in_epoch(e, 6) for e in range(3)] == [6, 6, 2]
    assert TrainConfig(epochs=3, max_steps=100).total_steps(6) == 18  # whole epochs: all of them
    # out of the repr (the default teacher's cache key) and, unset, of a checkpoint's settings
    assert repr(TrainConfig(max_steps=7)) == repr(TrainConfig())
    assert "max_steps" not in TrainConfig().settings()
    assert TrainConfig(max_steps=7).settings()["max_steps"] == 7
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_a_run_stopped_in_its_cut_epoch_resumes_bit_identical(step_seconds, tmp_path) -> None:
    reference, ref_history = _train(step_seconds, None, epochs=3, max_steps=14)
    ckpt = tmp_path / "checkpoint.pt"

    def send(n):
        if n == 2 * STEPS_PER_EPOCH + 1:  # the first step of the cut epoch
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="epoch 3, step 2 of"):
        _train(step_seconds, None, ckpt, on_step=send, epochs=3, max_steps=14)
    student, history = _train(step_seconds, None, ckpt, resume=True, epochs=3, max_steps=14)
    assert _same_weights(student, reference) and history.to_dict() == ref_history.to_dict()
    with pytest.raises(BadInputError, match="max_steps: 14 there, 15 now"):
        _train(step_seconds, None, ckpt, resume=True, epochs=3, max_steps=15)


def test_the_default_teacher_gets_more_steps_for_more_data_sub_linearly() -> None:
    from edgekd.teacher.default import (
        MAX_TEACHER_STEP_FACTOR,
        TEACHER_RECIPES,
        teacher_schedule,
        teacher_steps,
    )

    digits = load_data("digits", seed=0).train.n
    assert teacher_schedule("image", digits, BATCH) == (17, 340)  # the quick start's, as before
    assert teacher_schedule("sequence", load_data("mnist1d", seed=0).train.n, BATCH) == (100, 5700)
    for kind, (steps, _, _, measured_on) in TEACHER_RECIPES.items():
        assert teacher_steps(kind, measured_on // 10) == steps  # never fewer than the recipe's
        # ten times the data: a quarter more steps (hand-worked: 1 + log10(10) / 4 = 1.25)
        assert teacher_steps(kind, 10 * measured_on) == round(1.25 * steps)
        assert teacher_steps(kind, 10**9) == round(MAX_TEACHER_STEP_FACTOR * steps)
    # 60,000 samples (42,000 to train, 657 steps an epoch): 340 x (1 + log10(42,000 / 1,258) / 4)
    # = 340 x 1.381 = 470 steps, part of one epoch; before, 2 whole epochs (1,314 steps)
    assert teacher_schedule("image", 42_000, BATCH) == (1, 470)
    assert teacher_schedule("image", 14_000, BATCH) == (2, 429)  # 20,000: before, 438 steps


def test_the_default_teacher_halves_larger_images_in_its_stem(tmp_path) -> None:
    from edgekd.teacher.default import default_teacher_model

    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(40) % 4)
    big = default_teacher_model(load_data(str(tmp_path / "big.npz"), seed=0))
    small = default_teacher_model(load_data("digits", seed=0))
    assert big.features[0].stride == (2, 2) and small.features[0].stride == (1, 1)
    assert big.edgekd_arch["options"] == {"stem_stride": 2} and "options" not in small.edgekd_arch
    # the same weights (sizing's share-of-teacher rule reads the count): only the maps shrink
    plain = build_student("cnn", (1, 28, 28), 4, 4.0, 4)
    assert sum(p.numel() for p in big.parameters()) == sum(p.numel() for p in plain.parameters())
    assert big(torch.from_numpy(x[:2])).shape == (2, 4)


def test_the_bar_shows_the_time_left_at_the_pace_since_it_started() -> None:
    from rich.progress import Progress

    from edgekd.progress import time_left

    progress = Progress()
    task_id = progress.add_task("distill", total=10, completed=4, done_before=4)
    task = progress.tasks[0]
    assert time_left(task) == "-:--:--"  # nothing done yet in this process
    progress.update(task_id, advance=2)
    task.start_time = task.get_time() - 60.0  # two epochs in a minute: four more in two
    assert time_left(task) == "0:02:00"


def test_a_bar_in_a_log_prints_plain_lines_with_the_time_left(monkeypatch, capsys) -> None:
    # stderr captured: not a terminal, as in a CI log, where rich draws only the final state
    import edgekd.progress as progress

    monkeypatch.delenv("EDGEKD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with progress.progress_bar("distill", total=3) as bar:
        for _ in range(3):
            bar.advance(1, info="loss 0.5")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("distill 1/3")]
    assert lines and "loss 0.5 (0:00:00, eta " in lines[0]


def test_tune_runs_every_trial_on_the_patient_schedule_for_its_data() -> None:
    import dataclasses
    from types import SimpleNamespace

    from edgekd.tune import TrialRunner

    @dataclasses.dataclass(frozen=True)
    class Run:  # the two parts of a PreparedRun the schedule reads
        config: DistillConfig
        data: SimpleNamespace

    for n in (3_601, 60_000):
        runner = TrialRunner.__new__(TrialRunner)
        runner.run = Run(DistillConfig(), SimpleNamespace(train=SimpleNamespace(n=n)))
        config = runner.patient_schedule()
        assert config.epochs == runner.run.config.epochs == default_epochs("strong", n, BATCH)
