"""Runs that survive interruption and bad numbers: checkpoints, resume, signals, NaN, seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data import Split
from edgekd.distill.methods import Method, make_method
from edgekd.errors import DivergedError, Interrupted
from edgekd.students import build_student
from edgekd.train.loop import TrainConfig, cached_teacher, train_student
from edgekd.train.resume import load_training_state, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
STEPS_PER_EPOCH = 6  # 96 samples, batches of 16


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Split({"x": x}, y), Split({"x": x[:32]}, y[:32]), rng.normal(size=(96, 2))


def _train(checkpoint=None, resume=False, seed=0, on_step=None, method=None, epochs=3, every=0.0):
    """Train a tiny MLP by KD; ``on_step(n)`` runs inside the n-th teacher call (n from 1);
    ``every``: seconds between checkpoints (0: every epoch)."""
    train, val, logits = _data()
    torch.manual_seed(seed)
    student = build_student("mlp", (6,), 2, width=0.25, depth=1)
    cached = cached_teacher(logits)
    calls = [0]

    def teacher(index, batch):
        calls[0] += 1
        out = cached(index, batch)
        if on_step is not None:
            out = on_step(calls[0], out) or out
        return out

    config = TrainConfig(epochs=epochs, lr=1e-2, batch_size=16, seed=seed, checkpoint_every=every)
    history = train_student(
        student,
        train,
        val,
        config,
        method=method or make_method("kd"),
        teacher=teacher,
        checkpoint=checkpoint,
        resume=resume,
    )
    return student, history


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("a") / "checkpoint.pt")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_at_a_step_boundary_and_resume_is_exact(uninterrupted, tmp_path, signum):
    ckpt = tmp_path / "checkpoint.pt"
    before = signal.getsignal(signum)

    def send(n, _out):
        if n == STEPS_PER_EPOCH + 2:  # epoch 2, second step
            os.kill(os.getpid(), signum)

    with pytest.raises(Interrupted) as err:
        _train(ckpt, on_step=send)
    name = signal.Signals(signum).name
    assert f"stopped by {name} at epoch 2, step 3 of {STEPS_PER_EPOCH}" in str(err.value)
    assert err.value.exit_code == 130
    assert signal.getsignal(signum) is before  # the handler is ours only while training
    state = load_training_state(ckpt)
    assert (state["epoch"], state["step"]) == (1, 2)  # mid-epoch, after the step that was running
    student, history = _train(ckpt, resume=True)
    reference, ref_history = uninterrupted
    assert _same_weights(student, reference)
    assert history.to_dict() == ref_history.to_dict()


def test_signal_during_the_last_step_is_not_lost(uninterrupted, tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"

    def send(n, _out):
        if n == 3 * STEPS_PER_EPOCH:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="after the last epoch"):
        _train(ckpt, on_step=send)
    student, _ = _train(ckpt, resume=True)  # nothing left to train: the best weights come back
    assert _same_weights(student, uninterrupted[0])


def test_crash_resumes_from_the_last_epoch_checkpoint(uninterrupted, tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"

    def crash(n, _out):
        if n == 2 * STEPS_PER_EPOCH + 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        _train(ckpt, on_step=crash)
    assert load_training_state(ckpt)["epoch"] == 2 and load_training_state(ckpt)["order"] is None
    student, _ = _train(ckpt, resume=True)
    assert _same_weights(student, uninterrupted[0])


def test_second_ctrl_c_aborts_at_once_and_keeps_the_previous_checkpoint(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"

    def twice(n, _out):
        if n == STEPS_PER_EPOCH + 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt right here
            raise AssertionError("not reached")

    with pytest.raises(KeyboardInterrupt):
        _train(ckpt, on_step=twice)
    state = load_training_state(ckpt)
    assert (state["epoch"], state["step"]) == (1, 0)


def test_nan_teacher_output_or_loss_stops_without_a_best_checkpoint(tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"

    def poison(n, out):
        if n == STEPS_PER_EPOCH + 3:
            logits, feats = out
            return torch.full_like(logits, float("nan")), feats

    with pytest.raises(DivergedError, match="teacher produced NaN"):
        _train(ckpt, on_step=poison)
    state = load_training_state(ckpt)
    assert state["epoch"] == 1 and state["history"]["best_epoch"] == 0

    class NanAtStep(Method):
        name = "nan"
        calls = 0

        def loss(self, batch):
            NanAtStep.calls += 1
            kd = batch.student_logits.logsumexp(-1).mean()
            return kd * float("inf") if NanAtStep.calls == 2 * STEPS_PER_EPOCH + 1 else kd

    ckpt.unlink()
    with pytest.raises(DivergedError, match="loss became (nan|inf) at epoch 3") as err:
        _train(ckpt, method=NanAtStep())
    assert err.value.exit_code == 5
    assert load_training_state(ckpt)["epoch"] == 2  # the epoch that diverged wrote nothing


def test_same_seed_same_student_other_seed_other_student(uninterrupted) -> None:
    again, _ = _train()
    other, _ = _train(seed=1)
    assert _same_weights(again, uninterrupted[0])
    assert not _same_weights(other, uninterrupted[0])


WRITER = """
import sys, torch
from edgekd.train.resume import save_training_state
i = 0
while True:
    i += 1
    save_training_state(sys.argv[1], {"i": i, "w": torch.full((2_000_000,), float(i))})
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    caught_mid_write = False
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait for a complete file, then for a write
                if path.exists() and list(tmp_path.glob(".checkpoint.pt.*.tmp")):
                    break
                time.sleep(0.001)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = load_training_state(path)
        assert torch.all(state["w"] == float(state["i"]))  # whole, and one version throughout
        stale = remove_stale_temporaries(path)
        caught_mid_write |= bool(stale)
        assert load_training_state(path)["i"] == state["i"]
        if caught_mid_write:
            break
    assert caught_mid_write


