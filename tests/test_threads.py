"""Training threads that fit the machine: usable cores (affinity, cgroup quota), the measured
choice between 1 and N threads, overrides, and a trial that changes nothing training computes."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from edgekd import hostinfo
from edgekd.data import Split
from edgekd.errors import BadInputError
from edgekd.train import threads
from edgekd.train.loop import TrainConfig, _trial_step, train_student


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch):
    """No override from the environment, nothing measured yet; torch's threads put back."""
    for name in (threads.ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_requested", None)
    monkeypatch.setattr(threads, "_measured", None)
    monkeypatch.setattr(threads, "_current", None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cgroup(tmp_path, files: dict[str, str], own: str = "0::/\n"):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "self").write_text(own)
    return root, tmp_path / "self"


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(n)), raising=False)


def test_usable_cores_follow_the_affinity_not_the_cpu_count(monkeypatch, tmp_path) -> None:
    _cores(monkeypatch, 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    root, own = _cgroup(tmp_path, {})
    assert hostinfo.usable_cores(root, own) == 3


@pytest.mark.parametrize(
    ("files", "own", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1),  # 1.5 CPUs: 1 thread
        ({"cpu.max": "max 100000\n"}, "0::/\n", 8),  # no quota
        ({"cpu.max": "50000 100000\n"}, "0::/\n", 1),  # half a CPU: still at least 1
        # nested v2 groups: every quota on the path applies
        ({"a/b/cpu.max": "max 100000", "a/cpu.max": "300000 100000"}, "0::/a/b\n", 3),
        # cgroup v1: the cpu controller's own mount
        (
            {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "4:cpu,cpuacct:/\n0::/\n",
            2,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n", 8),
    ],
    ids=["v2-fraction", "v2-max", "v2-half", "v2-nested", "v1-quota", "v1-none"],
)
def test_usable_cores_respect_the_cgroup_quota(monkeypatch, tmp_path, files, own, expected):
    _cores(monkeypatch, 8)
    root, self_cgroup = _cgroup(tmp_path, files, own)
    assert hostinfo.usable_cores(root, self_cgroup) == expected


def test_the_affinity_caps_a_generous_quota(monkeypatch, tmp_path) -> None:
    _cores(monkeypatch, 2)
    root, own = _cgroup(tmp_path, {"cpu.max": "800000 100000\n"})
    assert hostinfo.usable_cores(root, own) == 2


def _trial(fast: int):
    """A fake trial step that is quick at ``fast`` threads and slow at any other count."""

    def make():
        def step():
            if torch.get_num_threads() != fast:
                time.sleep(0.003)

        return step

    return make


@pytest.mark.parametrize("fast", [1, 2])
def test_the_faster_count_wins_and_never_exceeds_the_usable_cores(monkeypatch, fast) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    choice = threads.fit_training_threads(_trial(fast))
    assert choice.source == "measured" and choice.intra_op == fast <= choice.usable_cores == 2
    assert torch.get_num_threads() == fast
    assert set(choice.trial_ms_per_step) == {1, 2}
    assert f"{fast} thread" in choice.why
    again = threads.fit_training_threads(_trial(3 - fast))  # measured once per process
    assert again.intra_op == fast and threads.current_choice() == again


def test_one_usable_core_measures_nothing(monkeypatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    choice = threads.fit_training_threads(lambda: pytest.fail("no trial on one core"))
    assert (choice.intra_op, choice.source, choice.trial_ms_per_step) == (1, "one usable core", {})


def test_overrides_win_in_order_and_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    never = lambda: pytest.fail("an override is not measured")  # noqa: E731
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.fit_training_threads(never).source == "OMP_NUM_THREADS"
    monkeypatch.setenv(threads.ENV, "1")
    choice = threads.fit_training_threads(never)
    assert (choice.source, choice.intra_op, torch.get_num_threads()) == (threads.ENV, 1, 1)
    threads.request_train_threads(16)
    choice = threads.fit_training_threads(never)
    assert (choice.source, choice.intra_op) == ("train_threads", 2)
    assert "capped at 2 usable cores" in choice.why
    with pytest.raises(BadInputError):
        threads.request_train_threads(0)
    threads.request_train_threads(None)
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(BadInputError, match="EDGEKD_TRAIN_THREADS"):
        threads.fit_training_threads(never)


def test_the_inter_op_count_recorded_is_torchs(monkeypatch) -> None:
    threads.request_train_threads(1)
    choice = threads.fit_training_threads()
    assert choice.inter_op == torch.get_num_interop_threads()
    assert choice.to_dict()["inter_op_threads"] == choice.inter_op


class _Noisy(nn.Module):
    """Dropout (uses torch's RNG) and BatchNorm (buffers that move in training mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.3))
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.net(x))


def _data(n: int = 96) -> Split:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return Split({"x": x}, (x[:, 0] > 0).astype(np.int64))


def test_the_trial_leaves_weights_and_random_state_untouched(monkeypatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    torch.manual_seed(3)
    model = _Noisy()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    trial = lambda: _trial_step(model, _data(), TrainConfig(batch_size=16), augment=None)  # noqa: E731
    assert threads.fit_training_threads(trial).trial_ms_per_step  # it ran
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # the copy's dropout drew from it: put back


def test_a_measured_run_trains_exactly_as_one_told_the_same_count(monkeypatch) -> None:
    """The trial before training changes nothing it computes: same seed, same weights."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=16, seed=0)

    def run() -> dict:
        torch.manual_seed(0)
        model = _Noisy()
        train_student(model, _data(), None, config)
        return model.state_dict()

    measured = run()
    choice = threads.current_choice()
    assert choice.source == "measured" and choice.trial_seconds > 0
    threads.request_train_threads(choice.intra_op)
    told = run()
    assert all(torch.equal(measured[k], told[k]) for k in measured)


def test_a_resumed_training_keeps_the_thread_count_it_started_with(tmp_path, monkeypatch) -> None:
    """Float reductions split by thread count: the resumed run goes on with the checkpoint's."""
    from edgekd.errors import Interrupted
    from edgekd.train import loop

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    ckpt = tmp_path / "checkpoint.pt"
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=16)
    real_step, calls = loop._step, [0]

    def stopping_step(*args):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), 2)  # SIGINT: checkpoint at the next step boundary
        return real_step(*args)

    monkeypatch.setattr(loop, "_step", stopping_step)
    threads.request_train_threads(1)
    with pytest.raises(Interrupted):
        train_student(_Noisy(), _data(), None, config, checkpoint=ckpt)
    monkeypatch.setattr(loop, "_step", real_step)
    threads.request_train_threads(2)
    train_student(_Noisy(), _data(), None, config, checkpoint=ckpt, resume=True)
    choice = threads.current_choice()
    assert (choice.source, choice.intra_op, torch.get_num_threads()) == ("resumed", 1, 1)
    assert "not 2 (train_threads)" in choice.why
