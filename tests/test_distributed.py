"""Distributed distillation on CPU with gloo: 2 workers give the weights of 1 with the same global
batch; rank 0 alone writes; a killed worker ends the run in bounded time with an error naming its
rank; torchrun restarts resume from the last checkpoint; a run stopped on 2 workers resumes on 1.

The workers run ``tests/dist_worker.py`` under edgekd's launcher (torchrun's agent, c10d rendezvous
on a free loopback port, gloo on the loopback interface).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.train.distributed import (
    DistContext,
    WorkerEnv,
    choose_backend,
    resumes_after_restart,
    run_stamp,
    worker_env,
)
from edgekd.train.launch import _failure, worker_args
from edgekd.train.resume import load_training_state

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

TESTS = Path(__file__).parent
ROOT = TESTS.parent
LAUNCH = """
import sys
from edgekd.train.launch import launch_workers
from edgekd.errors import EdgekdError
try:
    launch_workers(int(sys.argv[1]), sys.argv[3:], int(sys.argv[2]), module="dist_worker")
except EdgekdError as exc:
    print(f"edgekd: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""
BOUND_S = 60  # a killed worker must end the run well within this


def launch(out: Path, *args: str, nproc: int = 2, max_restarts: int = 0, wait: bool = True):
    """``dist_worker OUT ARGS`` in ``nproc`` workers; a fresh teacher-output cache per run."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "EDGEKD_CACHE": str(out / "cache"),
        "EDGEKD_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
        "EDGEKD_TEST_FAULT_STAMP": str(out / "fault-at"),
    }
    cmd = [sys.executable, "-c", LAUNCH, str(nproc), str(max_restarts), str(out), *args]
    if not wait:  # in a session of its own, like a command typed in a terminal
        return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, the same global batch."""
    from dist_worker import distil

    return distil(tmp_path_factory.mktemp("one"), None)


def assert_same_students(got: dict, want: dict, names=("kd", "fitnet", "adapter", "online")):
    for name in names:
        assert got[name].keys() == want[name].keys()
        for key in want[name]:
            torch.testing.assert_close(got[name][key], want[name][key], atol=1e-5, rtol=0)


def test_two_workers_give_the_weights_of_one_and_only_rank_0_writes(reference, tmp_path):
    proc = launch(tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "result.pt", weights_only=True)
    # The teacher's outputs, computed half by each worker and all-gathered, in the right order.
    torch.testing.assert_close(got["logits"], reference["logits"], atol=1e-6, rtol=0)
    assert_same_students(got, reference)  # kd, fitnet (adapter under DDP), online (peer too)
    np.testing.assert_allclose(got["history"]["loss"], reference["history"]["loss"], rtol=1e-5)
    rank0 = json.loads((tmp_path / "writes-rank0.json").read_text())
    rank1 = json.loads((tmp_path / "writes-rank1.json").read_text())
    assert rank1 == []
    assert rank0.count(str(tmp_path / "checkpoint.pt")) == 3  # one per epoch
    assert any(Path(p).name.startswith("outputs-") for p in rank0)  # the teacher-output cache


def test_a_killed_worker_ends_the_run_in_bounded_time_naming_its_rank(tmp_path):
    proc = launch(tmp_path, "--kill-at", "2:2")
    # From the kill to the end of the whole run (start-up and training before it excluded, so a
    # loaded machine does not count against the bound).
    elapsed = time.time() - float((tmp_path / "fault-at").read_text())
    assert elapsed < BOUND_S, f"the run took {elapsed:.0f} s to end after the kill"
    assert proc.returncode == 7, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    # The killed rank is named even when the peer's collateral abort ties with it (root_cause).
    assert last.startswith("edgekd: error: worker rank 1 "), last
    assert "SIGKILL" in last, last
    # The last complete checkpoint (end of epoch 1) is whole; nothing half-written beside it.
    assert load_training_state(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt")]


def test_torchrun_restart_resumes_from_the_last_checkpoint(reference, tmp_path):
    proc = launch(tmp_path, "--kill-at", "2:2", max_restarts=1)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "result.pt", weights_only=True)
    assert got["history"]["loss"][0] == pytest.approx(reference["history"]["loss"][0], rel=1e-5)
    assert_same_students(got, reference)


def test_a_signal_to_one_worker_stops_all_and_the_run_resumes_on_one(reference, tmp_path):
    from dist_worker import distil

    proc = launch(tmp_path, "--term-at", "2:3")
    assert proc.returncode == 130, proc.stderr
    state = load_training_state(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 3)  # both stopped after step 3 of epoch 2
    resumed = distil(tmp_path, None, resume=True)  # 2 workers -> 1
    assert_same_students(resumed, reference, names=("kd",))
    np.testing.assert_allclose(resumed["history"]["loss"], reference["history"]["loss"], rtol=1e-5)


def test_ctrl_c_at_the_launcher_stops_every_worker_at_the_same_step(tmp_path):
    proc = launch(tmp_path, "--step-sleep", "0.3", wait=False)
    deadline = time.monotonic() + BOUND_S
    while not (tmp_path / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
    _, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 130, err
    stops = [line for line in err.splitlines() if "kd: stopped by SIGINT at epoch" in line]
    assert len(stops) == 2 and stops[0].split(": kd: ")[1] == stops[1].split(": kd: ")[1], stops
    state = load_training_state(tmp_path / "checkpoint.pt")  # rank 0 wrote it at that step
    assert state["epoch"] >= 1
    assert f"epoch {state['epoch'] + 1}, step {state['step'] + 1} of" in stops[0]


# -- no processes --------------------------------------------------------------------------------
def test_root_cause_prefers_the_kill_over_the_collateral_abort_on_a_tie():
    from types import SimpleNamespace as Failure

    from edgekd.train.launch import root_cause

    abort, kill, error = (-int(signal.SIGABRT), -int(signal.SIGKILL), 1)
    # Same second: rank 1's SIGKILL is the cause, rank 0's SIGABRT its consequence.
    tie = {0: Failure(exitcode=abort, timestamp=100), 1: Failure(exitcode=kill, timestamp=100)}
    assert root_cause(tie)[0] == 1
    # An exit code (a Python error) before a SIGTERM from the agent; then the lowest rank.
    assert root_cause({0: Failure(exitcode=-15, timestamp=5), 2: Failure(exitcode=error,
                       timestamp=5)})[0] == 2  # fmt: skip
    same = {3: Failure(exitcode=error, timestamp=5), 1: Failure(exitcode=error, timestamp=5)}
    assert root_cause(same)[0] == 1
    # The earlier failure wins whatever its kind, as in torchrun.
    assert root_cause({0: Failure(exitcode=abort, timestamp=4), 1: Failure(exitcode=kill,
                       timestamp=5)})[0] == 0  # fmt: skip


def test_shards_cover_the_batch_and_weight_each_worker_by_its_rows():
    def ctx(rank: int, world: int) -> DistContext:
        return DistContext(WorkerEnv(rank, world, rank, 0, ""), "gloo", torch.device("cpu"), 1.0)

    index = np.arange(10, 21)  # 11 rows over 3 workers: 4 + 4 + 3
    parts = [(c.shard(index), c._share) for c in (ctx(r, 3) for r in range(3))]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), index)
    assert [s for _, s in parts] == [4 / 11, 4 / 11, 3 / 11]
    lonely = ctx(2, 3)  # 2 rows, 3 workers: the third runs one row with weight 0
    assert len(lonely.shard(np.arange(2))) == 1 and lonely._share == 0.0 and lonely._own == 0