def test_cli_ctrl_c_exits_130_and_resume_finishes_the_run(tmp_path) -> None:
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "edgekd", "distill", "--epochs", "8", "--teacher-epochs", "2"]
    # a checkpoint half a second into training (the default 30 s outlasts this short run)
    cmd += ["--bench-seconds", "0.02", "--checkpoint-every", "0.5", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (partial / "checkpoint.pt").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("edgekd: error: distill: stopped by SIGINT at epoch")
    assert last.endswith(f"resume with: edgekd distill --resume {out}")
    assert (partial / "checkpoint.pt").is_file() and (partial / "config.json").is_file()
    assert not out.exists()

    fresh = runner.invoke(app, ["distill", "--epochs", "1", "--out", str(out)])
    assert fresh.exit_code == 2 and f"continue it with --resume {out}" in fresh.stderr
    refused = runner.invoke(app, ["distill", "--resume", str(out), "--epochs", "3"])
    assert refused.exit_code == 2 and "drop --epochs" in refused.stderr
    result = runner.invoke(app, ["distill", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["resumed"] is True and len(report["training"]["history"]["loss"]) == 8
    assert not partial.exists() and not (out / "checkpoint.pt").exists()
    again = runner.invoke(app, ["distill", "--resume", str(out)])
    assert again.exit_code == 2 and "already complete" in again.stderr


def test_cli_resume_of_nothing_is_an_error_not_a_fresh_start(tmp_path) -> None:
    result = runner.invoke(app, ["distill", "--resume", str(tmp_path / "never")])
    assert result.exit_code == 2
    assert "no interrupted run there" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_nan_teacher_exits_5_and_leaves_nothing(tmp_path) -> None:
    (tmp_path / "nan_teacher.py").write_text(
        "import torch\n\n\nclass T(torch.nn.Module):\n"
        "    def forward(self, x):\n        return torch.full((x.shape[0], 10), float('nan'))\n\n\n"
        "def make():\n    return T()\n"
    )
    out = tmp_path / "run"
    spec = f"{tmp_path / 'nan_teacher.py'}:make"
    result = runner.invoke(app, ["distill", "--teacher", spec, "--out", str(out)])
    assert result.exit_code == 5, result.output
    assert "teacher produced NaN or infinite outputs" in result.stderr
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_a_multi_stage_strategy_resumes_each_stage_exactly(tmp_path, monkeypatch) -> None:
    """Teacher -> assistant -> student -> fine-tune, stopped by SIGINT in the second stage:
    the resumed run passes through the finished stage and ends with the same weights."""
    from dataclasses import replace

    from toydata import FAST, tiny_student, toy_bundle, toy_teacher

    from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy
    from edgekd.train import loop as trainer

    toy = toy_bundle()
    teacher = toy_teacher(toy)

    def job(folder=None, resume=False) -> DistillJob:
        options = StrategyOptions(finetune_epochs=2, use_cache=False)
        return DistillJob(
            teacher, tiny_student(), toy, FAST, "kd", {}, options, None, folder, resume
        )

    reference = run_strategy("assistant", job()).student
    steps = FAST.epochs * -(-toy.train.n // FAST.batch_size)  # per distillation stage
    real_loss, calls = trainer._loss, [0]

    def stopping_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == steps + 5:  # the student's stage, epoch 1, step 5
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "_loss", stopping_loss)
    folder = tmp_path / "stages"
    with pytest.raises(Interrupted, match="distill: stopped by SIGINT at epoch 1, step 6"):
        run_strategy("assistant", job(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["assist.pt", "distill.pt"]
    monkeypatch.setattr(trainer, "_loss", real_loss)
    resumed = run_strategy("assistant", job(folder, resume=True))
    assert _same_weights(resumed.student, reference)
    assert sorted(p.name for p in folder.iterdir()) == ["assist.pt", "distill.pt", "fine-tune.pt"]
    assert load_training_state(folder / "assist.pt")["epoch"] == FAST.epochs
    fresh = replace(job(folder), resume=False)  # without --resume the files are overwritten
    assert _same_weights(run_strategy("assistant", fresh).student, reference)


@pytest.mark.parametrize("method", ["kd", "fitnet"])  # cached outputs, live teacher taps
def test_offline_keeps_its_checkpoint_where_older_runs_left_it(tmp_path, monkeypatch, method):
    """The offline strategy trains in one stage: its checkpoint is the run folder's checkpoint.pt
    (beside stages/, which holds the fine-tune stage's), so an interrupted run of an older edgekd
    resumes; stopped by SIGINT and resumed, it ends with the weights of an unbroken run."""
    from toydata import FAST, tiny_student, toy_bundle, toy_teacher

    from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy
    from edgekd.teacher.outputs import TeacherOutputs
    from edgekd.train import loop as trainer

    toy = toy_bundle()
    teacher = toy_teacher(toy)
    outputs = TeacherOutputs(
        trainer.predict_logits(teacher, toy.train), trainer.predict_logits(teacher, toy.val)
    )

    def job(folder=None, resume=False) -> DistillJob:
        options = StrategyOptions(finetune_epochs=1)
        return DistillJob(
            teacher, tiny_student(), toy, FAST, method, {}, options, None, folder, resume,
            outputs=outputs,
        )  # fmt: skip

    reference = run_strategy("offline", job()).student
    steps = -(-toy.train.n // FAST.batch_size)  # per epoch
    real_loss, calls = trainer._loss, [0]

    def stopping_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == steps + 3:  # epoch 2, step 3
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "_loss", stopping_loss)
    folder = tmp_path / "stages"
    with pytest.raises(Interrupted, match="distill: stopped by SIGINT at epoch 2"):
        run_strategy("offline", job(folder))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # not stages/distill.pt
    monkeypatch.setattr(trainer, "_loss", real_loss)
    resumed = run_strategy("offline", job(folder, resume=True))
    assert _same_weights(resumed.student, reference)
    assert load_training_state(tmp_path / "checkpoint.pt")["epoch"] == FAST.epochs
    assert sorted(p.name for p in folder.iterdir()) == ["fine-tune.pt"]


def test_online_resumes_the_student_and_its_peer_exactly(tmp_path, monkeypatch) -> None:
    """Deep mutual learning stopped mid-run: the peer's weights, optimizer and schedule come back
    with the student's, so both end as in a run that was never stopped."""
    from toydata import FAST, tiny_student, toy_bundle

    from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy
    from edgekd.train import loop as trainer

    toy = toy_bundle()
    options = StrategyOptions(peer="student")

    def job(folder=None, resume=False) -> DistillJob:
        return DistillJob(None, tiny_student(), toy, FAST, "kd", {}, options, None, folder, resume)

    reference = run_strategy("online", job())
    real_loss, calls = trainer._loss, [0]

    def stopping_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 17:  # epoch 2, step 5
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "_loss", stopping_loss)
    folder = tmp_path / "stages"
    with pytest.raises(Interrupted, match="mutual: stopped by SIGINT at epoch 2"):
        run_strategy("online", job(folder))
    monkeypatch.setattr(trainer, "_loss", real_loss)
    resumed = run_strategy("online", job(folder, resume=True))
    assert _same_weights(resumed.student, reference.student)
    assert resumed.info["peer_val_accuracy"] == reference.info["peer_val_accuracy"]
    assert resumed.history.to_dict() == reference.history.to_dict()


@pytest.fixture
def step_clock(monkeypatch):
    """A fake clock for the checkpoint interval: one second passes per reading."""
    from edgekd.train.resume import CheckpointClock

    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(CheckpointClock, "clock", staticmethod(clock))
    return now


def test_checkpoints_on_a_clock_are_step_level_and_resume_exactly(
    uninterrupted, tmp_path, step_clock
) -> None:
    """Saved every 4 clock seconds, mid-epoch; killed (a crash) in epoch 3; resumed: the same
    weights and history as the run that saved after every epoch and was never stopped."""
    ckpt = tmp_path / "checkpoint.pt"
    saved = []

    def crash(n, _out):
        if ckpt.is_file():
            state = load_training_state(ckpt)
            saved.append((state["epoch"], state["step"]))
        if n == 2 * STEPS_PER_EPOCH + 4:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        _train(ckpt, on_step=crash, every=4.0)
    assert any(step > 0 for _, step in saved)  # some were written mid-epoch
    state = load_training_state(ckpt)
    assert state["epoch"] == 2 and state["order"] is not None and state["step"] < 4
    student, history = _train(ckpt, resume=True, every=4.0)
    reference, ref_history = uninterrupted
    assert _same_weights(student, reference)
    assert history.to_dict() == ref_history.to_dict()


def test_a_long_interval_still_saves_at_a_signal_and_at_the_end(uninterrupted, tmp_path) -> None:
    ckpt = tmp_path / "checkpoint.pt"

    def crash(n, _out):
        if n == 2 * STEPS_PER_EPOCH + 1:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        _train(ckpt, on_step=crash, every=3600.0)
    assert not ckpt.exists()  # nothing due yet: a kill loses at most the interval

    def send(n, _out):
        if n == STEPS_PER_EPOCH + 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted):
        _train(ckpt, on_step=send, every=3600.0)
    assert (load_training_state(ckpt)["epoch"], load_training_state(ckpt)["step"]) == (1, 2)
    student, _ = _train(ckpt, resume=True, every=3600.0)  # another interval is fine too
    assert _same_weights(student, uninterrupted[0])
    assert load_training_state(ckpt)["epoch"] == 3  # written at the end


# --- the run folder's lock, a full disk, fixed bytes ---------------------------------------------


def test_a_locked_run_folder_refuses_a_second_writer_and_moves_without_its_lock(tmp_path) -> None:
    """flock is per open file: a second run_dir in this very process is a second writer too."""
    from edgekd.errors import BadInputError
    from edgekd.rundir import LOCK_FILE, lock_holder, run_dir

    out = tmp_path / "run"
    with run_dir(out) as work:
        (work / "config.json").write_text("{}")
        assert lock_holder(work) == os.getpid()
        in_use = f"in use by another edgekd run \\(PID {os.getpid()}\\)"
        for kwargs in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(BadInputError, match=in_use), run_dir(out, **kwargs):
                pass
        assert (work / "config.json").is_file()  # the refused writers touched nothing
    assert (out / "config.json").is_file() and not (out / LOCK_FILE).exists()
    assert lock_holder(out) is None and not work.exists()


def test_a_run_stopped_before_its_config_leaves_nothing_after_it_keeps_the_folder(tmp_path) -> None:
    from edgekd.rundir import lock_holder, run_dir

    with pytest.raises(KeyboardInterrupt), run_dir(tmp_path / "a"):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), run_dir(tmp_path / "b") as work:
        (work / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert (work / "config.json").is_file() and lock_holder(work) is None


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch) -> None:
    import errno

    import edgekd.fileio as fileio
    from edgekd.errors import DiskFullError
    from edgekd.rundir import run_dir

    path = tmp_path / "checkpoint.pt"
    fileio.write_bytes_atomic(path, b"epoch 1")
    with pytest.raises(DiskFullError, match="^disk full: cannot write .*checkpoint.pt"):
        with fileio.atomic_path(path) as tmp:
            tmp.write_bytes(b"epoch 2, half")
            raise OSError(errno.ENOSPC, "No space left on device")
    # torch's zip writer hides the errno ("file write failed"): the free space tells
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError, match="previous file is kept"):
        with fileio.atomic_path(path) as tmp:
            raise RuntimeError("[enforce fail at inline_container.cc] file write failed")
    assert path.read_bytes() == b"epoch 1" and [p.name for p in tmp_path.iterdir()] == [path.name]
    # in a run with a checkpoint: the folder is kept, and the line says how to go on
    out = tmp_path / "run"
    hint = f"free some space, then resume with: .*--resume {out}$"
    with pytest.raises(DiskFullError, match=hint):
        with run_dir(out) as work:
            (work / "config.json").write_text("{}")
            fileio.write_bytes_atomic(work / "checkpoint.pt", b"epoch 1")
            with fileio.atomic_path(work / "checkpoint.pt"):
                raise RuntimeError("file write failed")
    assert (work / "checkpoint.pt").read_bytes() == b"epoch 1"


def test_identical_weights_give_identical_safetensors_bytes(tmp_path) -> None:
    """safetensors writes its metadata in hash order; save_model sorts the header."""
    from edgekd.students.checkpoint import load_model, save_model

    torch.manual_seed(0)
    student = build_student("mlp", (6,), 2, width=0.25, depth=1)
    files = [save_model(student, tmp_path / f"s{i}.safetensors", {"run": "a"}) for i in range(8)]
    assert len({f.read_bytes() for f in files}) == 1
    assert _same_weights(load_model(files[0]), student)
