"""A torchrun worker for tests/test_distributed.py: distils the toy student through the trainer,
as ``edgekd distill`` does, on however many workers torchrun started (or in one process).

    python -m dist_worker OUT [--kill-at E:S | --term-at E:S | --stop-at E:S] [--timeout S]
                              [--step-sleep S]

Trains three students: ``kd`` on the frozen teacher's sharded, cached outputs (with a checkpoint
in OUT, resumed after a torchrun restart), ``fitnet`` (trainable adapter, live teacher taps), and
``online`` (deep mutual learning with a second student: both models under DDP). Rank 0 saves
OUT/result.pt; every rank lists the files it wrote in OUT/writes-rank{R}.json.
``--kill-at``/``--term-at``/``--stop-at`` make rank 1 SIGKILL/SIGTERM/SIGSTOP itself at that
(1-based) epoch and step, on the first attempt only; ``--step-sleep`` slows every step of the kd
student down (time to send a signal from outside).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from toydata import toy_bundle

from edgekd.distill.methods import make_method
from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy
from edgekd.distill.strategies._common import frozen_teacher_signal
from edgekd.errors import EdgekdError
from edgekd.students import build_student
from edgekd.teacher import outputs as offline
from edgekd.teacher.outputs import teacher_outputs
from edgekd.train import resume as checkpointing
from edgekd.train.distributed import (
    DistContext,
    distributed_session,
    exit_worker,
    worker_env,
)
from edgekd.train.loop import TrainConfig, cached_teacher, train_student

# 96 rows in batches of 21: 2 workers split every batch unevenly (11 + 10, the last 6 + 6).
CONFIG = TrainConfig(epochs=3, lr=3e-2, batch_size=21)
STEPS = 5  # per epoch


def toy_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student("mlp", (1, 8, 8), 3, width=0.5, depth=1).eval()


def toy_student(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_student("mlp", (1, 8, 8), 3, width=0.25, depth=1)


def distil(
    out: Path, dist: DistContext | None, resume: bool = False, fault=None, step_sleep: float = 0.0
) -> dict:
    """Both students, trained as the tests compare them; ``fault(step)`` runs before each step."""
    data, teacher = toy_bundle(), toy_teacher()
    logits = teacher_outputs(teacher, data.train, key="dist-test", dist=dist)
    kd, signal_ = toy_student(), cached_teacher(logits)
    method = make_method("kd")
    method.setup(kd, teacher, {"x": data.train.inputs["x"][:8]})
    steps = [0]

    def counted(index, batch):
        steps[0] += 1
        if fault is not None:
            fault(steps[0])
        time.sleep(step_sleep)
        return signal_(index, batch)

    history = train_student(
        kd, data.train, data.val, CONFIG, method, counted, "kd",
        checkpoint=out / "checkpoint.pt", resume=resume, dist=dist,
    )  # fmt: skip
    fitnet = toy_student()
    adapter = make_method("fitnet")
    adapter.setup(fitnet, teacher, {"x": data.train.inputs["x"][:8]})
    live, _ = frozen_teacher_signal(teacher, adapter, data.train, dist=dist)
    train_student(fitnet, data.train, data.val, CONFIG, adapter, live, "fitnet", dist=dist)
    options = StrategyOptions(peer="student")
    online = run_strategy("online", DistillJob(teacher, toy_student(), data, CONFIG, "kd", {},
                                               options, dist))  # fmt: skip
    return {
        "online": online.student.state_dict(),
        "kd": kd.state_dict(),
        "fitnet": fitnet.state_dict(),
        "adapter": adapter.state_dict(),
        "history": history.to_dict(),
        "logits": torch.from_numpy(logits),
    }


def _fault(kind: str | None, at: str | None, rank: int):
    """Rank 1 signals itself before step ``E:S`` of the first attempt."""
    env = worker_env()
    if kind is None or rank != 1 or (env is not None and env.restart_count > 0):
        return None
    epoch, step = (int(v) for v in at.split(":"))
    target = (epoch - 1) * STEPS + step
    signum = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}[kind]

    def fault(n: int) -> None:
        if n == target:
            stamp = os.environ.get("EDGEKD_TEST_FAULT_STAMP")
            if stamp:  # when the fault happened, so the test times detection, not start-up
                Path(stamp).write_text(repr(time.time()))
            os.kill(os.getpid(), signum)

    return fault


def _record_writes(log: list[str]) -> None:
    """Log every file the trainer and the teacher-output cache write in this process."""
    for module in (checkpointing, offline):
        original = module.atomic_path

        def spy(path, *args, _original=original, **kwargs):
            log.append(str(path))
            return _original(path, *args, **kwargs)

        module.atomic_path = spy


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    opts = dict(zip(argv[1::2], argv[2::2], strict=True))
    torch.set_num_threads(1)
    writes: list[str] = []
    _record_writes(writes)
    rank = int(os.environ.get("RANK", 0))
    code = 0
    kind = next((k for k in ("kill", "term", "stop") if f"--{k}-at" in opts), None)
    at = opts.get(f"--{kind}-at")
    try:
        with distributed_session(float(opts.get("--timeout", 30))) as dist:
            env = worker_env()
            restarted = env is not None and env.restart_count > 0
            found = (out / "checkpoint.pt").is_file
            resume = restarted and (found() if dist is None else dist.from_main(found))
            sleep = float(opts.get("--step-sleep", 0))
            result = distil(out, dist, resume, _fault(kind, at, rank), sleep)
            if dist is None or dist.is_main:
                torch.save(result, out / "result.pt")
    except EdgekdError as exc:
        print(f"edgekd: error: rank {rank}: {exc}", file=sys.stderr)
        code = exc.exit_code
    finally:
        (out / f"writes-rank{rank}.json").write_text(json.dumps(writes))
    if code:  # as the CLI does (edgekd.cli._fail): this code, not an abort at shutdown
        if torch.distributed.is_initialized():
            exit_worker(code)
        sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