def test_backend_follows_the_device_and_torchrun_variables_are_read():
    assert choose_backend("cpu") == "gloo" and choose_backend("cuda:1") == "nccl"
    assert worker_env({}) is None
    env = worker_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                      "TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_RUN_ID": "x"})  # fmt: skip
    assert env == WorkerEnv(3, 4, 1, 2, "x")


def test_a_restarted_worker_resumes_the_run_it_finds(monkeypatch, tmp_path):
    from edgekd.pipeline import default_out_dir

    partial = tmp_path / "run.partial"
    partial.mkdir()
    assert not resumes_after_restart(partial, None)  # not under torchrun
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RESTART_COUNT": "1",
                        "TORCHELASTIC_RUN_ID": "20260101-120000"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert not resumes_after_restart(partial, None)  # restarted before config.json was written
    (partial / "config.json").write_text("{}")
    assert resumes_after_restart(partial, None)
    # The default folder is named by torchrun's run id: the same on every worker and attempt.
    assert run_stamp() == "20260101-120000"
    assert default_out_dir("mobile") == Path("runs") / "mobile-20260101-120000"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert run_stamp() is None


def test_launcher_options_do_not_reach_the_workers():
    argv = ["--debug", "distill", "--nproc", "2", "--epochs", "3", "--max-restarts=1", "--json"]
    assert worker_args(argv) == ["--debug", "distill", "--epochs", "3", "--json"]


def test_failure_messages_name_the_rank_and_keep_edgekd_exit_codes():
    def failure(code: int, signal_name: str = ""):
        return SimpleNamespace(exitcode=code, pid=42, signal_name=lambda: signal_name)

    killed = _failure(1, failure(-9, "SIGKILL"), 2, 0)
    assert killed.exit_code == 7 and str(killed).startswith("worker rank 1 (pid 42) was killed by")
    diverged = _failure(0, failure(5), 1, 1)
    assert diverged.exit_code == 5 and "after 1 restart(s)" in str(diverged)
    assert _failure(1, failure(1), 1, 0).exit_code == 7  # an internal error in a worker
    assert _failure(0, failure(130), 2, 0).exit_code == 130


def test_cli_refuses_nproc_under_torchrun_and_from_python(monkeypatch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["distill", "--nproc", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "re-runs the command line" in result.output
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["distill", "--nproc", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "edgekd: error: rank 1: --nproc/--max-restarts start torchrun" in result.output


def test_resume_accepts_another_worker_count(tmp_path):
    result = CliRunner().invoke(app, ["distill", "--resume", str(tmp_path / "r"), "--nproc", "2"])
    assert result.exit_code == 2 and "no interrupted run there" in result.output


def test_cli_nproc_runs_the_whole_pipeline_with_rank_0_writing(tmp_path):
    """``edgekd distill --nproc 2`` end to end on a small vector data set."""
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    x = rng.normal(0.0, 1.0, (150, 6)).astype(np.float32)
    x[np.arange(150), y] += 3.0
    np.savez(tmp_path / "small.npz", x=x, y=y)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_CACHE": str(tmp_path / "cache"),
           "EDGEKD_NO_PROGRESS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "edgekd", "distill", "--data", str(tmp_path / "small.npz"),
           "--epochs", "2", "--teacher-epochs", "2", "--bench-seconds", "0.02",
           "--bench-processes", "1", "--out", str(out), "--nproc", "2", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # printed once: by rank 0
    assert len(report["training"]["history"]["loss"]) == 2
    assert (out / "report.json").is_file() and not (out / "checkpoint.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run", "small.npz"]
