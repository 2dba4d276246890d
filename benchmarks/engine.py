"""The training engine's overhead: edgekd's loop against a hand-written KD loop, and the
checkpoint's cost per epoch (evidence, not a test).

Side by side in one process, interleaved run by run so that a change in the machine's load hits
both alike: training samples/s of ``edgekd.train.loop.train_student`` (Hinton KD, alpha 0.1,
T 4, cached teacher logits, AdamW + one-cycle, no validation, no checkpoint) against a minimal
hand-written PyTorch loop doing the same (same model and initial weights, data, batch, schedule,
thread count), at 1 thread and at the usable cores (``edgekd.hostinfo.usable_cores``), with the
ratio. The teacher's logits are fixed random numbers: what they are does not change the cost.

Then the checkpoint: seconds per epoch of ``train_student`` saving after every epoch
(``checkpoint_every=0``, the behaviour before issue 15) against the default interval (30 s: on a
short run, once at the end), at 1 thread; and what the thread trial costs
(``edgekd.train.threads``) when it runs.

    PYTHONPATH=. python benchmarks/engine.py                       # MNIST-1D, cnn1d 2.0 x 3
    PYTHONPATH=. python benchmarks/engine.py --data digits --student cnn:2:2 --repeats 5

The load it ran under is printed first (``os.getloadavg``); the numbers are in README.md
("Training speed").
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgekd.data import Split, load_data  # noqa: E402
from edgekd.distill.methods import make_method  # noqa: E402
from edgekd.hostinfo import usable_cores  # noqa: E402
from edgekd.students import build_student, count_params  # noqa: E402
from edgekd.train import resume, threads  # noqa: E402
from edgekd.train.loop import TrainConfig, cached_teacher, train_student  # noqa: E402

T, ALPHA = 4.0, 0.1


def hand_loop(model, train: Split, logits: torch.Tensor, config: TrainConfig) -> None:
    """The minimal KD loop a person would write: shuffle, forward, KD + CE, AdamW, one-cycle."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(train.n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps
    )
    x = torch.from_numpy(np.ascontiguousarray(next(iter(train.inputs.values()))))
    y = torch.from_numpy(train.y)
    model.train()
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(train.n))
        for i in range(steps):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            out = model(x[index])
            soft = F.kl_div(
                F.log_softmax(out / T, -1), F.softmax(logits[index] / T, -1), reduction="batchmean"
            )
            loss = ALPHA * F.cross_entropy(out, y[index]) + (1 - ALPHA) * soft * T * T
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def edgekd_loop(model, train, logits, config, checkpoint=None) -> None:
    method = make_method("kd", temperature=T)
    signal = cached_teacher(logits.numpy())
    train_student(model, train, None, config, method, signal, checkpoint=checkpoint)


def timed(fn, spec, train, logits, config, seed_weights, **kwargs) -> float:
    torch.manual_seed(seed_weights)
    model = build_student(*spec)
    start = time.perf_counter()
    fn(model, train, logits, config, **kwargs)
    return time.perf_counter() - start


def checkpoint_cost(spec, train, logits, config: TrainConfig, args) -> None:
    """Seconds per epoch with a checkpoint after every epoch and with the default interval, and
    the seconds spent inside the saves themselves (timed directly: steadier than a difference
    of two noisy wall times)."""
    epochs = args.checkpoint_epochs
    print(f"\ncheckpoint cost, 1 thread, {epochs}-epoch runs (per epoch, median):")
    threads.request_train_threads(1)
    torch.set_num_threads(1)
    rows = {"every epoch (checkpoint_every=0)": 0.0, "default (checkpoint_every=30)": 30.0}
    wall: dict[str, list[float]] = {k: [] for k in rows}
    saving: dict[str, list[float]] = {k: [] for k in rows}
    real_save = resume.save_training_state
    spent = [0.0]

    def timed_save(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_save(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    resume.save_training_state = timed_save
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for name, every in rows.items():
                    cfg = TrainConfig(**{**config.settings(), "epochs": epochs})
                    cfg = dataclasses.replace(cfg, checkpoint_every=every)
                    path = Path(tmp) / "checkpoint.pt"
                    path.unlink(missing_ok=True)
                    spent[0] = 0.0
                    seconds = timed(edgekd_loop, spec, train, logits, cfg, 0, checkpoint=path)
                    wall[name].append(seconds / epochs)
                    saving[name].append(spent[0] / epochs)
    finally:
        resume.save_training_state = real_save
    print(f"  {'':<34} {'wall':>7} {'in saves':>9}")
    for name in rows:
        w, s = statistics.median(wall[name]), statistics.median(saving[name])
        print(f"  {name:<34} {w:>6.3f}s {s:>8.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist1d")
    parser.add_argument("--student", default="cnn1d:2.0:3", help="FAMILY:WIDTH:DEPTH")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint-epochs", type=int, default=5)
    args = parser.parse_args()

    load = os.getloadavg()
    cores = usable_cores()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; usable cores {cores}")
    data = load_data(args.data, seed=0)
    train = data.train
    family, width, depth = args.student.split(":")
    shape = data.sample_shapes[data.input_names[0]]
    spec = (family, shape, data.num_classes, float(width), int(depth))
    logits = torch.from_numpy(
        np.random.default_rng(1).normal(size=(train.n, data.num_classes)).astype(np.float32)
    )
    config = TrainConfig(epochs=args.epochs, lr=1e-2, batch_size=args.batch_size, alpha=ALPHA)
    params = count_params(build_student(*spec))
    samples = train.n * args.epochs
    print(
        f"{args.data}: {train.n} training samples, {family} width {width} depth {depth} "
        f"({params:,} parameters), batch {args.batch_size}, {args.epochs} epochs per run, "
        f"median of {args.repeats} interleaved runs\n"
    )
    print(f"{'threads':>7}  {'edgekd samples/s':>16}  {'hand loop samples/s':>19}  {'ratio':>5}")
    for n in sorted({1, cores}):
        threads.request_train_threads(n)
        torch.set_num_threads(n)
        warm = TrainConfig(**{**config.settings(), "epochs": 1})  # first-call costs, untimed
        timed(edgekd_loop, spec, train, logits, warm, 0)
        timed(hand_loop, spec, train, logits, warm, 0)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(timed(edgekd_loop, spec, train, logits, config, 0))
            theirs.append(timed(hand_loop, spec, train, logits, config, 0))
        a, b = samples / statistics.median(ours), samples / statistics.median(theirs)
        print(f"{n:>7}  {a:>16.0f}  {b:>19.0f}  {a / b:>5.2f}")

    checkpoint_cost(spec, train, logits, config, args)

    threads.request_train_threads(None)
    for name in (threads.ENV, "OMP_NUM_THREADS"):
        os.environ.pop(name, None)
    threads.forget_measurement()  # measure now, as the first training of a process does
    torch.manual_seed(0)
    start = time.perf_counter()
    train_student(build_student(*spec), train, None, TrainConfig(epochs=1, alpha=1.0))
    choice = threads.current_choice()
    print(
        f"\nthread trial before training: {choice.trial_seconds:.3f} s "
        f"(one 1-epoch training, {time.perf_counter() - start:.2f} s in all); {choice.why}"
    )


if __name__ == "__main__":
    main()
